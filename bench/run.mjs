// The whole suite: micro (mitata, one process per Node version), HTTP (a server process
// per configuration, autocannon in this process, three interleaved rounds, medians) and
// memory. Every scenario checks every contender's answers before it is timed; any wrong
// answer or failed request stops the run with a non-zero exit. Speed never fails it.
//
//   node bench/run.mjs            full run: writes bench/RESULTS.md, bench/chart.svg and
//                                 the targets table in bench/README.md (~13 minutes)
//   node bench/run.mjs --quick    a few iterations of everything (~30 s); writes only
//                                 under bench/.results/
//   --only micro,http,memory      run some sections
//   --routes ping                 only these HTTP routes (ping, page)
//   --rounds N                    HTTP rounds (default 3)
//   --baseline LABEL=ENTRY        also time another build of this package (its ESM entry,
//                                 such as an older dist/index.js) in the micro's user
//                                 shapes; LABEL names it in RESULTS.md
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { chartSvg } from './lib/chart.mjs';
import { get, load, startServer } from './lib/http.mjs';
import { distinctRows, renderPage } from './lib/page.mjs';
import { REPOS, USERS } from './lib/store.mjs';
import { benchNodes, flag, median, option } from './lib/util.mjs';
import { writeReport } from './report.mjs';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const quick = flag('--quick');
const sections = (option('--only') ?? 'micro,http,memory').split(',');
const routes = (option('--routes') ?? 'ping,page').split(',');
const [baselineLabel, baselineEntry] = (() => {
  const given = option('--baseline');
  if (given === undefined) return [];
  const i = given.indexOf('=');
  return i === -1 ? [given, given] : [given.slice(0, i), given.slice(i + 1)];
})();
const started = Date.now();
mkdirSync(here('.results'), { recursive: true });

// --- Node versions: the one running this script and the bench's own Node 24, if any.
const nodes = benchNodes();
if (nodes.length === 1) {
  console.log('Node 24: bench/node_modules/node is missing or does not run; system Node only');
}
const major = (v) => Number(v.slice(1).split('.')[0]);
const label = (n) => `Node ${n.version}${major(n.version) >= 24 ? ' (AsyncContextFrame)' : ''}`;

const results = {
  date: new Date().toISOString(),
  quick,
  command: quick
    ? 'npm run bench:quick'
    : process.argv.length > 2
      ? `node bench/run.mjs ${process.argv.slice(2).join(' ')}`
      : 'npm run bench',
  baseline: baselineLabel,
  machine: {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    loadavg: os.loadavg().map((l) => l.toFixed(2)),
  },
  nodes: nodes.map(label),
  micro: [],
  http: [],
  memory: [],
};

