// A randomized consistency fuzzer of the shared tier across instances, against a real
// redis-server it starts itself (redis-server on PATH) on a random loopback port, in a
// temporary directory. Each seed runs 2-4 instances in one process (tieredStore over
// their own ioredis clients, some behind a proxy that delays replies without reordering
// them, or plain redisStore; and a memoryStore mode) over a "database" of versioned rows:
// reads (getOrLoad, get, contextCached, contextBatched) whose loaders read the row and
// return up to 1.5 s later, writes that update the row and then delete / set /
// invalidate, aborted requests, and faults (SIGSTOP, CLIENT PAUSE, CLIENT KILL of a
// command or subscriber connection). It checks what the README promises: no read that
// starts after a resolved delete/set/invalidate returns an older version (beyond the
// pub/sub grace, and except where a subscriber was killed: L1 ttl then bounds it), no
// stale L1, Redis never older than the latest resolved write, never another key's
// value, store faults never fail a request, no unhandled rejection.
//
//   node --unhandled-rejections=strict test/fuzz/shared-tier.mjs [--seeds N] [--seed S]
//        [--duration MS] [--mode redis|memory|both] [--nofaults] [--noproxy]
//        [--memmax N] [--noabort] [--budget MS]
//
// Timing-dependent (real delays, real faults), so not part of npm test: run it after a
// change to the shared tier (a few minutes; needs a build). Exits 1 on a violation.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { mulberry32 } from './prng.mjs';

const lib = await import(new URL('../../dist/index.js', import.meta.url).href);
const { redisStore, tieredStore } = await import(
  new URL('../../dist/redis.js', import.meta.url).href
);
const { Redis } = await import('ioredis');
const { createSharedCache, memoryStore, contextCached, contextBatched, withCacheContext } = lib;

// ---------------------------------------------------------------- args
const argv = process.argv.slice(2);
const arg = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const flag = (name) => argv.includes(`--${name}`);
const SEEDS = Number(arg('seeds', 6));
const FIRST_SEED = Number(arg('seed', 1));
const DURATION = Number(arg('duration', 15000));
const MODE = arg('mode', 'both');
const FAULTS = !flag('nofaults');
const PROXY = !flag('noproxy');
const GLOBAL_DEADLINE = performance.now() + Number(arg('budget', 8 * 60_000));

const L1_TTL = 1500;
const TTL = 4000;
const GRACE = 120; // ms after a write resolved, for its pub/sub message (plus proxy jitter)
const MAX_JITTER = 25;

// ---------------------------------------------------------------- utils
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let SEQ = 0;
const tick = () => ++SEQ;

const violations = [];
const excused = [];
const stats = {
  ops: 0,
  reads: 0,
  writes: 0,
  writeFail: 0,
  loaderErr: 0,
  aborts: 0,
  faults: {},
  seeds: 0,
  redisChecks: 0,
  l1Checks: 0,
  batches: 0,
};
let currentSeed = 0;
function violate(kind, detail) {
  const v = { seed: currentSeed, ...detail, kind };
  violations.push(v);
  if (violations.length <= 40) console.log('VIOLATION', JSON.stringify(v));
}

process.on('uncaughtException', (err) => {
  violate('uncaught/unhandled', { err: String(err?.stack ?? err) });
});
process.on('warning', (w) => {
  if (!['CONTEXT_CACHE_STORE_DOWN', 'CONTEXT_CACHE_GROUP_REUSED'].includes(w.code))
    console.log('warning', w.code, w.message);
});

// ---------------------------------------------------------------- redis-server
const port = 20000 + Math.floor(Math.random() * 40000);
const DIR = mkdtempSync(join(os.tmpdir(), 'context-cache-fuzz-'));
const pidfile = `${DIR}/redis-${port}.pid`;
let redisPid;
function startRedis() {
  const r = spawnSync('redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'yes',
    '--dir',
    DIR,
    '--pidfile',
    pidfile,
    '--logfile',
    `${DIR}/redis-${port}.log`,
  ]);
  if (r.status !== 0) throw new Error(`redis-server failed: ${r.stderr}`);
  for (let i = 0; i < 100 && !existsSync(pidfile); i++) spawnSync('sleep', ['0.05']);
  redisPid = Number(readFileSync(pidfile, 'utf8').trim());
  console.log(`redis-server pid ${redisPid} port ${port}`);
}
function stopRedis() {
  if (!redisPid) return;
  try {
    process.kill(redisPid, 'SIGCONT');
  } catch {}
  try {
    process.kill(redisPid, 'SIGTERM');
  } catch {}
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(redisPid, 0);
    } catch {
      console.log('redis-server stopped');
      redisPid = undefined;
      return;
    }
    spawnSync('sleep', ['0.05']);
  }
  try {
    process.kill(redisPid, 'SIGKILL');
  } catch {}
  redisPid = undefined;
}
process.on('exit', () => {
  stopRedis();
  rmSync(DIR, { recursive: true, force: true });
});
process.on('SIGINT', () => {
  stopRedis();
  process.exit(130);
});

