// An awaited hit and a whole Hono request on Node, Bun, Deno and Cloudflare Workers
// (workerd), each with context-cache beside a hand-rolled AsyncLocalStorage map on the
// same runtime, in the same run. Every runtime serves runtimes/scenarios.mjs on
// 127.0.0.1; this script times `/run?scenario=…&n=N` against `n=0` from outside, so
// workerd, whose clocks stand still while it computes, is timed like the others.
// Rounds interleave the scenarios; medians per operation. Writes RUNTIMES.md.
//
//   npm run bench:runtimes            # from the root (builds first)
//   node bench/runtimes.mjs --quick   # a few iterations, numbers not kept
//   node bench/runtimes.mjs --only=bun,deno   # some runtimes (node, bun, deno, workerd)
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { scenarios } from './runtimes/scenarios.mjs';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '..');
const bin = (name) => join(root, 'node_modules/.bin', name);
const ROUNDS = quick ? 1 : 7;
const N = { hit: quick ? 2_000 : 200_000, hono: quick ? 200 : 10_000 };

function lines(stream, onLine) {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    rest += chunk;
    for (let i = rest.indexOf('\n'); i !== -1; i = rest.indexOf('\n')) {
      onLine(rest.slice(0, i));
      rest = rest.slice(i + 1);
    }
  });
}

/** Start a server script; resolves with its base URL, label and a stop function. */
function start(command, args, { controlFd = false, cwd = root } = {}) {
  const child = spawn(command, args, {
    cwd,
    stdio: controlFd ? ['pipe', 'pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe'],
  });
  const output = [];
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.stdin.end();
      child.kill('SIGTERM');
    });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${command}: no port within 60 s\n${output.join('\n')}`));
    }, 60_000);
    child.once('exit', (code) =>
      reject(new Error(`${command} exited (${code})\n${output.join('\n')}`)),
    );
    lines(child.stderr, (line) => output.push(line));
    const ready = (port, label) => {
      clearTimeout(timer);
      child.removeAllListeners('exit');
      resolve({ base: `http://127.0.0.1:${port}`, label, stop });
    };
    lines(child.stdout, (line) => {
      output.push(line);
      const m = /^LISTEN (\d+) (.*)$/.exec(line);
      if (m) ready(m[1], m[2]);
    });
    if (controlFd) {
      lines(child.stdio[3], (line) => {
        const event = JSON.parse(line);
        if (event.event === 'listen') ready(event.port, 'workerd (nodejs_compat)');
      });
    }
  });
}

async function startWorkerd() {
  mkdirSync(join(root, 'node_modules/.cache'), { recursive: true });
  const dir = mkdtempSync(join(root, 'node_modules/.cache/bench-workerd-'));
  await build({
    entryPoints: [join(here, 'runtimes/worker.mjs')],
    outfile: join(dir, 'worker.js'),
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    conditions: ['workerd', 'worker', 'import'],
    mainFields: ['module', 'main'],
    external: ['node:*'],
    logLevel: 'silent',
  });
  writeFileSync(
    join(dir, 'config.capnp'),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .worker) ],
  sockets = [ (name = "http", address = "127.0.0.1:0", http = (), service = "main") ],
);
const worker :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js") ],
  compatibilityDate = "2025-09-01",
  compatibilityFlags = ["nodejs_compat"],
);
`,
  );
  return start(bin('workerd'), ['serve', join(dir, 'config.capnp'), '--control-fd=3'], {
    controlFd: true,
    cwd: dir,
  });
}

const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7);
const all = [
  ['node', () => start(process.execPath, [join(here, 'runtimes/node.mjs')])],
  ['bun', () => start(bin('bun'), [join(here, 'runtimes/bun.mjs')])],
  [
    'deno',
    () =>
      start(bin('deno'), [
        'run',
        '--allow-read',
        '--allow-env',
        '--allow-net=127.0.0.1',
        join(here, 'runtimes/deno.mjs'),
      ]),
  ],
  ['workerd', startWorkerd],
];
const runtimes = only === undefined ? all : all.filter(([name]) => only.split(',').includes(name));

async function timed(base, scenario, n) {
  const url = `${base}/run?scenario=${encodeURIComponent(scenario)}&n=${n}`;
  const t0 = process.hrtime.bigint();
  const res = await fetch(url, { signal: AbortSignal.timeout(120_000) });
  const body = await res.text();
  const t1 = process.hrtime.bigint();
  if (res.status !== 200) throw new Error(`${scenario}: ${res.status} ${body}`);
  return Number(t1 - t0);
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const results = [];
for (const [name, launch] of runtimes) {
  const server = await launch();
  try {
    const names = Object.keys(scenarios);
    const perOp = Object.fromEntries(names.map((s) => [s, []]));
    const nOf = (s) => (s.startsWith('awaited') ? N.hit : N.hono);
    for (const s of names) await timed(server.base, s, nOf(s)); // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of names) {
        const empty = await timed(server.base, s, 0);
        const full = await timed(server.base, s, nOf(s));
        perOp[s].push(Math.max(0, full - empty) / nOf(s));
      }
    }
    const row = { runtime: server.label, name };
    for (const s of names) row[s] = median(perOp[s]);
    results.push(row);
    console.log(
      `${server.label}: ${names.map((s) => `${s} ${(row[s] / 1000).toFixed(3)} µs`).join(', ')}`,
    );
  } finally {
    await server.stop();
  }
}

const us = (ns) => (ns / 1000).toFixed(3);
const table = [
  '| runtime | awaited hit: context-cache | hand-rolled map | ratio | Hono request: context-cache | hand-rolled map | ratio |',
  '|---|---|---|---|---|---|---|',
  ...results.map((r) => {
    const hit = r['awaited hit: context-cache'] / r['awaited hit: hand-rolled map'];
    const hono = r['Hono request: context-cache'] / r['Hono request: hand-rolled map'];
    return `| ${r.runtime} | ${us(r['awaited hit: context-cache'])} µs | ${us(r['awaited hit: hand-rolled map'])} µs | ${hit.toFixed(2)}× | ${us(r['Hono request: context-cache'])} µs | ${us(r['Hono request: hand-rolled map'])} µs | ${hono.toFixed(2)}× |`;
  }),
];
console.log(`\n${table.join('\n')}`);
if (!quick) {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  writeFileSync(
    join(here, 'RUNTIMES.md'),
    `# Runtimes: an awaited hit and a Hono request

\`npm run bench:runtimes\`, ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB (a shared machine: noisy).
Medians of ${ROUNDS} interleaved rounds, per operation: ${N.hit.toLocaleString('en')} awaited hits, or ${N.hono.toLocaleString('en')} requests through \`app.fetch\`
(three getter calls, the body read to its end; each \`app.fetch\` is handed what the runtime's server handed the
outer request, as \`Deno.serve(app.fetch)\`, \`Bun.serve({ fetch: app.fetch })\` and \`export default app\` on Workers
do; on Node nothing, as that server's env holds the outer request's response), timed from outside as \`n=N\` minus \`n=0\`.
The hand-rolled map is \`bench/contenders/hand-rolled.mjs\` (\`als.run(new Map(), next)\`), on the same runtime in the same run.

${table.join('\n')}
`,
  );
}
