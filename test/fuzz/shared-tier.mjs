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
// stale L1, Redis never older than the latest resolved write (nor a value older than
// that written to the memoryStore), never another key's value, store faults never fail
// a request, no unhandled rejection.
//
//   node --unhandled-rejections=strict test/fuzz/shared-tier.mjs [--seeds N] [--seed S]
//        [--duration MS] [--mode redis|memory|both] [--nofaults] [--noproxy]
//        [--memmax N] [--noabort] [--budget MS] [--ci] [--redis-port P]
//   (--seed also takes a list, such as --seed 5,7,10)
//
// As written above it is timing-dependent (real delays, real faults, a grace in ms for
// pub/sub): run it by hand after a change to the shared tier (a few minutes; needs a
// build). Exits 1 on a violation.
//
// --ci keeps only what no scheduling can break, so a slow, loaded machine cannot fail it
// (test/shared/fuzz.test.ts runs it in npm test). "Before" and "after" are the order of
// events in this process (a counter), never a time: a write counts for a read that
// starts after the write resolved. For another instance's L1 (tieredStore) the grace in
// ms becomes an event too: after each resolved write a marker is published on a channel
// every tiered instance's subscriber also listens to, and Redis delivers it after the
// invalidation of each write that landed before it (same connection, same order), so an
// instance that heard the marker is held to those writes (one that lost to a newer value
// published nothing and is not). A subscriber that lost its connection may have lost
// messages: on that instance, writes its last heard marker did not cover no longer count
// (the bound by L1's ttl, a time, is left to the manual run). Redis and the memoryStore
// are held to every write resolved before; a load that never ends is allowed 20 s, not 8.
// --redis-port uses a redis-server already listening there (it is sent SIGCONT on exit,
// never stopped) instead of starting one.
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
// --seed 5,7,10: these seeds (--seeds is then ignored)
const SEED_LIST = String(arg('seed', '')).includes(',')
  ? String(arg('seed')).split(',').map(Number)
  : Array.from({ length: SEEDS }, (_, j) => FIRST_SEED + j);
