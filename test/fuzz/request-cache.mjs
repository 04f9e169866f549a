// A model-based fuzzer of the request cache under concurrency, run by test/fuzz.test.ts
// against the build (npm test builds first). Each seed starts 2-6 concurrent requests
// (some with a small maxEntries, some outside any scope) whose workers interleave async,
// sync and batched lookups, writes, removals, nested scopes and ends with microtask,
// nextTick and setImmediate delays (no wall clock: a seed replays exactly). An exact
// model of every cache predicts each lookup (hit, join or miss), each loader and batch
// call, the value or error returned and the stats; any difference, an unhandled
// rejection, a load that never settles or an unexpected warning is a violation.
//
//   node --unhandled-rejections=strict test/fuzz/request-cache.mjs [firstSeed] [count]
//        [--budget=ms] [--verbose]
//
// Exits 1 when a seed breaks an invariant, printing the seed (replay it with --verbose
// for the trace of operations before the violation).
import { AsyncLocalStorage } from 'node:async_hooks';
import { mulberry32 } from './prng.mjs';

const lib = await import(new URL('../../dist/index.js', import.meta.url).href);
const {
  withCacheContext,
  withNoCacheContext,
  getContextCache,
  getWithContextCache,
  getWithContextCacheSync,
  getContextData,
  hasContextData,
  setContextData,
  removeContextData,
  contextCached,
  contextBatched,
} = lib;

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const FIRST = Number(args[0] ?? 1);
const COUNT = Number(args[1] ?? 200);
const BUDGET = Number(
  (flags.find((f) => f.startsWith('--budget=')) ?? '--budget=150000').split('=')[1],
);
const VERBOSE = flags.includes('--verbose');

// ---------------------------------------------------------------- PRNG

// ---------------------------------------------------------------- run state
let S; // current seed's state
const als = new AsyncLocalStorage(); // our own scope model: { ownerId, mc, signal }

function rnd() {
  return S.rng();
}
function ri(n) {
  return Math.floor(rnd() * n);
}
function pick(a) {
  return a[ri(a.length)];
}
function chance(p) {
  return rnd() < p;
}

function violation(msg, extra) {
  const v = `seed ${S.seed}: ${msg}`;
  if (!S.violations.some((x) => x.msg === msg))
    S.violations.push({ msg, extra, trace: S.trace.slice(-40) });
  if (VERBOSE) console.log('VIOLATION', v, extra ?? '');
}
function tr(s) {
  S.trace.push(s);
  if (S.trace.length > 400) S.trace.splice(0, 200);
}

process.on('uncaughtException', (err) => {
  if (S) {
    S.uncaught.push(err);
    violation(`uncaught exception / unhandled rejection: ${err?.stack ?? err}`);
  } else {
    console.error('uncaught outside run', err);
    process.exit(2);
  }
});
process.on('warning', (w) => {
  if (S) S.warnings.push(w.code ?? w.name);
});

// ---------------------------------------------------------------- keys
function encPart(v) {
  switch (typeof v) {
    case 'string':
      return `s${v.length}:${v}`;
    case 'number':
      return `n${Object.is(v, -0) ? 0 : v};`;
    case 'bigint':
      return `b${v};`;
    case 'boolean':
      return v ? 't' : 'f';
    case 'undefined':
      return 'u';
    default:
      if (v === null) return 'z';
  }
  throw new Error('bad part');
}
function enc(group, key) {
  const k = Array.isArray(key) ? `A${key.map(encPart).join('')}` : `P${encPart(key)}`;
  return `${group}|${k}`;
}
function show(key) {
  if (Array.isArray(key)) return `[${key.map(show).join(',')}]`;
  if (typeof key === 'string') return JSON.stringify(key);
  if (typeof key === 'bigint') return `${key}n`;
  return String(key);
}

const KEYS = {
  ga: () => pick([0, 1, 2, 3, '1', null, undefined, NaN, true, 2n, -0, [1, 'a'], [1], ['1']]),
  gb: () => pick([0, 1, 2, 3, 4, 5]),
  gc: () => pick([[1, 'a'], [1, 'b'], ['1', 'a'], 's1', 3, [2], [null, undefined]]),
  gd: () => pick([0, 1, 2, 'x', [0, 0]]),
};
function keyFor(group, sid) {
  // scope-specific keys make cross-scope batch mixing visible
  if (chance(0.15) && group !== 'gc') return 1000 + sid * 10 + ri(3);
  return KEYS[group]();
}

// ---------------------------------------------------------------- model
class MCache {
  constructor(id, maxEntries) {
    this.id = id;
    this.ownerId = `C${id}`;
    this.maxEntries = maxEntries;
    this.ended = false;
    this.endedWarnNeeded = false;
    this.real = undefined;
    this.entries = new Map(); // gk -> { state: 'pending'|'settled', token, value } (insertion order)
    this.st = { hits: 0, joins: 0, misses: 0, loads: 0, errors: 0, evictions: 0, batches: 0 };
    this.frozen = undefined;
    this.lookups = 0;
    this.inserts = 0;
  }
  /** Insert `e` as the newest entry (a new insertion, as the cache counts them). */
  append(gk, e) {
    this.inserts++;
    this.entries.delete(gk);
    this.entries.set(gk, e);
    while (this.entries.size > this.maxEntries) {
      const first = this.entries.keys().next().value;
      this.entries.delete(first);
      this.st.evictions++;
    }
  }
  /** A write: in place if the key is there (it keeps its place), else a new insertion. */
  put(gk, e) {
    if (this.entries.has(gk)) this.entries.set(gk, e);
    else this.append(gk, e);
  }
}

