// Where a Fastify /ping server spends its CPU, per request, with no middleware, with a
// hand-rolled `als.run(new Map(), done)` hook and with our adapter: the server runs under
// `--cpu-prof` in its own process while autocannon loads it from this one, then the
// profile's samples are summed by what ran them (our code, async hooks, Fastify, Node's
// http, the kernel's socket writes, GC). Answers "what does the /ping overhead consist
// of" with microseconds per request rather than req/s, which a shared 2-core machine
// blurs by ±5%.
//
//   node bench/profile.mjs            writes bench/PROFILE.md (~1 minute per Node version and round)
//   node bench/profile.mjs --quick    1 s per server, writes only under bench/.results/

import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { load, startServer } from './lib/http.mjs';
import { benchNodes, flag, markdownTable } from './lib/util.mjs';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const quick = flag('--quick');
const seconds = quick ? 1 : 5;
const rounds = quick ? 1 : 3;
const contenders = ['none', 'hand-rolled', 'context-cache'];

const nodes = benchNodes();

/** What a sample's function belongs to, from its script URL and name. */
function category(frame) {
  const { url, functionName } = frame;
  if (functionName === '(idle)') return 'idle';
  if (functionName === '(garbage collector)') return 'garbage collector';
  if (functionName === '(program)') return 'V8 and native code (program)';
  // The server imports the package through bench/node_modules (a link to the root),
  // which the profile shows by its real path: the root's dist/.
  const inPackage = url.includes('node_modules/') && !url.includes('node_modules/context-cache/');
  if (!inPackage && /[/\\]dist[/\\][^/\\]+\.c?js$/.test(url)) return 'context-cache';
  if (url.includes('async_hooks') || functionName === 'runInAsyncScope') {
    return 'async hooks and AsyncLocalStorage';
  }
  if (inPackage) {
    const pkg = url.split('node_modules/').pop()?.split('/')[0] ?? '';
    if (['fastify', 'find-my-way', 'avvio', 'light-my-request', '@fastify'].includes(pkg)) {
      return 'Fastify';
    }
    return 'other packages';
  }
  if (url.startsWith('node:') || url === '') {
    if (
      functionName === 'writev' ||
      functionName === 'writeUtf8String' ||
      functionName === 'writeBuffer'
    ) {
      return 'socket writes (kernel)';
    }
    if (/_http_|node:http|node:net|stream/.test(url)) return "Node's http, net and streams";
    return 'other Node internals';
  }
  return 'benchmark server';
}

const PACKAGES = new Set(['context-cache', 'Fastify', 'benchmark server', 'other packages']);
const OWN = new Set(['idle', 'garbage collector', 'V8 and native code (program)']);

/**
 * Who a sample's time is for: the nearest frame on its stack that belongs to a package
 * (ours, Fastify, the benchmark's route or hand-rolled hook), so the Node APIs our
 * adapter calls count as ours; 'Node alone' when no package is on the stack (parsing a
 * request, socket reads).
 */
function owner(node, nodesById, parents) {
  const leaf = category(node.callFrame);
  if (OWN.has(leaf) || PACKAGES.has(leaf)) return leaf;
  for (let id = parents.get(node.id); id !== undefined; id = parents.get(id)) {
    const c = category(nodesById.get(id).callFrame);
    if (PACKAGES.has(c)) return c;
  }
  return 'Node alone';
}

/**
 * Run one server under the profiler; adds the CPU µs spent in each category during the
 * measured load to `sums` and returns the requests served then.
 */
