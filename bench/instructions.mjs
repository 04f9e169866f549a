// Instructions per request, counted by valgrind's callgrind: the /ping question of the
// HTTP bench (what a request scope adds to a Fastify request that does nothing else) as a
// count that does not depend on what else the machine is doing. Requests per second on a
// shared 2-core machine move with the machine's load from one round to the next; this
// moves only with what the server itself runs.
//
// Each contender's server (http/server.mjs) runs under callgrind with counting off; this
// process warms it up with autocannon (4 connections), switches counting on
// (`callgrind_control -i on`), sends the measured requests, switches it off and divides
// what the server ran by the requests. Instructions are not time (a cache miss costs more
// than an add), but what one build runs more than another is work it does more.
//
// Each thread is counted apart. The main thread runs the JavaScript: Fastify, the hook,
// the route. The other threads are V8's compilers and GC helpers; their work lands in
// the window whenever it happens to run (a major GC or a late optimization in one round
// and not the next), so all threads together vary by a few percent between rounds of
// one server, and now and then by a quarter. Both are reported; compare medians of
// rounds, mostly of the main thread, and read a difference smaller than the rounds'
// spread as none. V8's `--single-threaded` does not remove that noise: two runs of one
// server still differed by 7% on Node 20.
//
//   node bench/instructions.mjs           full run (~20 minutes): writes bench/INSTRUCTIONS.md
//   node bench/instructions.mjs --quick   smoke run (~20 s): two contenders, few requests
//   --rounds N      rounds of every contender (default 5)
//   --jobs N        servers counted at once (default 2; counts do not depend on load)
//   --json FILE     also write the results as JSON
//
// Needs the build (npm run build), bench/node_modules and valgrind on PATH (Debian:
// apt-get install valgrind, which brings callgrind_control).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { get, load, startServer } from './lib/http.mjs';
import { benchNodes, flag, markdownTable, median, option, versionOf } from './lib/util.mjs';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const quick = flag('--quick');
const jsonFile = option('--json');
const jobs = Number(option('--jobs') ?? (quick ? 1 : 2));
const rounds = quick ? 1 : Number(option('--rounds') ?? 5);
// Past 20,000 requests Turbofan has compiled what /ping runs; before it, the compiler's
// own work (which is counted) is most of the difference between two runs.
const WARM = quick ? 200 : 20_000;
const MEASURED = quick ? 200 : 10_000;
const contenders = quick
  ? ['none', 'context-cache']
  : ['none', 'empty-hook', 'hand-rolled', 'context-cache'];
const LABELS = {
  none: 'no hook',
  'empty-hook': 'an onRequest hook that only calls done()',
  'hand-rolled': 'hand-rolled als.run(new Map(), done) in onRequest',
  'context-cache': 'context-cache/fastify',
};

const valgrind = versionOf('valgrind');
if (valgrind === undefined || versionOf('callgrind_control', ['-h']) === undefined) {
  const install =
    'bench/instructions.mjs counts instructions with valgrind: install it ' +
    '(Debian: apt-get install valgrind, which brings callgrind_control)';
  // Like the browser test: left out of a local smoke run without it, never on CI.
  if (quick && !process.env.CI) {
    console.log(`${install}; its smoke run is left out here.`);
    process.exit(0);
  }
  console.error(`${install} and run again.`);
  process.exit(1);
}

const all = benchNodes();
const nodes = quick ? all.slice(0, 1) : all;

const dir = mkdtempSync(join(os.tmpdir(), 'context-cache-instructions-'));
const control = (pid, ...args) =>
  execFileSync('callgrind_control', [...args, String(pid)], { stdio: 'ignore' });

/** Instructions per /ping request of one contender on one Node, from a server of its own. */
async function count(node, contender, run) {
  const base = `${contender}-${node.version}-${run}`;
  const server = await startServer(
    'valgrind',
    { framework: 'fastify', contender },
    {
      nodeArgs: [
        '--tool=callgrind',
        '--instr-atstart=no',
        // V8 writes and rewrites its machine code: valgrind must notice.
        '--smc-check=all-non-file',
        // One count per thread: thread 1 runs the JavaScript.
        '--separate-threads=yes',
        `--callgrind-out-file=${join(dir, base)}.%p`,
        '-q',
        node.bin,
      ],
      startTimeout: 600_000,
    },
  );
  try {
    const answer = await get(`${server.url}/ping`);
    if (answer !== 'pong') throw new Error(`${contender}: /ping answered ${answer}`);
    await load(`${server.url}/ping`, { connections: 4, amount: WARM });
    control(server.pid, '-i', 'on');
    await load(`${server.url}/ping`, { connections: 4, amount: MEASURED });
    control(server.pid, '-i', 'off');
    control(server.pid, '-d');
  } finally {
    await server.stop();
  }
  // Files are <base>.<pid>[.<dump>]-<thread>; thread 01 is the main thread.
  let total = 0;
  let main = 0;
  for (const file of readdirSync(dir)) {
    if (!file.startsWith(`${base}.`)) continue;
    for (const match of readFileSync(join(dir, file), 'utf8').matchAll(/^totals: (\d+)$/gm)) {
      total += Number(match[1]);
      if (file.endsWith('-01')) main += Number(match[1]);
    }
  }
  if (main === 0) throw new Error(`${contender}: callgrind counted nothing on the main thread`);
  const perRequest = { main: main / MEASURED, all: total / MEASURED };
  console.log(
    `${quick ? 'smoke run (not a measurement) ' : ''}round ${run + 1}/${rounds} Node ${node.version} ` +
      `${contender}: ${Math.round(perRequest.main)} instructions per request on the main thread, ` +
      `${Math.round(perRequest.all)} in all threads`,
  );
  return perRequest;
}