let tokenSeq = 0;
function newToken(kind, gk, ownerId, mc, counted) {
  const t = { id: ++tokenSeq, kind, gk, ownerId, mc, counted, done: false, outcome: undefined };
  S.openTokens.add(t);
  return t;
}
// A load settled (in the model, just before the library sees it).
function settleToken(t, ok, valueOrErr) {
  if (t.done) {
    violation(`token ${t.id} settled twice`);
    return;
  }
  t.done = true;
  S.openTokens.delete(t);
  t.outcome = ok ? { ok: true, value: valueOrErr } : { ok: false, err: valueOrErr };
  const mc = t.mc;
  if (!mc) return;
  if (!ok && t.counted && !mc.ended) mc.st.errors++;
  else if (!ok && t.counted && t.kind === 'async' && t.syncThrow && S.countErrAfterEnd)
    mc.st.errors++;
  const e = mc.entries.get(t.gk);
  if (e && e.state === 'pending' && e.token === t) {
    if (ok) mc.entries.set(t.gk, { state: 'settled', value: valueOrErr, token: t });
    else mc.entries.delete(t.gk);
  }
}

function cur() {
  return als.getStore() ?? { ownerId: 'outside', mc: null, signal: undefined };
}
function live(mc) {
  return mc !== null && mc !== undefined && !mc.ended;
}

function statsCheck(where) {
  for (const mc of S.caches) {
    if (!mc.real) continue;
    const got = mc.real.stats();
    const exp = mc.st;
    for (const k of Object.keys(exp)) {
      if (got[k] !== exp[k]) {
        violation(
          `stats.${k} mismatch in cache ${mc.id} (max ${mc.maxEntries}${mc.ended ? ', ended' : ''}) after ${where}: lib ${got[k]} model ${exp[k]}`,
          { got, exp },
        );
        mc.st[k] = got[k]; // resync to avoid cascades
      }
    }
    if (Object.keys(got).sort().join() !== 'batches,errors,evictions,hits,joins,loads,misses')
      violation(`stats() fields ${Object.keys(got)}`);
    const size = mc.real.size;
    const msize = mc.ended ? 0 : mc.entries.size;
    if (size !== msize) {
      violation(
        `size mismatch in cache ${mc.id} (max ${mc.maxEntries}) after ${where}: lib ${size} model ${msize}`,
        { entries: [...mc.entries.keys()] },
      );
    }
    if (size > mc.maxEntries) violation(`size ${size} > maxEntries ${mc.maxEntries}`);
    if (got.hits + got.joins + got.misses !== mc.lookups)
      violation(
        `hits+joins+misses ${got.hits + got.joins + got.misses} != lookups served ${mc.lookups} (cache ${mc.id}) after ${where}`,
      );
    if (got.evictions > mc.inserts) violation(`evictions ${got.evictions} > inserts ${mc.inserts}`);
    if (got.errors > got.loads) violation(`errors ${got.errors} > loads ${got.loads}`);
  }
}

// ---------------------------------------------------------------- loaders
function makeValue(ownerId, gk, t) {
  return { ownerId, gk, tokenId: t.id };
}
class FuzzError extends Error {
  constructor(ownerId, gk, tokenId) {
    super(`fail ${gk} t${tokenId}`);
    this.ownerId = ownerId;
    this.gk = gk;
    this.tokenId = tokenId;
  }
}

// Deterministic "timers": n hops of setImmediate (FIFO, no wall clock), so a seed replays exactly.
function sleep(n) {
  return new Promise((res) => {
    const hop = (k) => (k <= 0 ? res() : setImmediate(hop, k - 1));
    hop(n);
  });
}
function delayPromise(kind) {
  // resolves after microtasks (kind 'micro') or a timer
  if (kind === 'micro') {
    let p = Promise.resolve();
    for (let i = ri(4); i > 0; i--) p = p.then(() => {});
    return p;
  }
  if (kind === 'immediate') return new Promise((r) => setImmediate(r));
  return sleep(1 + ri(6));
}