// ---------------------------------------------------------------- latency proxy
function startProxy(rng) {
  const jitter = Math.floor(rng() * MAX_JITTER) + 1;
  const sockets = new Set();
  const server = net.createServer((c) => {
    const up = net.connect(port, '127.0.0.1');
    sockets.add(c);
    sockets.add(up);
    let last = 0;
    const queue = [];
    let timer;
    const pump = () => {
      timer = undefined;
      while (queue.length && queue[0].at <= now()) {
        const { d } = queue.shift();
        if (!c.destroyed) c.write(d);
      }
      if (queue.length) timer = setTimeout(pump, Math.max(1, queue[0].at - now()));
    };
    c.on('data', (d) => up.write(d));
    up.on('data', (d) => {
      // delay replies, never reorder them (a TCP stream)
      const at = Math.max(last, now() + Math.random() * jitter);
      last = at;
      queue.push({ at, d });
      if (!timer) timer = setTimeout(pump, Math.max(1, at - now()));
    });
    const end = () => {
      // flush queued replies first (they are ordered by `last`)
      setTimeout(
        () => {
          c.destroy();
          up.destroy();
        },
        Math.max(0, last - now()) + 1,
      );
    };
    c.on('close', () => up.destroy());
    up.on('close', end);
    c.on('error', () => {});
    up.on('error', () => {});
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: server.address().port,
        jitter,
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      }),
    ),
  );
}

// ---------------------------------------------------------------- values
const TAG_RE = /@@K=([^;]*);V=(\d+);S=(\d+)@@/;
const mkValue = (key, v, s) => ({ k: key, v, s, tag: `@@K=${key};V=${v};S=${s}@@` });
function parseRaw(raw) {
  if (raw == null) return { none: true };
  const buf = Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
  const head = buf.subarray(0, 21).toString('latin1');
  if (!head.startsWith('cc1:')) return { foreign: true };
  const version = Number(head.slice(4, 20));
  if (head[20] === '!') return { tomb: true, version };
  const m = TAG_RE.exec(buf.toString('latin1'));
  if (!m) return { unparsable: true, version };
  return { version, k: m[1], v: Number(m[2]), s: Number(m[3]) };
}

class LoaderErr extends Error {
  constructor(k) {
    super(`loader failed for ${k}`);
    this.name = 'LoaderErr';
  }
}

