// The shared tier on a real redis-server (started here on loopback, stopped after):
// getOrLoad hit and miss through redisStore, the writer's next read through tieredStore,
// and a page of 10 misses during an outage (the server killed). Each scenario checks
// values and load counts before it is timed; medians of interleaved rounds.
//
//   node bench/shared.mjs [--quick] [--verbose] [--package DIR]
//
// --package: the package root whose dist/ is measured (default: this checkout), so two
// builds (a baseline ref and the current tree) run the same script:
//   git worktree add /tmp/cc-base main && (cd /tmp/cc-base && ln -s "$PWD/node_modules" . && npx tsup)
//   node bench/shared.mjs --package /tmp/cc-base && node bench/shared.mjs
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { flag, median, option, printTable } from './lib/util.mjs';

const quick = flag('--quick');
const root = resolve(option('--package') ?? fileURLToPath(new URL('..', import.meta.url)));
const { createSharedCache, memoryStore } = await import(
  pathToFileURL(join(root, 'dist/index.js')).href
);
const { redisStore, tieredStore } = await import(pathToFileURL(join(root, 'dist/redis.js')).href);

const ROUNDS = quick ? 2 : 7;
const OPS = quick ? 200 : 2000;
const PAGE = 10;

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

async function listening(port) {
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((ok) => {
      const socket = new Socket();
      const done = (up) => {
        socket.destroy();
        ok(up);
      };
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
      socket.connect(port, '127.0.0.1');
    });
    if (up) return;
    await sleep(25);
  }
  throw new Error(`redis-server did not listen on ${port}`);
}

/** A redis-server of our own, persistence off, that can be killed and started again. */
async function redisServer() {
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    throw new Error('redis-server is not on PATH (apt-get install redis-server)');
  }
  const dir = mkdtempSync(join(tmpdir(), 'context-cache-bench-redis-'));
  const port = await freePort();
  let child;
  const start = async () => {
    child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      { stdio: 'ignore' },
    );
    await listening(port);
  };
  const kill = async () => {
    const exited = new Promise((ok) => child.once('exit', ok));
    child.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    start,
    kill,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let loads = 0;
const loader = (key) => {
  loads++;
  return { id: key, name: `user ${key}`, email: `user${key}@example.com` };
};
let seq = 0;

/** µs per operation of `ops` sequential awaited calls of `fn(i)`. */
async function perOp(fn) {
  const started = performance.now();
  for (let i = 0; i < OPS; i++) await fn(i);
  return ((performance.now() - started) * 1000) / OPS;
}

const server = await redisServer();
const results = { hit: [], miss: [], own: [], page: [], invalidate: [] };
try {
  const cache = createSharedCache({
    store: redisStore({ url: server.url }),
    ttl: 60_000,
    namespace: 'bench',
  });
  const tiered = createSharedCache({
    store: tieredStore({
      l1: memoryStore({ max: 100_000, ttl: 60_000 }),
      l2: redisStore({ url: server.url }),
    }),
    ttl: 60_000,
    namespace: 'tiered',
  });

  // Check before timing: a miss loads once and is stored; a hit loads nothing.
  loads = 0;
  await cache.getOrLoad('hit', loader);
  await sleep(50);
  const hit = await cache.getOrLoad('hit', loader);
  if (loads !== 1 || hit.name !== 'user hit') throw new Error(`hit check failed: ${loads} loads`);

  for (let round = 0; round < ROUNDS; round++) {
    loads = 0;
    results.hit.push(await perOp(() => cache.getOrLoad('hit', loader)));
    if (loads !== 0) throw new Error(`${loads} loads during hits`);
    results.miss.push(await perOp(() => cache.getOrLoad(`miss ${seq++}`, loader)));
    if (loads !== OPS) throw new Error(`${loads} loads for ${OPS} misses`);
    // The writer's next read: load OPS keys, let the write-backs land, read them again.
    const first = seq;
    for (let i = 0; i < OPS; i++) await tiered.getOrLoad(`own ${seq++}`, loader);
    await sleep(200);
    loads = 0;
    results.own.push(await perOp((i) => tiered.getOrLoad(`own ${first + i}`, loader)));
    if (loads !== 0) throw new Error(`${loads} loads when reading back`);
    await sleep(100);
  }

  // The outage page: the server killed, the outage already reported, then 10 misses.
  const down = createSharedCache({
    store: redisStore({ url: server.url }),
    ttl: 60_000,
    namespace: 'down',
    onError: () => {},
  });
  await down.set('warm', 1);
  await server.kill();
  await sleep(200);
  await down.getOrLoad('first', loader); // the outage starts (and is reported) here
  for (let round = 0; round < ROUNDS; round++) {
    loads = 0;
    let started = performance.now();
    for (let i = 0; i < PAGE; i++) await down.getOrLoad(`page ${seq++}`, loader);
    results.page.push(performance.now() - started);
    if (loads !== PAGE) throw new Error(`${loads} loads for a page of ${PAGE} misses`);
    started = performance.now();
    const rejected = await down.delete('warm').then(
      () => false,
      () => true,
    );
    results.invalidate.push(performance.now() - started);
    if (!rejected) throw new Error('delete resolved while the server was down');
  }
  await server.start();
  await Promise.all([cache.close(), tiered.close(), down.close()]);
} finally {
  await server.stop();
}

const us = (values) => `${median(values).toFixed(1)} µs`;
// --verbose: every round's figure, to see the spread behind the medians.
if (flag('--verbose')) console.log(JSON.stringify(results));
const ms = (values) => `${median(values).toFixed(1)} ms`;
printTable(
  `Shared tier on redis-server, ${option('--package') === undefined ? 'this checkout' : 'the --package build'}, Node ${process.version}, ${ROUNDS} rounds × ${OPS} ops (medians)`,
  ['scenario', 'median'],
  [
    ['getOrLoad hit, redisStore', us(results.hit)],
    ['getOrLoad miss, redisStore (loader + detached write-back)', us(results.miss)],
    ["tieredStore: the writer's next read of what it loaded", us(results.own)],
    [`outage: a page of ${PAGE} misses, in total`, ms(results.page)],
    ['outage: delete() rejecting', ms(results.invalidate)],
  ],
);