// The async loader shared by every async lookup. S.pendingLoad is set by the lookup wrapper.
function asyncLoader(group) {
  return function load(key, ctx) {
    const st = cur();
    const gk = enc(group, key);
    const call = S.expectLoad;
    S.loaderCalls++;
    if (!call || call.gk !== gk)
      violation(`async loader for ${gk} called unexpectedly (expected ${call?.gk ?? 'none'})`);
    if (ctx?.signal !== st.signal)
      violation(`loader ctx.signal is not the scope's signal (${gk}, owner ${st.ownerId})`);
    const t = newToken('async', gk, st.ownerId, call?.mc ?? null, call?.counted ?? false);
    if (call) call.token = t;
    if (call?.counted && live(call.mc) && chance(0.06)) {
      const r = rnd();
      const mc = call.mc;
      if (r < 0.4) {
        // set own key while loading
        const v = { ownerId: st.ownerId, gk, tokenId: `reset${++S.setSeq}` };
        tr(`  loader sets own key ${gk}`);
        setContextData(group, key, v);
        mc.put(gk, { state: 'settled', value: v, token: null });
      } else if (r < 0.8) {
        // remove another key
        const k2 = KEYS[group]();
        tr(`  loader removes ${enc(group, k2)}`);
        removeContextData(group, k2);
        mc.entries.delete(enc(group, k2));
      } else if (S.allowLoaderEnd) {
        // end the cache from inside the loader
        tr(`  loader ends cache ${mc.id}`);
        mc.real.end();
        mc.ended = true;
        mc.entries.clear();
      }
    }
    const mode = rnd();
    if (mode < 0.12) {
      // sync value
      const v = makeValue(st.ownerId, gk, t);
      if (call) call.syncResult = { ok: true, value: v };
      return v;
    }
    if (mode < 0.18) {
      const e = new FuzzError(st.ownerId, gk, t.id);
      if (call) call.syncResult = { ok: false, err: e };
      throw e;
    }
    const fail = chance(0.25);
    const p = delayPromise(pick(['micro', 'timer', 'timer', 'immediate'])).then(() => {
      if (fail) throw new FuzzError(st.ownerId, gk, t.id);
      return makeValue(st.ownerId, gk, t);
    });
    // the model sees the outcome just before the library does
    p.then(
      (v) => settleToken(t, true, v),
      (e) => settleToken(t, false, e),
    );
    return p;
  };
}
/** `make(group)` for each group the fuzzer uses, by group. */
const perGroup = (make) => Object.fromEntries(['ga', 'gb', 'gc', 'gd'].map((g) => [g, make(g)]));
const loaders = perGroup(asyncLoader);

function syncLoader(group) {
  return function loadSync(key) {
    const st = cur();
    const gk = enc(group, key);
    S.loaderCalls++;
    const call = S.expectLoad;
    if (!call || call.gk !== gk) violation(`sync loader for ${gk} called unexpectedly`);
    const t = newToken('sync', gk, st.ownerId, null, false);
    t.done = true;
    S.openTokens.delete(t);
    const mc = st.mc;
    if (live(mc) && chance(0.08)) {
      if (chance(0.5)) {
        tr(`  sync loader removes own key`);
        removeContextData(group, key);
        mc.entries.delete(gk);
      } else {
        const v = { ownerId: st.ownerId, gk, tokenId: `sset${++S.setSeq}` };
        tr(`  sync loader sets own key`);
        setContextData(group, key, v);
        mc.put(gk, { state: 'settled', value: v, token: null });
      }
    }
    if (chance(0.04)) {
      if (call) call.syncResult = { promise: true };
      const pr = Promise.reject(new Error('sync loader promise'));
      return pr;
    }
    if (chance(0.15)) {
      const e = new FuzzError(st.ownerId, gk, t.id);
      if (call) call.syncResult = { ok: false, err: e };
      throw e;
    }
    const v = makeValue(st.ownerId, gk, t);
    if (call) call.syncResult = { ok: true, value: v, token: t };
    return v;
  };
}
const syncLoaders = perGroup(syncLoader);

// Batch functions. The model keeps, per (group, owner), the queue of keys not yet dispatched.
const BATCH_MAX = { gb: Infinity, gc: 2 };
function queueOf(group, ownerId) {
  const k = `${group}#${ownerId}`;
  let q = S.queues.get(k);
  if (!q) {
    q = { keys: [], chunks: [] };
    S.queues.set(k, q);
  }
  return q;
}
function batchFn(group) {
  return function batch(keys, ctx) {
    const st = cur();
    const q = queueOf(group, st.ownerId);
    if (q.chunks.length === 0) {
      if (q.keys.length === 0) {
        violation(
          `batch fn of ${group} called in owner ${st.ownerId} with no queued keys: ${keys.map(show)}`,
        );
        return keys.map(() => undefined);
      }
      const max = BATCH_MAX[group];
      for (let i = 0; i < q.keys.length; i += max === Infinity ? q.keys.length : max) {
        q.chunks.push(q.keys.slice(i, max === Infinity ? q.keys.length : i + max));
      }
      q.keys = [];
    }
    const chunk = q.chunks.shift();
    const gotKeys = keys.map((k) => enc(group, k));
    const expKeys = chunk.map((c) => c.gk);
    if (gotKeys.join(' ') !== expKeys.join(' ')) {
      violation(
        `batch of ${group} in owner ${st.ownerId}: keys ${gotKeys.join(' ')} expected ${expKeys.join(' ')}`,
      );
    }
    if (new Set(gotKeys).size !== gotKeys.length) violation(`batch with duplicate keys ${gotKeys}`);
    if (keys.length > BATCH_MAX[group]) violation(`batch larger than maxBatchSize: ${keys.length}`);
    if (ctx?.signal !== st.signal)
      violation(`batch ctx.signal is not the scope's signal (owner ${st.ownerId})`);
    if (live(st.mc)) st.mc.st.batches++;
    S.batchCalls++;
    const tokens = chunk.map((c) => c.token);
    // decide the result
    const _n = tokens.length;
    const outcomes = tokens.map((t) => {
      const r = rnd();
      if (r < 0.15) return { ok: false, err: new FuzzError(st.ownerId, t.gk, t.id) };
      if (r < 0.2) return { ok: true, value: undefined, missing: true };
      return { ok: true, value: makeValue(st.ownerId, t.gk, t) };
    });
    const mode = rnd();
    const apply = () => {
      for (let i = 0; i < tokens.length; i++) {
        settleToken(
          tokens[i],
          outcomes[i].ok,
          outcomes[i].ok ? outcomes[i].value : outcomes[i].err,
        );
      }
    };
    const failAll = (err) => {
      for (const t of tokens) settleToken(t, false, err);
    };
    const asArray = () => outcomes.map((o) => (o.ok ? o.value : o.err));
    const asMap = () => {
      const m = new Map();
      keys.forEach((k, i) => {
        const o = outcomes[i];
        if (o.missing) return;
        const kk = Array.isArray(k) && chance(0.5) ? [...k] : k;
        m.set(kk, o.ok ? o.value : o.err);
      });
      return m;
    };
    if (mode < 0.1) {
      // sync array
      const arr = asArray().map((v, i) => (outcomes[i].missing ? undefined : v));
      apply();
      return arr;
    }
    if (mode < 0.17) {
      const e = new FuzzError(st.ownerId, `batch:${group}`, -1);
      failAll(e);
      throw e;
    }
    if (mode < 0.24) {
      const e = new FuzzError(st.ownerId, `batch:${group}`, -2);
      const p = delayPromise(pick(['micro', 'timer'])).then(() => {
        throw e;
      });
      p.then(undefined, () => failAll(e));
      return p;
    }
    if (mode < 0.29) {
      // wrong length -> TypeError for every key
      const p = delayPromise('micro').then(() => asArray().concat([undefined]));
      p.then(() => failAll('lengthError'));
      return p;
    }
    if (mode < 0.4) {
      // elements that are promises, settled by timers after the array is read
      const elems = outcomes.map((o) => {
        const e = sleep(1 + ri(4)).then(() => (o.ok ? o.value : Promise.reject(o.err)));
        return e;
      });
      for (let i = 0; i < elems.length; i++) {
        elems[i].then(
          (v) => settleToken(tokens[i], true, v),
          (err) => settleToken(tokens[i], false, err),
        );
      }
      return delayPromise('micro').then(() => elems);
    }
    const useMap = chance(0.5);
    const p = delayPromise(pick(['micro', 'timer', 'immediate'])).then(() => {
      if (useMap) return asMap();
      return asArray();
    });
    p.then(apply);
    return p;
  };
}