// ---------------------------------------------------------------- one seed
async function runSeed(seed, mode) {
  currentSeed = seed;
  const rng = mulberry32(seed * 7919 + (mode === 'memory' ? 17 : 0));
  const pick = (a) => a[Math.floor(rng() * a.length)];
  const ns = `fz${seed}${mode[0]}`;
  const KEYS = ['a', 'b', 'c', 'd', 'e', 'f'].slice(0, 3 + Math.floor(rng() * 4));
  const SPACES = ['d', 'g']; // d: shared.getOrLoad/get/set/delete; g: contextCached/contextBatched group 'g'
  const db = new Map(); // logical key -> version
  for (const s of SPACES) for (const k of KEYS) db.set(`${s}:${k}`, 1);
  const writes = new Map(); // logical key -> [{V, callSeq, callAt, resolvedAt}]
  const faults = []; // {kind, inst, start, end}
  const _extra = [];

  // ---- instances
  const instances = [];
  const proxies = [];
  if (mode === 'memory') {
    const max = arg('memmax') ? Number(arg('memmax')) : 2 + Math.floor(rng() * 10);
    const store = memoryStore({ max, ...(rng() < 0.5 ? { ttl: 2000 } : {}) });
    const n = 2 + Math.floor(rng() * 3);
    // One process: every "instance" is a request source on the same cache.
    const shared = createSharedCache({ store, ttl: TTL, namespace: ns, onError: () => {} });
    for (let i = 0; i < n; i++)
      instances.push({ i, kind: 'memory', shared, store, hasL1: false, pubsub: false });
    console.log(`seed ${seed} mode memory max=${max} keys=${KEYS.length}`);
  } else {
    const n = 2 + Math.floor(rng() * 3);
    // Every instance of one deployment uses the same kind of store (tiered: all hear invalidations).
    const tiered = rng() < 0.75;
    for (let i = 0; i < n; i++) {
      const kind = pick(tiered ? ['tiered-url', 'tiered-client'] : ['redis-url', 'redis-client']);
      let p = port;
      let jitter = 0;
      if (PROXY && rng() < 0.5) {
        const px = await startProxy(rng);
        proxies.push(px);
        p = px.port;
        jitter = px.jitter;
      }
      const name = `${ns}i${i}`;
      const url = `redis://127.0.0.1:${p}?connectionName=${name}`;
      let client;
      let l2;
      if (kind.endsWith('client')) {
        client = new Redis({ host: '127.0.0.1', port: p, connectionName: name });
        client.on('error', () => {});
        l2 = redisStore({ client });
      } else {
        l2 = redisStore({ url });
      }
      const store = kind.startsWith('tiered')
        ? tieredStore({ l1: memoryStore({ max: 1000, ttl: L1_TTL }), l2 })
        : l2;
      if (store.ready) await store.ready();
      const shared = createSharedCache({ store, ttl: TTL, namespace: ns, onError: () => {} });
      instances.push({
        i,
        kind,
        name,
        client,
        shared,
        store,
        hasL1: kind.startsWith('tiered'),
        pubsub: kind.startsWith('tiered'),
        jitter,
      });
    }
    console.log(
      `seed ${seed} mode redis instances=${instances.map((x) => `${x.i}:${x.kind}${x.jitter ? `+proxy${x.jitter}` : ''}`).join(',')} keys=${KEYS.length}`,
    );
  }
  for (const inst of instances) {
    inst.cached = contextCached('g', (k) => loader(inst, `g:${k}`), { shared: inst.shared });
    inst.batched = contextBatched(
      'g',
      async (keys) => {
        stats.batches++;
        const start = tick();
        const snaps = keys.map((k) => db.get(`g:${k}`));
        await sleep(delay());
        return keys.map((k, j) =>
          rng() < 0.04 ? new LoaderErr(`g:${k}`) : mkValue(`g:${k}`, snaps[j], start),
        );
      },
      { shared: inst.shared },
    );
  }

  function delay() {
    const r = rng();
    if (r < 0.12) return 200 + rng() * 1300; // slow load: the classic stale write race
    if (r < 0.4) return rng() * 60;
    return rng() * 8;
  }
  async function loader(_inst, lk) {
    const s = tick();
    const v = db.get(lk);
    const fail = rng() < 0.04;
    await sleep(delay());
    if (fail) {
      stats.loaderErr++;
      throw new LoaderErr(lk);
    }
    return mkValue(lk, v, s);
  }

  function required(lk, startAt, grace) {
    let req = 0;
    let by;
    for (const w of writes.get(lk) ?? [])
      if (w.resolvedAt !== undefined && w.resolvedAt + grace <= startAt && w.V > req) {
        req = w.V;
        by = w;
      }
    return [req, by];
  }
  function inFault(inst, startAt) {
    return faults.find(
      (f) =>
        f.kind === 'killsub' &&
        f.inst === inst.i &&
        startAt >= f.start - 5 &&
        startAt <= (f.end ?? now()) + L1_TTL + 300,
    );
  }

  function checkValue(inst, lk, value, startAt, how) {
    if (value === undefined) return;
    if (value === null || typeof value !== 'object' || value.k !== lk) {
      violate('wrong-key-value', { inst: inst.i, lk, how, value });
      return;
    }
    const grace = inst.pubsub ? GRACE + (inst.jitter || 0) * 2 : 0;
    const [req, by] = required(lk, startAt, grace);
    if (value.v < req) {
      const detail = {
        inst: inst.i,
        kind: inst.kind,
        lk,
        how,
        got: value.v,
        gotLoadSeq: value.s,
        required: req,
        writeKind: by.kind,
        writeInst: by.inst,
        writeCallSeq: by.callSeq,
        writeResolvedAgo: Math.round(startAt - by.resolvedAt),
        loadStartedBeforeWrite: value.s < by.callSeq,
      };
      const f = inFault(inst, startAt);
      if (f) {
        excused.push({ ...detail, why: `message loss window (${f.kind}), bounded by L1 ttl` });
        return;
      }
      if (!inst.pubsub && value.s < by.callSeq && inst.kind !== 'memory') {
        excused.push({
          ...detail,
          why: 'joined a load started before the write on an instance with no invalidation channel (singleflight)',
        });
        return;
      }
      violate('stale-read', detail);
    }
  }

  function checkRejection(inst, lk, err, how, abortReason) {
    if (err instanceof LoaderErr) return;
    if (abortReason !== undefined && err === abortReason) return;
    violate('bad-rejection', { inst: inst.i, lk, how, err: String(err?.stack ?? err) });
  }

  // ---- operations
  async function opRead(inst) {
    const space = pick(SPACES);
    const k = pick(KEYS);
    const lk = `${space}:${k}`;
    const startAt = now();
    const ac = rng() < 0.08 && !flag('noabort') ? new AbortController() : undefined;
    let reason;
    if (ac)
      setTimeout(() => {
        reason = new Error('client went away');
        stats.aborts++;
        ac.abort(reason);
      }, rng() * 300);
    stats.reads++;
    if (space === 'd') {
      if (rng() < 0.25) {
        let v;
        try {
          v = await inst.shared.get(k);
        } catch (err) {
          violate('get-rejected', { inst: inst.i, lk, err: String(err?.stack ?? err) });
          return;
        }
        checkValue(inst, lk, v, startAt, 'get');
        return;
      }
      const run = () => inst.shared.getOrLoad(k, () => loader(inst, lk));
      try {
        const v = await (ac ? withCacheContext(run, { signal: ac.signal }) : run());
        checkValue(inst, lk, v, startAt, 'getOrLoad');
      } catch (err) {
        checkRejection(inst, lk, err, 'getOrLoad', reason);
      }
      return;
    }
    // group space: contextCached or contextBatched, one request each
    if (rng() < 0.5) {
      try {
        const v = await withCacheContext(
          () => inst.cached(k),
          ac ? { signal: ac.signal } : undefined,
        );
        checkValue(inst, lk, v, startAt, 'contextCached');
      } catch (err) {
        checkRejection(inst, lk, err, 'contextCached', reason);
      }
      return;
    }
    const ks = [...new Set([k, pick(KEYS), pick(KEYS)].slice(0, 1 + Math.floor(rng() * 3)))];
    await withCacheContext(
      async () => {
        await Promise.all(
          ks.map(async (kk) => {
            try {
              const v = await inst.batched(kk);
              checkValue(inst, `g:${kk}`, v, startAt, 'contextBatched');
            } catch (err) {
              checkRejection(inst, `g:${kk}`, err, 'contextBatched', reason);
            }
          }),
        );
      },
      ac ? { signal: ac.signal } : undefined,
    );
  }

  async function opWrite(inst) {
    const space = pick(SPACES);
    const k = pick(KEYS);
    const lk = `${space}:${k}`;
    const V = db.get(lk) + 1;
    db.set(lk, V); // the database write, then (same tick) the cache write
    const callSeq = tick();
    const w = { V, callSeq, callAt: now(), inst: inst.i, kind: undefined };
    if (!writes.has(lk)) writes.set(lk, []);
    writes.get(lk).push(w);
    stats.writes++;
    let p;
    if (space === 'd') {
      if (rng() < 0.35) {
        w.kind = 'set';
        p = inst.shared.set(k, mkValue(lk, V, callSeq));
      } else {
        w.kind = 'delete';
        p = inst.shared.delete(k);
      }
    } else {
      const g = rng() < 0.5 ? inst.cached : inst.batched;
      w.kind = g === inst.cached ? 'cached.invalidate' : 'batched.invalidate';
      p = withCacheContext(() => g.invalidate(k));
    }
    try {
      await p;
      w.resolvedAt = now();
      // Right after it resolved: what Redis / the memory store holds must not be older.
      if (mode === 'redis') void checkRedis(`after ${w.kind}`);
      // After the grace: no instance's L1 may hold an older value (messages delivered).
      setTimeout(() => checkL1(lk), GRACE + MAX_JITTER * 2);
    } catch (err) {
      stats.writeFail++;
      w.failed = String(err?.code ?? err?.name);
      if (!/CONTEXT_CACHE_STORE_(UNAVAILABLE|TIMEOUT)/.test(String(err?.code))) {
        violate('write-rejected-unexpectedly', {
          inst: inst.i,
          lk,
          kind: w.kind,
          err: String(err?.stack ?? err),
        });
      }
    }
  }

  // ---- direct checks
  const keyMap = new Map(); // redis key -> logical key
  const logicalToRedis = new Map();
  const checker =
    mode === 'redis'
      ? new Redis({
          host: '127.0.0.1',
          port,
          commandTimeout: 400,
          maxRetriesPerRequest: 1,
          enableOfflineQueue: true,
          connectionName: `${ns}checker`,
        })
      : undefined;
  checker?.on('error', () => {});
  let checking = false;
  async function checkRedis(why) {
    if (checking || !checker) return;
    checking = true;
    const startAt = now();
    try {
      const keys = (await checker.keys(`${ns}:*`)).filter((x) => !x.endsWith(':lock'));
      if (keys.length === 0) return;
      const raws = await checker.mgetBuffer(...keys);
      stats.redisChecks++;
      keys.forEach((rk, j) => {
        const p = parseRaw(raws[j]);
        if (p.none || p.tomb) return;
        if (p.foreign || p.unparsable) {
          violate('redis-unparsable', { rk });
          return;
        }
        const known = keyMap.get(rk);
        if (known === undefined) {
          keyMap.set(rk, p.k);
          logicalToRedis.set(p.k, rk);
        } else if (known !== p.k) {
          violate('redis-wrong-key', { rk, known, got: p.k });
          return;
        }
        const [req, by] = required(p.k, startAt, 0);
        if (p.v < req) {
          violate('redis-stale-after-write', {
            why,
            rk,
            lk: p.k,
            held: p.v,
            heldLoadSeq: p.s,
            heldVersion: p.version,
            required: req,
            writeKind: by.kind,
            writeInst: by.inst,
            writeCallSeq: by.callSeq,
            loadStartedBeforeWrite: p.s < by.callSeq,
          });
        }
      });
    } catch {
      // Redis paused/stopped: skip this check
    } finally {
      checking = false;
    }
  }
  function checkL1(lk) {
    const startAt = now();
    for (const inst of instances) {
      if (!inst.hasL1) continue;
      const rk = logicalToRedis.get(lk);
      if (rk === undefined) continue;
      const raw = inst.store.peek(rk);
      if (raw === undefined) continue;
      stats.l1Checks++;
      const p = parseRaw(raw);
      if (p.k !== lk) {
        violate('l1-wrong-key', { inst: inst.i, lk, got: p.k });
        continue;
      }
      const [req, by] = required(lk, startAt, GRACE + MAX_JITTER * 2);
      if (p.v < req) {
        const detail = {
          inst: inst.i,
          kind: inst.kind,
          lk,
          held: p.v,
          heldLoadSeq: p.s,
          required: req,
          writeKind: by.kind,
          writeInst: by.inst,
          sinceResolved: Math.round(startAt - by.resolvedAt),
          loadStartedBeforeWrite: p.s < by.callSeq,
        };
        const f = inFault(inst, by.resolvedAt);
        if (f) excused.push({ ...detail, why: `L1 during message-loss window (${f.kind})` });
        else violate('l1-stale-after-write', detail);
      }
    }
  }

  // ---- faults
  const faultKinds =
    mode === 'redis' && FAULTS ? ['stop', 'pause', 'killcmd', 'killsub', 'killall'] : [];
  async function clientList() {
    const txt = await checker.client('LIST');
    return txt
      .split('\n')
      .filter(Boolean)
      .map((line) =>
        Object.fromEntries(
          line.split(' ').map((kv) => {
            const i = kv.indexOf('=');
            return [kv.slice(0, i), kv.slice(i + 1)];
          }),
        ),
      );
  }
  async function fault() {
    const kind = pick(faultKinds);
    const inst = pick(instances);
    const f = { kind, inst: inst.i, start: now() };
    stats.faults[kind] = (stats.faults[kind] ?? 0) + 1;
    faults.push(f);
    try {
      if (kind === 'stop') {
        f.inst = -1;
        process.kill(redisPid, 'SIGSTOP');
        await sleep(300 + rng() * 900);
        process.kill(redisPid, 'SIGCONT');
      } else if (kind === 'pause') {
        f.inst = -1;
        const ms = Math.floor(100 + rng() * 600);
        await checker.call('CLIENT', 'PAUSE', ms, pick(['ALL', 'WRITE']));
        await sleep(ms);
      } else {
        const list = await clientList();
        const mine = list.filter((c) => c.name === inst.name);
        const targets =
          kind === 'killall'
            ? mine
            : mine.filter((c) =>
                kind === 'killsub'
                  ? c.sub !== '0' || c.flags.includes('P')
                  : c.sub === '0' && !c.flags.includes('P'),
              );
        if (kind === 'killall' && inst.pubsub) f.kind = 'killsub'; // the subscriber goes too: message loss window
        for (const c of targets) await checker.client('KILL', 'ID', c.id).catch(() => {});
        await sleep(600);
      }
    } catch (err) {
      console.log('fault error', kind, String(err));
    } finally {
      if (kind === 'stop')
        try {
          process.kill(redisPid, 'SIGCONT');
        } catch {}
      f.end = now();
    }
  }

  // ---- main loop
  const inFlight = new Set();
  const launch = (p) => {
    const q = p.finally(() => inFlight.delete(q));
    inFlight.add(q);
  };
  const end = Math.min(now() + DURATION, GLOBAL_DEADLINE);
  let nextFault = now() + 1500 + rng() * 2500;
  let nextCheck = now() + 50;
  let faultRunning;
  while (now() < end) {
    await sleep(rng() < 0.3 ? 0 : rng() * 12);
    if (inFlight.size > 60) continue;
    const inst = pick(instances);
    stats.ops++;
    if (rng() < 0.22) launch(opWrite(inst));
    else launch(opRead(inst));
    if (faultKinds.length && now() > nextFault && !faultRunning) {
      faultRunning = fault().finally(() => {
        faultRunning = undefined;
      });
      nextFault = now() + 2000 + rng() * 3000;
    }
    if (mode === 'redis' && now() > nextCheck) {
      void checkRedis('periodic');
      nextCheck = now() + 40;
    }
  }
  await faultRunning;
  // drain
  const drainUntil = now() + 8000;
  while (inFlight.size && now() < drainUntil) await sleep(20);
  if (inFlight.size) violate('hung-ops', { count: inFlight.size });
  // final: after quiescence, every instance must read at least the latest resolved write
  await sleep(GRACE + 100);
  if (mode === 'redis') await checkRedis('final');
  const lastFault = faults.reduce((m, f) => Math.max(m, f.end ?? 0), 0);
  if (now() - lastFault < L1_TTL + 300) await sleep(L1_TTL + 300);
  for (const inst of instances) {
    for (const s of SPACES)
      for (const k of KEYS) {
        const lk = `${s}:${k}`;
        const startAt = now();
        try {
          const v =
            s === 'd'
              ? await inst.shared.getOrLoad(k, () => loader(inst, lk))
              : await withCacheContext(() => inst.cached(k));
          checkValue(inst, lk, v, startAt, 'final');
        } catch (err) {
          checkRejection(inst, lk, err, 'final', undefined);
        }
      }
  }
  // close everything
  const closing = [...new Set(instances.map((x) => x.shared))].map((s) => s.close());
  await Promise.race([Promise.allSettled(closing), sleep(5000)]);
  for (const inst of instances) inst.client?.disconnect();
  for (const px of proxies) px.close();
  checker?.disconnect();
  stats.seeds++;
  return { faults: faults.length, excused: excused.length };
}