// Every (round, Node, contender), in an order turned each round, run `jobs` at a time.
const tasks = [];
for (let run = 0; run < rounds; run++) {
  for (const node of nodes) {
    const order = run % 2 === 0 ? contenders : [...contenders].reverse();
    for (const contender of order) tasks.push({ node, contender, run });
  }
}
const counts = new Map(); // `${version} ${contender}` -> per-request counts of each round
async function worker() {
  for (let task = tasks.shift(); task !== undefined; task = tasks.shift()) {
    const value = await count(task.node, task.contender, task.run);
    const key = `${task.node.version} ${task.contender}`;
    counts.set(key, [...(counts.get(key) ?? []), value]);
  }
}
try {
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const fmt = (n) => Math.round(n).toLocaleString('en-US');
const ratio = (a, b) => `${(a / b).toFixed(3)}×`;
const range = (values) =>
  values.length > 1 ? `${fmt(Math.min(...values))}–${fmt(Math.max(...values))}` : '';
const results = [];
const tables = [];
for (const node of nodes) {
  const of = (contender, part) =>
    median((counts.get(`${node.version} ${contender}`) ?? []).map((c) => c[part]));
  const rows = contenders.map((contender) => {
    const rounds = counts.get(`${node.version} ${contender}`) ?? [];
    const main = rounds.map((c) => c.main);
    const all = rounds.map((c) => c.all);
    const row = {
      node: node.version,
      contender,
      mainThread: median(main),
      allThreads: median(all),
      rounds,
    };
    results.push(row);
    const hand = contenders.includes('hand-rolled');
    return [
      LABELS[contender],
      fmt(row.mainThread),
      range(main),
      ratio(row.mainThread, of('none', 'main')),
      hand ? ratio(row.mainThread, of('hand-rolled', 'main')) : '',
      fmt(row.allThreads),
      range(all),
      ratio(row.allThreads, of('none', 'all')),
      hand ? ratio(row.allThreads, of('hand-rolled', 'all')) : '',
    ];
  });
  const title = `Fastify /ping, instructions per request, Node ${node.version} (median of ${rounds} round(s), ${fmt(MEASURED)} requests each after ${fmt(WARM)})`;
  const table = markdownTable(
    [
      'contender',
      'main thread',
      'rounds',
      '÷ no hook',
      '÷ hand-rolled',
      'all threads',
      'rounds',
      '÷ no hook',
      '÷ hand-rolled',
    ],
    rows,
  );
  console.log(`\n${quick ? 'Smoke run, not a measurement: ' : ''}${title}\n${table}`);
  tables.push(`### Node ${node.version}\n\n${table}`);
}

if (jsonFile !== undefined) writeFileSync(jsonFile, `${JSON.stringify(results, null, 2)}\n`);
if (!quick) {
  const date = new Date().toISOString().slice(0, 10);
  writeFileSync(
    here('INSTRUCTIONS.md'),
    `# Instructions per request

${date}, \`node bench/instructions.mjs\`, ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${valgrind}.
Written by \`bench/instructions.mjs\`; see its header for the method. Fastify \`/ping\`
(the route answers \`pong\` and does nothing else), each contender in a server of its own
under callgrind: ${fmt(WARM)} requests to warm it up, then ${fmt(MEASURED)} counted; ${rounds} rounds,
medians, and the lowest and highest round. The main thread runs the JavaScript (Fastify,
the hook, the route); all threads add V8's compiler and GC helper threads, whose work
lands in the counted window or not from one round to the next, so that column moves by
a few percent between rounds of one server and now and then by a quarter.

${tables.join('\n\n')}
`,
  );
  console.log('\nwrote bench/INSTRUCTIONS.md');
}