// ---------------------------------------------------------------- getters (module level, once)
const cachedGetters = {
  ga: contextCached('ga', loaders.ga),
  gb: contextCached('gb', loaders.gb),
  gc: contextCached('gc', loaders.gc),
};
const batchedGetters = {
  gb: contextBatched('gb', batchFn('gb')),
  gc: contextBatched('gc', batchFn('gc'), { maxBatchSize: 2 }),
};

// ---------------------------------------------------------------- result checks
function expectOutcome(desc, p, exp, st) {
  // exp: { kind: 'value', value } | { kind: 'token', token }
  if (!(p instanceof Promise) && !(p && typeof p.then === 'function')) {
    violation(`${desc}: did not return a promise`);
    return Promise.resolve();
  }
  return p.then(
    (v) => {
      if (exp.kind === 'value') {
        if (v !== exp.value)
          violation(
            `${desc}: hit returned ${JSON.stringify(v)} expected ${JSON.stringify(exp.value)}`,
          );
      } else {
        const o = exp.token.outcome;
        if (!o) violation(`${desc}: resolved before its load settled (token ${exp.token.id})`);
        else if (!o.ok)
          violation(`${desc}: resolved with ${JSON.stringify(v)} but its load failed`);
        else if (o.value !== v)
          violation(
            `${desc}: got ${JSON.stringify(v)} expected ${JSON.stringify(o.value)} (token ${exp.token.id})`,
          );
      }
      if (v !== undefined && v !== null && typeof v === 'object') {
        if (v.ownerId !== st.ownerId && !exp.crossOk)
          violation(`${desc}: ISOLATION value from owner ${v.ownerId} in owner ${st.ownerId}`);
      }
      return v;
    },
    (err) => {
      if (exp.kind === 'value') {
        violation(`${desc}: hit rejected ${err}`);
        return;
      }
      const o = exp.token.outcome;
      if (!o) violation(`${desc}: rejected before its load settled: ${err?.stack ?? err}`);
      else if (o.ok) violation(`${desc}: rejected (${err}) but its load succeeded`);
      else if (o.err === 'lengthError') {
        if (!(err instanceof TypeError) || !/values for \d+ keys/.test(err.message))
          violation(`${desc}: expected length TypeError, got ${err}`);
      } else if (o.err !== err) violation(`${desc}: rejected with ${err} expected ${o.err}`);
    },
  );
}

function bg(p) {
  S.outstanding.push(p);
}