// ---------------------------------------------------------------- main
const t0 = now();
try {
  if (MODE !== 'memory') startRedis();
  for (let s = FIRST_SEED; s < FIRST_SEED + SEEDS; s++) {
    if (now() > GLOBAL_DEADLINE) break;
    if (MODE === 'memory' || MODE === 'both') {
      const before = violations.length;
      await runSeed(s, 'memory');
      console.log(`  seed ${s} memory: ${violations.length - before} violations`);
    }
    if (MODE === 'redis' || MODE === 'both') {
      const before = violations.length;
      const r = await runSeed(s, 'redis');
      console.log(
        `  seed ${s} redis: ${violations.length - before} violations, faults=${r.faults}`,
      );
    }
  }
} catch (err) {
  violate('harness-crash', { err: String(err?.stack ?? err) });
} finally {
  stopRedis();
}
console.log('\nSTATS', JSON.stringify(stats));
const byKind = {};
for (const v of violations) byKind[v.kind] = (byKind[v.kind] ?? 0) + 1;
console.log('VIOLATIONS by kind', JSON.stringify(byKind));
const exWhy = {};
for (const e of excused) exWhy[e.why] = (exWhy[e.why] ?? 0) + 1;
console.log('EXCUSED (documented staleness)', JSON.stringify(exWhy));
console.log(`elapsed ${Math.round((now() - t0) / 1000)} s`);
setTimeout(() => process.exit(violations.length ? 1 : 0), 100).unref();
process.exitCode = violations.length ? 1 : 0;