const DURATION = Number(arg('duration', 15000));
const MODE = arg('mode', 'both');
const FAULTS = !flag('nofaults');
const PROXY = !flag('noproxy');
const GLOBAL_DEADLINE = performance.now() + Number(arg('budget', 8 * 60_000));
const CI = flag('ci');
const REDIS_PORT = arg('redis-port');
// How long in-flight operations may take to finish after the run (any one is bounded by
// its loader's 1.5 s, readTimeout and writeTimeout): generous in --ci, for a loaded machine.
const DRAIN = CI ? 20_000 : 8000;

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
  // reads held to a resolved write (any; another tiered instance's)
  judged: 0,
  judgedRemote: 0,
  // --ci
  markers: 0,
  markersHeard: 0,
  subscriberLosses: 0,
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
const port = REDIS_PORT ? Number(REDIS_PORT) : 20000 + Math.floor(Math.random() * 40000);
// On a server shared with earlier runs, namespaces must not meet their keys.
const RUN = REDIS_PORT ? Math.random().toString(36).slice(2, 6) : '';
let DIR; // the server's own directory, when this script starts one
let redisPid;
let ownRedis = false;
/** The given server (--redis-port): its pid, for the SIGSTOP fault. */
async function useRedis() {
  const client = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
  client.on('error', () => {});
  try {
    redisPid = Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1]);
  } finally {
    client.disconnect();
  }
  if (!(redisPid > 0)) throw new Error(`no redis-server pid on port ${port}`);
  console.log(`redis-server pid ${redisPid} port ${port} (given)`);
}
function startRedis() {
  ownRedis = true;
  DIR = mkdtempSync(join(os.tmpdir(), 'context-cache-fuzz-'));
  const pidfile = `${DIR}/redis-${port}.pid`;
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
  // The pidfile may exist a moment before the pid is in it: an empty one reads as 0, and
  // process.kill(0, ...) would signal this whole process group (SIGSTOP: ourselves too).
  const readPid = () => (existsSync(pidfile) ? Number(readFileSync(pidfile, 'utf8').trim()) : 0);
  for (let i = 0; i < 100 && !(readPid() > 0); i++) spawnSync('sleep', ['0.05']);
  redisPid = readPid();
  if (!(Number.isInteger(redisPid) && redisPid > 0)) {
    throw new Error(`redis-server wrote no pid to ${pidfile}`);
  }
  console.log(`redis-server pid ${redisPid} port ${port}`);
}
function stopRedis() {
  if (!redisPid) return;
  try {
    process.kill(redisPid, 'SIGCONT');
  } catch {}
  if (!ownRedis) {
    redisPid = undefined;
    return;
  }
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
  if (DIR) rmSync(DIR, { recursive: true, force: true });
});
process.on('SIGINT', () => {
  stopRedis();
  process.exit(130);
});
process.on('SIGTERM', () => {
  stopRedis();
  process.exit(143);
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
  const ns = `fz${RUN}${seed}${mode[0]}`;
  const KEYS = ['a', 'b', 'c', 'd', 'e', 'f'].slice(0, 3 + Math.floor(rng() * 4));
  const SPACES = ['d', 'g']; // d: shared.getOrLoad/get/set/delete; g: contextCached/contextBatched group 'g'
  const db = new Map(); // logical key -> version
  for (const s of SPACES) for (const k of KEYS) db.set(`${s}:${k}`, 1);
  const writes = new Map(); // logical key -> [{V, callSeq, callAt, resolvedAt, resolvedSeq, landed}]
  const faults = []; // {kind, inst, start, end}
  const _extra = [];
  let finished = false;

  // ---- --ci: markers, and which writes landed
  // A marker is published after each resolved write; every tiered instance's subscriber
  // also listens to its channel. Redis delivers messages to one connection in the order
  // it ran the PUBLISHes, so an instance that heard a marker had heard, before it, the
  // invalidation of every write that landed before the marker was sent.
  const markerChannel = `${ns}:fuzz-marker`;
  const markers = new Map(); // marker id -> tick when sent
  let markerId = 0;
  function sendMarker() {
    if (!checker || !instances.some((x) => x.pubsub)) return;
    const id = ++markerId;
    markers.set(id, tick());
    stats.markers++;
    // A marker whose reply times out (Redis paused) is still delivered later, in order.
    checker.publish(markerChannel, String(id)).catch(() => {});
  }
  /** Listen for markers on the subscriber that tieredStore makes from `client`. */
  function hearMarkers(inst, client) {
    const duplicate = client.duplicate;
    client.duplicate = (...args) => {
      const sub = duplicate.apply(client, args);
      sub.on('message', (channel, text) => {
        if (channel !== markerChannel) return;
        const sent = markers.get(Number(text));
        if (sent === undefined) return;
        stats.markersHeard++;
        if (sent > inst.heard) inst.heard = sent;
        if (inst.l1CheckQueued) return;
        inst.l1CheckQueued = true;
        // After the microtasks of this reply (such as L1 cleared on a resubscription).
        setImmediate(() => {
          inst.l1CheckQueued = false;
          checkL1Ordered(inst);
        });
      });
      // Messages sent while it was away are lost: from then on, only the writes that a
      // marker heard before covers count on this instance (see requiredOrdered).
      sub.on('close', () => {
        if (finished || inst.lossFrom !== undefined) return;
        inst.lossFrom = inst.heard;
        stats.subscriberLosses++;
      });
      inst.markerSubscription = sub.subscribe(markerChannel);
      return sub;
    };
  }
  // The write whose store.set is being called (synchronously, inside set/delete/invalidate).
  let capture;
  /** The store as given, but each write learns whether it landed (false: a newer value won). */
  function seeLanded(store) {
    return {
      ...store,
      set(key, value, ttl, version) {
        const landed = store.set(key, value, ttl, version);
        const w = capture;
        capture = undefined;
        if (w !== undefined) {
          landed.then(
            (l) => {
              w.landed = l;
            },
            () => {},
          );
        }
        return landed;
      },
    };
  }

  /**
   * The memory store as given, but each value is checked as it lands: none may be older
   * than a write resolved before (a load that started before a delete is not written back,
   * even once the store has evicted the delete's tombstone).
   */
  function checkLandings(store) {
    const landing = (key, value, at, landed) => {
      if (landed !== true) return;
      const p = parseRaw(value);
      if (p.tomb || p.k === undefined) return;
      const [req, by] = requiredAll(p.k, at);
      if (p.v < req) {
        violate('store-stale-write', {
          rk: key,
          lk: p.k,
          wrote: p.v,
          loadSeq: p.s,
          required: req,
          writeKind: by.kind,
          writeInst: by.inst,
          loadStartedBeforeWrite: p.s < by.callSeq,
        });
      }
    };
    return {
      ...store,
      set(key, value, ttl, version) {
        const at = started();
        const landed = store.set(key, value, ttl, version);
        landed.then(
          (l) => landing(key, value, at, l),
          () => {},
        );
        return landed;
      },
      setMany(entries) {
        const at = started();
        const landed = store.setMany(entries);
        landed.then(
          (ls) => {
            for (let j = 0; j < entries.length; j++) {
              landing(entries[j].key, entries[j].value, at, ls[j]);
            }
          },
          () => {},
        );
        return landed;
      },
    };
  }

  // ---- instances
  const instances = [];
  const proxies = [];
  if (mode === 'memory') {
    const max = arg('memmax') ? Number(arg('memmax')) : 2 + Math.floor(rng() * 10);
    const store = memoryStore({ max, ...(rng() < 0.5 ? { ttl: 2000 } : {}) });
    const n = 2 + Math.floor(rng() * 3);
    // One process: every "instance" is a request source on the same cache.
    const shared = createSharedCache({
      store: checkLandings(store),
      ttl: TTL,
      namespace: ns,
      onError: () => {},
    });
    for (let i = 0; i < n; i++)
      instances.push({ i, kind: 'memory', shared, store, hasL1: false, pubsub: false, heard: 0 });
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
      const inst = {
        i,
        kind,
        name,
        hasL1: kind.startsWith('tiered'),
        pubsub: kind.startsWith('tiered'),
        jitter,
        heard: 0, // --ci: tick when the last marker this instance heard was sent
        lossFrom: undefined, // --ci: `heard` when its subscriber first lost its connection
      };
      let client;
      let l2;
      if (kind.endsWith('client')) {
        client = new Redis({ host: '127.0.0.1', port: p, connectionName: name });
        client.on('error', () => {});
        l2 = redisStore({ client });
      } else {
        l2 = redisStore({ url });
      }
      if (CI && inst.pubsub) hearMarkers(inst, l2.client);
      const store = kind.startsWith('tiered')
        ? tieredStore({ l1: memoryStore({ max: 1000, ttl: L1_TTL }), l2 })
        : l2;
      if (store.ready) await store.ready();
      if (inst.markerSubscription) await inst.markerSubscription;
      const shared = createSharedCache({
        store: CI && inst.pubsub ? seeLanded(store) : store,
        ttl: TTL,
        namespace: ns,
        onError: () => {},
      });
      instances.push(Object.assign(inst, { client, shared, store }));
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
  /** Where an operation starts: the time, and (--ci) the tick and the markers heard. */
  function started(inst) {
    return { t: now(), seq: tick(), heard: inst?.heard ?? 0 };
  }
  /** The newest write resolved before `at`: what the store (Redis) must not be older than. */
  function requiredAll(lk, at) {
    return CI ? requiredOrdered(undefined, lk, at) : required(lk, at.t, 0);
  }
  /**
   * --ci: the newest write that must show at `inst` for an operation that started `at`.
   * Every write resolved before it counts, but another instance's write on a tiered
   * instance only once a marker sent after it has been heard there, only if it landed
   * (one that lost to a newer value published nothing: the newer one's writer publishes,
   * maybe later), and not if the subscriber was away since that marker.
   */
  function requiredOrdered(inst, lk, at) {
    let req = 0;
    let by;
    for (const w of writes.get(lk) ?? []) {
      if (w.resolvedSeq === undefined || w.resolvedSeq > at.seq || w.V <= req) continue;
      if (inst?.pubsub && w.inst !== inst.i) {
        if (w.landed !== true || !(at.heard > w.resolvedSeq)) continue;
        if (inst.lossFrom !== undefined && w.resolvedSeq > inst.lossFrom) continue;
      }
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

  function checkValue(inst, lk, value, at, how) {
    if (value === undefined) return;
    if (value === null || typeof value !== 'object' || value.k !== lk) {
      violate('wrong-key-value', { inst: inst.i, lk, how, value });
      return;
    }
    const startAt = at.t;
    const grace = inst.pubsub ? GRACE + (inst.jitter || 0) * 2 : 0;
    const [req, by] = CI ? requiredOrdered(inst, lk, at) : required(lk, startAt, grace);
    if (req > 0) {
      stats.judged++;
      if (by.inst !== inst.i && inst.pubsub) stats.judgedRemote++;
    }
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
      const f = CI ? undefined : inFault(inst, startAt);
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
    const at = started(inst);
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
        checkValue(inst, lk, v, at, 'get');
        return;
      }
      const run = () => inst.shared.getOrLoad(k, () => loader(inst, lk));
      try {
        const v = await (ac ? withCacheContext(run, { signal: ac.signal }) : run());
        checkValue(inst, lk, v, at, 'getOrLoad');
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
        checkValue(inst, lk, v, at, 'contextCached');
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
              checkValue(inst, `g:${kk}`, v, at, 'contextBatched');
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
    capture = w; // (--ci) its store.set is called before set/delete/invalidate returns
    try {
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
    } finally {
      capture = undefined;
    }
    try {
      await p;
      w.resolvedAt = now();
      w.resolvedSeq = tick();
      if (CI) sendMarker();
      // Right after it resolved: what Redis / the memory store holds must not be older.
      if (mode === 'redis') void checkRedis(`after ${w.kind}`);
      // After the grace: no instance's L1 may hold an older value (messages delivered).
      // (--ci: checked on each marker heard instead, see checkL1Ordered.)
      if (!CI) setTimeout(() => checkL1(lk), GRACE + MAX_JITTER * 2);
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
    const at = started();
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
        const [req, by] = requiredAll(p.k, at);
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
  /** `inst`'s L1 entry of `lk` (under `rk`), parsed; `undefined` when absent or another key's. */
  function l1Entry(inst, lk, rk) {
    const raw = inst.store.peek(rk);
    if (raw === undefined) return undefined;
    stats.l1Checks++;
    const p = parseRaw(raw);
    if (p.k === lk) return p;
    violate('l1-wrong-key', { inst: inst.i, lk, got: p.k });
    return undefined;
  }
  /** What a stale L1 entry `p` of `lk` is reported with: the write `by` it is older than. */
  function staleL1(inst, lk, p, req, by) {
    return {
      inst: inst.i,
      kind: inst.kind,
      lk,
      held: p.v,
      heldLoadSeq: p.s,
      required: req,
      writeKind: by.kind,
      writeInst: by.inst,
      loadStartedBeforeWrite: p.s < by.callSeq,
    };
  }
  function checkL1(lk) {
    const startAt = now();
    for (const inst of instances) {
      if (!inst.hasL1) continue;
      const rk = logicalToRedis.get(lk);
      if (rk === undefined) continue;
      const p = l1Entry(inst, lk, rk);
      if (p === undefined) continue;
      const [req, by] = required(lk, startAt, GRACE + MAX_JITTER * 2);
      if (p.v < req) {
        const detail = {
          ...staleL1(inst, lk, p, req, by),
          sinceResolved: Math.round(startAt - by.resolvedAt),
        };
        const f = inFault(inst, by.resolvedAt);
        if (f) excused.push({ ...detail, why: `L1 during message-loss window (${f.kind})` });
        else violate('l1-stale-after-write', detail);
      }
    }
  }

  const staleL1Seen = new Set(); // each stale L1 entry is reported once, not on every marker
  /**
   * --ci: after `inst` heard a marker, its L1 must hold nothing older than the writes that
   * count there (see requiredOrdered): their invalidations came before the marker.
   */
  function checkL1Ordered(inst) {
    if (finished || !inst.hasL1) return;
    const at = started(inst);
    for (const [lk, rk] of logicalToRedis) {
      const p = l1Entry(inst, lk, rk);
      if (p === undefined) continue;
      const [req, by] = requiredOrdered(inst, lk, at);
      const seen = `${inst.i} ${lk} ${p.version} ${req}`;
      if (p.v < req && !staleL1Seen.has(seen)) {
        staleL1Seen.add(seen);
        violate('l1-stale-after-write', staleL1(inst, lk, p, req, by));
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
  const drainUntil = now() + DRAIN;
  while (inFlight.size && now() < drainUntil) await sleep(20);
  if (inFlight.size) violate('hung-ops', { count: inFlight.size });
  // final: after quiescence, every instance must read at least the latest resolved write
  const finalRead = async (inst, s, k) => {
    const lk = `${s}:${k}`;
    const at = started(inst);
    try {
      const v =
        s === 'd'
          ? await inst.shared.getOrLoad(k, () => loader(inst, lk))
          : await withCacheContext(() => inst.cached(k));
      checkValue(inst, lk, v, at, 'final');
    } catch (err) {
      checkRejection(inst, lk, err, 'final', undefined);
    }
  };
  if (CI) {
    // No wait by the clock: a last marker, until every tiered instance has heard it
    // (bounded; one that has not is judged by the markers it did hear).
    sendMarker();
    const last = markers.get(markerId) ?? 0;
    const heardUntil = now() + 5000;
    while (now() < heardUntil && instances.some((x) => x.pubsub && x.heard < last)) {
      await sleep(10);
    }
    while (checking) await sleep(5);
    if (mode === 'redis') await checkRedis('final');
    await Promise.all(
      instances.flatMap((inst) => SPACES.flatMap((s) => KEYS.map((k) => finalRead(inst, s, k)))),
    );
  } else {
    await sleep(GRACE + 100);
    if (mode === 'redis') await checkRedis('final');
    const lastFault = faults.reduce((m, f) => Math.max(m, f.end ?? 0), 0);
    if (now() - lastFault < L1_TTL + 300) await sleep(L1_TTL + 300);
    for (const inst of instances) {
      for (const s of SPACES) for (const k of KEYS) await finalRead(inst, s, k);
    }
  }
  finished = true;
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
  if (MODE !== 'memory') {
    if (REDIS_PORT) await useRedis();
    else startRedis();
  }
  for (const s of SEED_LIST) {
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