// ---------------------------------------------------------------- operations
function opAsyncLookup(ctx) {
  const st = cur();
  const group = pick(['ga', 'ga', 'gb', 'gc', 'gd']);
  const key = keyFor(group, ctx.sid);
  const gk = enc(group, key);
  const mc = st.mc;
  const isLive = live(mc);
  const e = isLive ? mc.entries.get(gk) : undefined;
  const expect = !isLive ? 'pass' : !e ? 'miss' : e.state === 'settled' ? 'hit' : 'join';
  const viaGetter = group !== 'gd' && chance(0.5);
  const desc = `${viaGetter ? 'getter' : 'getWithContextCache'}(${group}, ${show(key)}) [${expect}] owner ${st.ownerId}`;
  tr(desc);
  S.expectLoad =
    expect === 'miss' || expect === 'pass'
      ? { gk, mc: mc ?? null, counted: expect === 'miss' }
      : null;
  const call = S.expectLoad;
  const before = S.loaderCalls;
  let p;
  try {
    p = viaGetter ? cachedGetters[group](key) : getWithContextCache(group, key, loaders[group]);
  } catch (err) {
    violation(`${desc}: threw synchronously ${err?.stack ?? err}`);
    S.expectLoad = null;
    return;
  } finally {
    S.expectLoad = null;
  }
  const called = S.loaderCalls - before;
  if ((expect === 'miss' || expect === 'pass') !== (called === 1) || called > 1) {
    violation(`${desc}: loader called ${called} times`);
  }
  if (isLive) mc.lookups++;
  if (isLive) {
    // count as the model predicts
    if (expect === 'hit') mc.st.hits++;
    else if (expect === 'join') mc.st.joins++;
    else {
      mc.st.misses++;
      mc.st.loads++;
    }
  }
  let exp;
  if (expect === 'hit') exp = { kind: 'value', value: e.value };
  else if (expect === 'join') exp = { kind: 'token', token: e.token };
  else {
    const t = call?.token;
    if (!t) {
      statsCheck(desc);
      return;
    }
    if (call.syncResult) {
      settleToken(
        t,
        call.syncResult.ok,
        call.syncResult.ok ? call.syncResult.value : call.syncResult.err,
      );
      if (expect === 'miss' && call.syncResult.ok && !mc.ended) {
        mc.append(gk, { state: 'settled', value: call.syncResult.value, token: t });
      }
    } else if (expect === 'miss' && !mc.ended) {
      mc.append(gk, { state: 'pending', token: t });
    }
    exp = { kind: 'token', token: t };
  }
  if (isLive && mc.ended) {
    /* loader ended the cache: not done by our loaders */
  }
  statsCheck(desc);
  const ff = chance(0.15);
  if (ff) return; // fire and forget: no handler at all
  const checked = expectOutcome(desc, p, exp, st);
  if (chance(0.5)) return checked; // awaited by caller
  bg(checked);
}

function opSyncLookup(ctx) {
  const st = cur();
  const group = pick(['ga', 'gb', 'gd']);
  const key = keyFor(group, ctx.sid);
  const gk = enc(group, key);
  const mc = st.mc;
  const isLive = live(mc);
  const e = isLive ? mc.entries.get(gk) : undefined;
  const expect = !isLive ? 'pass' : e && e.state === 'settled' ? 'hit' : 'miss';
  const desc = `getWithContextCacheSync(${group}, ${show(key)}) [${expect}${e ? ` ${e.state}` : ''}] owner ${st.ownerId}`;
  tr(desc);
  S.expectLoad = expect === 'hit' ? null : { gk };
  const call = S.expectLoad;
  const before = S.loaderCalls;
  let v, threw;
  try {
    v = getWithContextCacheSync(group, key, syncLoaders[group]);
  } catch (err) {
    threw = err;
  } finally {
    S.expectLoad = null;
  }
  const called = S.loaderCalls - before;
  if ((expect !== 'hit') !== (called === 1))
    violation(`${desc}: sync loader called ${called} times`);
  if (isLive) {
    mc.lookups++;
    if (expect === 'hit') mc.st.hits++;
    else {
      mc.st.misses++;
      mc.st.loads++;
    }
  }
  if (expect === 'hit') {
    if (threw) violation(`${desc}: hit threw ${threw}`);
    else if (v !== e.value)
      violation(`${desc}: hit returned ${JSON.stringify(v)} expected ${JSON.stringify(e.value)}`);
  } else if (call?.syncResult?.promise) {
    if (!(threw instanceof TypeError) || !/getWithContextCache/.test(threw.message))
      violation(`${desc}: promise-returning sync loader gave ${threw} / ${v}`);
    // A refused async result is a failed load.
    if (isLive && !mc.ended) mc.st.errors++;
  } else if (call?.syncResult) {
    const r = call.syncResult;
    if (r.ok) {
      if (threw) violation(`${desc}: threw ${threw?.stack} but loader returned`);
      else if (v !== r.value)
        violation(`${desc}: returned ${JSON.stringify(v)} not the loader's value`);
      if (isLive) {
        if (e && mc.entries.get(gk) === e) {
          mc.entries.set(gk, { state: 'settled', value: r.value, token: r.token });
        } else {
          mc.append(gk, { state: 'settled', value: r.value, token: r.token });
        }
      }
    } else {
      if (threw !== r.err)
        violation(`${desc}: expected the loader's error, got ${threw} / ${JSON.stringify(v)}`);
      if (isLive) mc.st.errors++;
    }
  }
  statsCheck(desc);
}