// --- micro ---------------------------------------------------------------------------
function runChild(bin, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${args.join(' ')} exited with ${code}`)),
    );
  });
}
if (sections.includes('micro')) {
  for (const node of nodes) {
    const file = here(`.results/micro-${node.version}.json`);
    await runChild(node.bin, [
      '--expose-gc',
      here('micro.mjs'),
      '--json',
      file,
      ...(quick ? ['--quick'] : []),
      ...(baselineEntry === undefined ? [] : ['--baseline', baselineEntry]),
    ]);
    const micro = { node: label(node), ...JSON.parse(readFileSync(file, 'utf8')) };
    // Per-request setup once more, each contender alone in a process: in the shared
    // process `als.run` has seen every contender's store type and runs polymorphic, which
    // costs whoever comes after the first (see README, "What limits").
    for (const [slug, name] of [
      ['ours', 'context-cache'],
      ['hand-rolled', 'hand-rolled ALS Map'],
    ]) {
      const alone = here(`.results/micro-setup-${slug}-${node.version}.json`);
      await runChild(node.bin, [
        '--expose-gc',
        here('micro.mjs'),
        '--json',
        alone,
        '--filter',
        '^setup$',
        '--contender',
        name,
        ...(quick ? ['--quick'] : []),
      ]);
      for (const row of JSON.parse(readFileSync(alone, 'utf8')).rows) {
        micro.rows.push({
          ...row,
          scenario: 'setup-alone',
          title: 'per-request setup, each contender alone in its process',
        });
      }
    }
    results.micro.push(micro);
  }
}

// --- HTTP ----------------------------------------------------------------------------
const users = new Map(USERS.map((u) => [u.id, u]));
const repos = new Map(REPOS.map((r) => [r.id, r]));
async function expectedPage(calls) {
  return renderPage(
    calls,
    async (id) => users.get(id),
    async (id) => repos.get(id),
  );
}

/** Ask the server once, alone, and check the body and the queries it cost. */
async function check(server, config) {
  if (config.route === 'ping') {
    const body = await get(`${server.url}/ping`);
    if (body !== 'pong') throw new Error(`${JSON.stringify(config)}: /ping answered ${body}`);
    return;
  }
  const before = JSON.parse(await get(`${server.url}/__stats`)).queries;
  const body = await get(`${server.url}/page`);
  const after = JSON.parse(await get(`${server.url}/__stats`)).queries;
  const want = await expectedPage(config.calls);
  if (body !== want) throw new Error(`${JSON.stringify(config)}: /page answered ${body}`);
  const queries = config.contender === 'none' ? config.calls : distinctRows(config.calls);
  if (after - before !== queries) {
    throw new Error(
      `${JSON.stringify(config)}: a page ran ${after - before} queries, not ${queries}`,
    );
  }
}

function httpConfigs() {
  const list = [];
  const pingNodes = quick ? nodes.slice(0, 1) : nodes;
  for (const node of pingNodes) {
    const fastifyPing = ['none', 'empty-hook', 'context-cache', 'hand-rolled', 'request-context'];
    for (const contender of fastifyPing) {
      list.push({ node, framework: 'fastify', route: 'ping', contender });
    }
    for (const contender of ['none', 'context-cache', 'hand-rolled']) {
      list.push({ node, framework: 'express', route: 'ping', contender });
    }
  }
  const node = nodes[0];
  const pageContenders = ['none', 'context-cache', 'dataloader', 'hand-rolled'];
  for (const calls of quick ? [20] : [1, 5, 20, 40]) {
    for (const contender of pageContenders) {
      list.push({ node, framework: 'fastify', route: 'page', store: 'latency', calls, contender });
    }
  }
  for (const contender of pageContenders) {
    list.push({
      node,
      framework: 'express',
      route: 'page',
      store: 'latency',
      calls: 20,
      contender,
    });
  }
  // PGlite takes seconds to start (WebAssembly): the quick run does Fastify only.
  for (const framework of quick ? ['fastify'] : ['fastify', 'express']) {
    for (const contender of pageContenders) {
      list.push({ node, framework, route: 'page', store: 'pglite', calls: 20, contender });
    }
  }
  return list;
}

if (sections.includes('http')) {
  const configs = httpConfigs().filter((c) => routes.includes(c.route));
  const rounds = quick ? 1 : Number(option('--rounds') ?? 3);
  if (!Number.isInteger(rounds) || rounds < 1)
    throw new TypeError('--rounds takes a positive integer, such as 5');
  results.httpRounds = rounds;
  const runs = configs.map(() => []);
  // The contenders of one setting (Node, framework, route, store, calls) run back to back,
  // in an order rotated each round, so no contender always runs first or right after
  // another: on a shared machine a position in the sequence can be worth a few percent.
  const groups = [];
  for (let i = 0; i < configs.length; i++) {
    const { contender, ...setting } = configs[i];
    const key = JSON.stringify({ ...setting, node: setting.node.version });
    const last = groups.at(-1);
    if (last !== undefined && last.key === key) last.members.push(i);
    else groups.push({ key, members: [i] });
  }
  for (let round = 0; round < rounds; round++) {
    const order = groups.flatMap(({ members }) =>
      members.map((_, j) => members[(j + round) % members.length]),
    );
    for (const i of order) {
      const { node, ...config } = configs[i];
      const server = await startServer(node.bin, config);
      try {
        await check(server, config);
        const url = `${server.url}/${config.route}`;
        if (quick) runs[i].push(await load(url, { amount: 50 }));
        else {
          await load(url, { duration: 1 }); // warm-up: JIT, pools, PGlite's plan cache
          // The server's own CPU time per request: unlike req/s, it does not depend on how
          // much of the machine the load generator got in this round.
          const cpu = async () => JSON.parse(await get(`${server.url}/__cpu`)).cpu;
          const before = await cpu();
          const run = await load(url, { duration: 2 });
          run.cpu = ((await cpu()) - before) / run.requests;
          runs[i].push(run);
        }
      } finally {
        await server.stop();
      }
      const last = runs[i].at(-1);
      console.log(
        `http ${quick ? 'smoke run (50 requests, not a measurement) ' : ''}round ${round + 1}/${rounds} ${label(node)} ${config.framework} /${config.route}` +
          `${config.calls === undefined ? '' : ` ${config.calls} calls ${config.store}`}` +
          ` ${config.contender}: ${last.rps.toFixed(0)} req/s, p99 ${last.p99} ms` +
          `${last.cpu === undefined ? '' : `, server CPU ${last.cpu.toFixed(2)} µs/request`}`,
      );
    }
  }
  results.http = configs.map(({ node, ...config }, i) => ({
    node: label(node),
    ...config,
    rps: median(runs[i].map((r) => r.rps)),
    p99: median(runs[i].map((r) => r.p99)),
    ...(quick ? {} : { cpu: median(runs[i].map((r) => r.cpu)) }),
    rounds: runs[i].map((r) => Math.round(r.rps)),
    ...(quick ? {} : { cpuRounds: runs[i].map((r) => r.cpu) }),
  }));
}

// --- memory --------------------------------------------------------------------------
if (sections.includes('memory')) {
  const requests = quick ? 2_000 : 100_000;
  for (const framework of ['fastify', 'express']) {
    const config = {
      framework,
      contender: 'context-cache',
      route: 'page',
      store: 'latency',
      latency: 0,
      calls: 20,
    };
    const server = await startServer(nodes[0].bin, config, { nodeArgs: ['--expose-gc'] });
    try {
      await check(server, config);
      await load(`${server.url}/page`, { amount: quick ? 500 : 5_000 }); // warm-up
      const start = JSON.parse(await get(`${server.url}/__heap`)).heap;
      const t0 = Date.now();
      await load(`${server.url}/page`, { amount: requests });
      const seconds = (Date.now() - t0) / 1000;
      const end = JSON.parse(await get(`${server.url}/__heap`)).heap;
      // One request that sets the default maxEntries (10,000), then one that sets ten times
      // as many: the cache must hold at most maxEntries and the heap must not grow with it.
      const full = JSON.parse(await get(`${server.url}/fill?n=10000`));
      const over = JSON.parse(await get(`${server.url}/fill?n=100000`));
      if (full.size !== 10_000 || over.size !== 10_000 || over.evictions !== 90_000) {
        throw new Error(`${framework}: maxEntries not honoured: ${JSON.stringify({ full, over })}`);
      }
      const row = {
        node: label(nodes[0]),
        framework,
        requests,
        seconds,
        heapStart: start,
        heapEnd: end,
        growth: end - start,
        perRequest: (end - start) / requests,
        fill10k: full.heap,
        fill100k: over.heap,
        fillSize: over.size,
      };
      results.memory.push(row);
      console.log(
        `memory ${framework}: ${requests} requests in ${seconds.toFixed(1)} s, heap ` +
          `${mb(start)} → ${mb(end)} MB (${row.perRequest.toFixed(2)} B/request); ` +
          `request filling 10k entries: heap ${mb(full.heap)} MB, 100k entries: ${mb(over.heap)} MB, size ${over.size}`,
      );
    } finally {
      await server.stop();
    }
  }
}

function mb(bytes) {
  return (bytes / 2 ** 20).toFixed(2);
}

// --- output --------------------------------------------------------------------------
results.seconds = Math.round((Date.now() - started) / 1000);
const stamp = results.date.replace(/[:.]/g, '-');
writeFileSync(
  here(`.results/${quick ? 'quick' : 'full'}-${stamp}.json`),
  JSON.stringify(results, null, 2),
);
const chart = results.http.some((r) => r.store === 'latency' && r.framework === 'fastify')
  ? await chartSvg(results)
  : undefined;
if (quick) {
  if (chart !== undefined) writeFileSync(here('.results/chart-quick.svg'), chart);
  console.log(
    `\nquick run: a smoke run, every contender checked and run (${results.seconds} s). Its ` +
      'timings come from a few milliseconds per row on a busy machine and say nothing about ' +
      'speed (a row can read 2× off); they are not kept. Measure with npm run bench.',
  );
} else {
  if (chart !== undefined) writeFileSync(here('chart.svg'), chart);
  writeReport(results, here);
  console.log(
    `\nfull run in ${results.seconds} s: bench/RESULTS.md, bench/chart.svg, bench/README.md`,
  );
}