async function profile(node, contender, round, sums, owners) {
  const dir = here(`.results/profiles/${contender}-${node.version}-${round}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const server = await startServer(
    node.bin,
    { framework: 'fastify', contender },
    { nodeArgs: ['--cpu-prof', '--cpu-prof-interval=200', `--cpu-prof-dir=${dir}`] },
  );
  let requests;
  let from;
  let to;
  try {
    await load(`${server.url}/ping`, { duration: 1 }); // warm-up
    // Profile timestamps and hrtime read the same monotonic clock (µs): only samples
    // taken while the measured load ran are counted.
    from = Number(process.hrtime.bigint() / 1000n);
    requests = (await load(`${server.url}/ping`, { duration: seconds })).requests;
    to = Number(process.hrtime.bigint() / 1000n);
  } finally {
    await server.stop();
  }
  const file = readdirSync(dir).find((name) => name.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error(`no profile written for ${contender}`);
  const prof = JSON.parse(readFileSync(`${dir}/${file}`, 'utf8'));
  const nodesById = new Map(prof.nodes.map((n) => [n.id, n]));
  const parents = new Map();
  for (const n of prof.nodes) for (const child of n.children ?? []) parents.set(child, n.id);
  if (!(prof.startTime <= from && to <= prof.endTime)) {
    throw new Error('the profile does not cover the measured load: clocks differ here');
  }
  let at = prof.startTime;
  prof.samples.forEach((id, i) => {
    const delta = prof.timeDeltas[i] ?? 0;
    at += delta;
    if (at < from || at > to) return;
    const sample = nodesById.get(id);
    const key = category(sample.callFrame);
    sums.set(key, (sums.get(key) ?? 0) + delta);
    const who = owner(sample, nodesById, parents);
    owners.set(who, (owners.get(who) ?? 0) + delta);
  });
  return requests;
}

const started = Date.now();
const sections = [];
const summary = [];
for (const node of nodes) {
  const v = node.version;
  const sums = Object.fromEntries(contenders.map((c) => [c, new Map()]));
  const owners = Object.fromEntries(contenders.map((c) => [c, new Map()]));
  const requests = Object.fromEntries(contenders.map((c) => [c, 0]));
  for (let round = 0; round < rounds; round++) {
    // Interleaved, in a different order each round, as the HTTP bench does.
    const order = round % 2 === 0 ? contenders : [...contenders].reverse();
    for (const contender of order) {
      requests[contender] += await profile(
        node,
        contender,
        round,
        sums[contender],
        owners[contender],
      );
      console.log(`profiled ${v} ${contender}, round ${round + 1}/${rounds}`);
    }
  }
  const perRequest = (maps, contender) => {
    const out = new Map();
    for (const [key, us] of maps[contender]) {
      if (key !== 'idle') out.set(key, us / requests[contender]);
    }
    return out;
  };
  const table = (maps, title) => {
    const by = Object.fromEntries(contenders.map((c) => [c, perRequest(maps, c)]));
    const keys = [...new Set(contenders.flatMap((c) => [...by[c].keys()]))].sort(
      (a, b) => (by['context-cache'].get(b) ?? 0) - (by['context-cache'].get(a) ?? 0),
    );
    const busy = (c) => [...by[c].values()].reduce((x, y) => x + y, 0);
    const rows = keys.map((k) => [k, ...contenders.map((c) => (by[c].get(k) ?? 0).toFixed(2))]);
    rows.push(['**CPU per request**', ...contenders.map((c) => `**${busy(c).toFixed(2)}**`)]);
    return { text: markdownTable([title, ...contenders], rows), by, busy };
  };
  const ran = table(sums, 'µs per request, by the function that ran');
  const asked = table(owners, 'µs per request, by the package that asked');
  sections.push(`### Node ${v}\n\n${asked.text}\n\n${ran.text}`);
  const mine = asked.by['context-cache'].get('context-cache') ?? 0;
  summary.push(
    `Node ${v}: none ${ran.busy('none').toFixed(2)} µs, hand-rolled ` +
      `${ran.busy('hand-rolled').toFixed(2)} µs, context-cache ` +
      `${ran.busy('context-cache').toFixed(2)} µs of CPU per request; the adapter's own ` +
      `share (its code and the Node APIs it calls) ${mine.toFixed(2)} µs`,
  );
}

const text = `# Where a Fastify /ping request's CPU goes

Generated by \`npm run bench:profile\` (bench/profile.mjs) on ${new Date().toISOString()}
(${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores). Do not edit: run it again.

Each server ran under \`--cpu-prof\` (a sample every 200 µs) in its own process while
autocannon (10 connections, 1 s warm-up, then ${seconds} s measured) loaded \`GET /ping\` from
another, ${rounds} interleaved round(s) per contender. The time of every sample taken during
the measured seconds is divided by the requests served then (idle time left out) and
summed twice: by the package that asked for the work (the nearest frame of a package on
the sample's stack, so the Node APIs our adapter calls count as ours; "Node alone" has no
package on the stack, such as parsing a request), then by the function that ran. This
machine's socket writes are slow and vary by ±1 µs per request from run to run: compare
rows, not totals.

${summary.map((s) => `- ${s}`).join('\n')}

${sections.join('\n\n')}
`;
const out = quick ? here('.results/PROFILE.md') : here('PROFILE.md');
writeFileSync(out, text);
console.log(
  `\n${quick ? 'SMOKE RUN (1 s per server, one round: proves the profiler still works; the µs are not measurements)\n' : ''}` +
    `${summary.join('\n')}\nwrote ${out} in ${Math.round((Date.now() - started) / 1000)} s`,
);