function opBatched(ctx) {
  const st = cur();
  const group = pick(['gb', 'gc']);
  const many = chance(0.35);
  const keys = many
    ? Array.from({ length: 1 + ri(5) }, () => keyFor(group, ctx.sid))
    : [keyFor(group, ctx.sid)];
  const mc = st.mc;
  const isLive = live(mc);
  const q = queueOf(group, st.ownerId);
  const exps = [];
  const descs = [];
  for (const key of keys) {
    const gk = enc(group, key);
    let exp, what;
    const queued = q.keys.find((c) => c.gk === gk);
    if (isLive) {
      const e = mc.entries.get(gk);
      mc.lookups++;
      if (e && e.state === 'settled') {
        what = 'hit';
        mc.st.hits++;
        exp = { kind: 'value', value: e.value };
      } else if (e) {
        what = 'join';
        mc.st.joins++;
        exp = { kind: 'token', token: e.token };
      } else if (queued) {
        what = 'rejoin';
        mc.st.joins++;
        mc.append(gk, { state: 'pending', token: queued.token });
        exp = { kind: 'token', token: queued.token };
      } else {
        what = 'miss';
        mc.st.misses++;
        mc.st.loads++;
        const t = newToken('batch', gk, st.ownerId, mc, true);
        q.keys.push({ gk, token: t });
        mc.append(gk, { state: 'pending', token: t });
        exp = { kind: 'token', token: t };
      }
    } else if (queued) {
      what = 'pass-join';
      exp = { kind: 'token', token: queued.token };
    } else {
      what = 'pass';
      const t = newToken('batch', gk, st.ownerId, mc ?? null, false);
      q.keys.push({ gk, token: t });
      exp = { kind: 'token', token: t };
    }
    exps.push(exp);
    descs.push(`${show(key)}:${what}`);
  }
  const desc = `batched ${group}${many ? '.many' : ''}(${descs.join(' ')}) owner ${st.ownerId}`;
  tr(desc);
  let p;
  try {
    p = many ? batchedGetters[group].many(keys) : batchedGetters[group](keys[0]);
  } catch (err) {
    violation(`${desc}: threw synchronously ${err?.stack ?? err}`);
    return;
  }
  statsCheck(desc);
  if (!many) {
    if (chance(0.15)) return; // fire and forget
    const c = expectOutcome(desc, p, exps[0], st);
    if (chance(0.5)) return c;
    bg(c);
    return;
  }
  if (chance(0.15)) return; // fire and forget: a failure must not be unhandled
  const c = p.then(
    (vals) => {
      if (!Array.isArray(vals) || vals.length !== keys.length) {
        violation(`${desc}: many() gave ${vals}`);
        return;
      }
      vals.forEach((v, i) => {
        const exp = exps[i];
        const want =
          exp.kind === 'value'
            ? exp.value
            : exp.token.outcome?.ok
              ? exp.token.outcome.value
              : Symbol('x');
        if (v !== want)
          violation(
            `${desc}: many()[${i}] = ${JSON.stringify(v)} expected ${JSON.stringify(want)}`,
          );
        if (v && typeof v === 'object' && v.ownerId !== st.ownerId)
          violation(`${desc}: ISOLATION in many()`);
      });
    },
    (err) => {
      // first failing key's error: must be the error of some failed key of this call
      const fails = exps.filter(
        (e) => e.kind === 'token' && e.token.outcome && !e.token.outcome.ok,
      );
      if (fails.length === 0) violation(`${desc}: many() rejected (${err}) but no key failed`);
      else if (
        !fails.some(
          (f) =>
            f.token.outcome.err === err ||
            (f.token.outcome.err === 'lengthError' && err instanceof TypeError),
        )
      ) {
        violation(`${desc}: many() rejected with ${err} which is no failed key's error`);
      }
    },
  );
  if (chance(0.5)) return c;
  bg(c);
}

function opData(ctx) {
  const st = cur();
  const group = pick(['ga', 'gb', 'gc', 'gd']);
  const key = keyFor(group, ctx.sid);
  const gk = enc(group, key);
  const mc = st.mc;
  const isLive = live(mc);
  const r = rnd();
  if (mc?.ended) mc.endedWarnNeeded = true;
  if (r < 0.3) {
    const v = { ownerId: st.ownerId, gk, tokenId: `set${++S.setSeq}` };
    const viaPrime = group !== 'gd' && chance(0.4);
    tr(`${viaPrime ? 'prime' : 'set'}(${group}, ${show(key)}) owner ${st.ownerId}`);
    if (viaPrime)
      (batchedGetters[group] && chance(0.5) ? batchedGetters[group] : cachedGetters[group]).prime(
        key,
        v,
      );
    else setContextData(group, key, v);
    if (isLive) {
      mc.put(gk, { state: 'settled', value: v, token: null });
    }
  } else if (r < 0.55) {
    const viaInv = group !== 'gd' && chance(0.5);
    tr(`${viaInv ? 'invalidate' : 'remove'}(${group}, ${show(key)}) owner ${st.ownerId}`);
    if (viaInv) {
      const p = (
        batchedGetters[group] && chance(0.5) ? batchedGetters[group] : cachedGetters[group]
      ).invalidate(key);
      bg(p.then(undefined, (err) => violation(`invalidate rejected ${err}`)));
    } else removeContextData(group, key);
    if (isLive) mc.entries.delete(gk);
  } else {
    const e = isLive ? mc.entries.get(gk) : undefined;
    const want = e && e.state === 'settled' ? e.value : undefined;
    const has = hasContextData(group, key);
    const got = getContextData(group, key);
    tr(`get/has(${group}, ${show(key)}) owner ${st.ownerId} -> ${has}`);
    if (has !== (e?.state === 'settled'))
      violation(
        `hasContextData(${group}, ${show(key)}) = ${has}, model ${e?.state ?? 'absent'} (owner ${st.ownerId}, max ${mc?.maxEntries})`,
      );
    if (got !== want)
      violation(
        `getContextData(${group}, ${show(key)}) = ${JSON.stringify(got)} expected ${JSON.stringify(want)} (owner ${st.ownerId})`,
      );
  }
  statsCheck('data op');
}

function opInvalid(_ctx) {
  const st = cur();
  const bad = pick([
    () => getWithContextCache('ga', {}, loaders.ga),
    () => getWithContextCache('ga', Symbol('s'), loaders.ga),
    () => getWithContextCache('ga', [1, {}], loaders.ga),
    () => getWithContextCache('', 1, loaders.ga),
    () => getWithContextCache('ga', 1, 'nope'),
    () => getWithContextCache(7, 1, loaders.ga),
    () => getWithContextCacheSync('ga', new Date(), syncLoaders.ga),
    () => getWithContextCacheSync('ga', 1, null),
    () => cachedGetters.ga({ id: 1 }),
    () => batchedGetters.gb({ id: 1 }),
    () => batchedGetters.gb.many(3),
    () => setContextData('gd', () => 1, 1),
    () => getContextData('', 1),
  ]);
  tr(`invalid call owner ${st.ownerId}`);
  try {
    bad();
    violation(`invalid call did not throw: ${bad}`);
  } catch (err) {
    if (!(err instanceof TypeError)) violation(`invalid call threw non-TypeError ${err}`);
  }
  statsCheck('invalid call');
}

function opBurst(_ctx) {
  // many quick synchronous operations: exercises the eviction order's upkeep
  const st = cur();
  const mc = st.mc;
  if (!live(mc)) return;
  const n = 200 + ri(3000);
  tr(`burst ${n} in cache ${mc.id} (max ${mc.maxEntries})`);
  for (let i = 0; i < n; i++) {
    const group = pick(['gd', 'gd', 'ga', 'gb']);
    const key = chance(0.7) ? ri(40) : [ri(5), 'b'];
    const gk = enc(group, key);
    const r = rnd();
    if (r < 0.35) {
      const v = { ownerId: st.ownerId, gk, tokenId: `b${++S.setSeq}` };
      setContextData(group, key, v);
      mc.put(gk, { state: 'settled', value: v, token: null });
    } else if (r < 0.55) {
      removeContextData(group, key);
      mc.entries.delete(gk);
    } else {
      const e = mc.entries.get(gk);
      const want = e && e.state === 'settled' ? e.value : undefined;
      const got = getContextData(group, key);
      if (got !== want) {
        violation(
          `burst: getContextData(${gk}) = ${JSON.stringify(got)} expected ${JSON.stringify(want)} at step ${i} (max ${mc.maxEntries})`,
        );
        break;
      }
    }
    if (mc.real.size !== mc.entries.size) {
      violation(
        `burst: size ${mc.real.size} model ${mc.entries.size} at step ${i} (max ${mc.maxEntries})`,
      );
      break;
    }
  }
  statsCheck('burst');
}

function checkCurrentCache() {
  const st = cur();
  const c = getContextCache();
  if (live(st.mc)) {
    if (c !== st.mc.real)
      violation(`getContextCache() is not the scope's cache (owner ${st.ownerId})`);
  } else if (c !== undefined)
    violation(`getContextCache() returned a cache where none should be (owner ${st.ownerId})`);
}

async function delay() {
  const r = rnd();
  if (r < 0.4) {
    for (let i = ri(5); i >= 0; i--) await null;
  } else if (r < 0.6) await new Promise((res) => setImmediate(res));
  else if (r < 0.9) await sleep(1 + ri(4));
  else await new Promise((res) => process.nextTick(res));
}

let cacheSeq = 0;
let noSeq = 0;
function openCache(fn, opts) {
  const parent = cur();
  if (live(parent.mc)) {
    // reuse: options ignored
    return withCacheContext(() => als.run({ ...parent }, fn), opts);
  }
  const maxEntries = opts?.maxEntries ?? 10000;
  const mc = new MCache(++cacheSeq, maxEntries);
  S.caches.push(mc);
  let signal = opts?.signal ?? parent.signal;
  if (typeof signal === 'function') signal = signal();
  return withCacheContext(() => {
    mc.real = getContextCache();
    if (!mc.real) violation('no cache inside withCacheContext');
    return als.run({ ownerId: mc.ownerId, mc, signal }, fn);
  }, opts);
}
function openNoCache(fn) {
  const parent = cur();
  if (!parent.mc) return withNoCacheContext(() => als.run({ ...parent }, fn));
  const ownerId = `N${++noSeq}`;
  return withNoCacheContext(() => als.run({ ownerId, mc: null, signal: parent.signal }, fn));
}

async function worker(ctx, steps, depth) {
  for (let i = 0; i < steps; i++) {
    S.ops++;
    const r = rnd();
    let p;
    if (r < 0.25) p = opAsyncLookup(ctx);
    else if (r < 0.35) opSyncLookup(ctx);
    else if (r < 0.55) p = opBatched(ctx);
    else if (r < 0.68) opData(ctx);
    else if (r < 0.69) opInvalid(ctx);
    else if (r < 0.7) opBurst(ctx);
    else if (r < 0.73) checkCurrentCache();
    else if (r < 0.77 && depth < 3) {
      const kind = ri(3);
      const sub = () => worker(ctx, 2 + ri(5), depth + 1);
      tr(`nest ${['With', 'WithNo', 'With(WithNo)'][kind]} from owner ${cur().ownerId}`);
      const opts = chance(0.5) ? { maxEntries: 1 + ri(4) } : undefined;
      if (kind === 0) p = openCache(sub, opts);
      else if (kind === 1) p = openNoCache(sub);
      else p = openNoCache(() => openCache(sub, opts));
      if (chance(0.3)) {
        bg(p);
        p = undefined;
      }
    } else if (r < 0.78) {
      const st = cur();
      if (live(st.mc) && chance(0.3)) {
        tr(`end cache ${st.mc.id}`);
        st.mc.real.end();
        st.mc.ended = true;
        st.mc.entries.clear();
        if (getContextCache() !== undefined)
          violation('getContextCache() after end() is not undefined');
      }
    } else p = delay();
    if (p && chance(0.8)) await p;
    else if (p) bg(Promise.resolve(p));
    if (chance(0.3)) await delay();
  }
}

async function request(sid) {
  const ctx = { sid };
  const ac = new AbortController();
  const kind = rnd();
  const workers = () => {
    const n = 1 + ri(3);
    return Promise.all(Array.from({ length: n }, () => worker(ctx, 5 + ri(20), 0)));
  };
  if (kind < 0.1) {
    // outside any scope
    return als.run({ ownerId: 'outside', mc: null, signal: undefined }, workers);
  }
  const opts = { signal: chance(0.3) ? () => ac.signal : ac.signal };
  if (chance(0.5)) opts.maxEntries = 1 + ri(6);
  return openCache(workers, opts);
}

async function runSeed(seed) {
  S = {
    seed,
    rng: mulberry32(seed * 2654435761),
    violations: [],
    trace: [],
    caches: [],
    queues: new Map(),
    openTokens: new Set(),
    outstanding: [],
    loaderCalls: 0,
    batchCalls: 0,
    expectLoad: null,
    setSeq: 0,
    ops: 0,
    uncaught: [],
    warnings: [],
    allowLoaderEnd: true,
  };
  const nreq = 2 + ri(5);
  const reqs = [];
  for (let i = 0; i < nreq; i++) {
    reqs.push(request(i + 1));
    if (chance(0.3)) await delay();
  }
  await Promise.all(
    reqs.map((p) => p.catch((err) => violation(`request rejected: ${err?.stack ?? err}`))),
  );
  // let every load settle
  for (let i = 0; i < 200 && (S.openTokens.size > 0 || S.outstanding.length > 0); i++) {
    const out = S.outstanding.splice(0);
    await Promise.all(
      out.map((p) =>
        Promise.resolve(p).catch((err) => violation(`outstanding rejected ${err?.stack ?? err}`)),
      ),
    );
    await new Promise((r) => setTimeout(r, 10));
  }
  if (S.openTokens.size > 0)
    violation(
      `${S.openTokens.size} loads never settled: ${[...S.openTokens].map((t) => `${t.gk}/${t.kind}`).join(' ')}`,
    );
  await new Promise((r) => setImmediate(r));
  statsCheck('end of seed');
  for (const [k, q] of S.queues)
    if (q.keys.length || q.chunks.length)
      violation(`queue ${k} never dispatched: ${q.keys.map((c) => c.gk)}`);
  // warnings: one CONTEXT_CACHE_ENDED per ended cache used after its end at most
  const ended = S.warnings.filter((w) => w === 'CONTEXT_CACHE_ENDED').length;
  const bad = S.warnings.filter((w) => w !== 'CONTEXT_CACHE_ENDED');
  if (bad.length) violation(`unexpected warnings: ${bad.join(',')}`);
  const endedCaches = S.caches.filter((c) => c.ended).length;
  if (ended > endedCaches)
    violation(`${ended} CONTEXT_CACHE_ENDED warnings for ${endedCaches} ended caches`);
  return S;
}

// ---------------------------------------------------------------- main
const t0 = Date.now();
let ran = 0,
  totalOps = 0,
  failed = 0;
const failures = [];
for (let seed = FIRST; seed < FIRST + COUNT; seed++) {
  if (Date.now() - t0 > BUDGET) break;
  const s = await runSeed(seed);
  ran++;
  totalOps += s.ops;
  if (s.violations.length) {
    failed++;
    failures.push(s);
    console.log(`\n=== seed ${seed}: ${s.violations.length} violation(s), ${s.ops} ops`);
    for (const v of s.violations.slice(0, 5)) {
      console.log(' -', v.msg);
      if (VERBOSE) console.log(`   trace:\n     ${v.trace.join('\n     ')}`);
    }
  }
}
console.log(
  `\nran ${ran} seeds (${FIRST}..${FIRST + ran - 1}), ${totalOps} ops, ${failed} failing, ${Date.now() - t0} ms`,
);
const summary = new Map();
for (const f of failures)
  for (const v of f.violations) {
    const k = v.msg.replace(/\d+/g, 'N').slice(0, 120);
    if (!summary.has(k)) summary.set(k, []);
    summary.get(k).push(f.seed);
  }
for (const [k, seeds] of summary)
  console.log(`${seeds.length}x  ${k}   seeds ${seeds.slice(0, 8).join(',')}`);
process.exit(failed ? 1 : 0);
