// Batching, micro: one batch of 100 cold keys (a new request each time), and 100 hits
// after it (one open request), contextBatched against DataLoader (one instance per
// request, as its README recommends), with contextCached hits beside them. Interleaved
// rounds, medians; the batch function returns ready values (no I/O). Every variant's
// answer is checked before it is timed.
//
// "least request-scoped batcher" is a reference, not a contender: the least code that
// batches in an AsyncLocalStorage scope and keeps one entry per key where other lookups
// of the request find it (what contextBatched must do to share entries with
// contextCached), with no bound, lifetime, counters or error handling. It shows what the
// design itself costs against DataLoader, apart from this library's code.
//
//   node --expose-gc batch.mjs [--quick] [--json FILE]
import { AsyncLocalStorage } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';
import { contextBatched, contextCached, withCacheContext } from 'context-cache';
import DataLoader from 'dataloader';
import { measure } from 'mitata';
import { flag, median, option, printTable } from './lib/util.mjs';

const quick = flag('--quick');
const jsonFile = option('--json');
const rounds = quick ? 1 : 5;
const timing = quick
  ? { min_cpu_time: 5e6, min_samples: 4, warmup_samples: 1, batch_samples: 64 }
  : { min_cpu_time: 300e6 };

const N = 100;
let batchCalls = 0;
const identity = (keys) => {
  batchCalls++;
  return Promise.resolve(keys.map((key) => key * 2));
};
const batched = contextBatched('bench:batched', identity);
const cached = contextCached('bench:cached', (key) => Promise.resolve(key * 2));
const keys = Array.from({ length: N }, (_, i) => i + 1);
const expected = keys.map((key) => key * 2);

const ours = (get) => Promise.all(keys.map((key) => get(key)));

// The reference: a scope holds a Map of entries and the pending batch.
const least = new AsyncLocalStorage();
class Entry {
  constructor(promise) {
    this.settled = false;
    this.value = undefined;
    this.promise = promise;
  }
}
let settle;
const capture = (resolve) => {
  settle = resolve;
};
const tick = Promise.resolve();
function leastGet(key) {
  const scope = least.getStore();
  const found = scope.entries.get(key);
  if (found !== undefined) return found.promise;
  let pending = scope.pending;
  if (pending === undefined) {
    pending = { keys: [], entries: [], settlers: [] };
    scope.pending = pending;
    const batch = pending;
    tick.then(() => process.nextTick(() => leastDispatch(scope, batch)));
  }
  const entry = new Entry(new Promise(capture));
  scope.entries.set(key, entry);
  pending.keys.push(key);
  pending.entries.push(entry);
  pending.settlers.push(settle);
  return entry.promise;
}
function leastDispatch(scope, pending) {
  scope.pending = undefined;
  identity(pending.keys).then((values) => {
    for (let i = 0; i < values.length; i++) {
      const entry = pending.entries[i];
      entry.settled = true;
      entry.value = values[i];
      pending.settlers[i](values[i]);
    }
  });
}
const leastScope = (fn) => least.run({ entries: new Map(), pending: undefined }, fn);
const loaderOf = () => new DataLoader(identity);
const viaLoader = (loader) => Promise.all(keys.map((key) => loader.load(key)));

function same(values, what) {
  if (values.length !== N || values.some((v, i) => v !== expected[i])) {
    throw new Error(`correctness check failed: ${what}`);
  }
}

// Each scenario: check() then time(fn) inside its own setting; the hit scenarios run in
// one open request (or one DataLoader) warmed by their check.
const scenarios = [
  {
    name: '100-key cold batch',
    variants: {
      contextBatched: async (time) => {
        const before = batchCalls;
        same(await withCacheContext(() => ours(batched)), 'contextBatched cold');
        if (batchCalls - before !== 1) throw new Error('contextBatched: not one batch');
        return time(() => withCacheContext(() => ours(batched)));
      },
      'least request-scoped batcher (reference)': async (time) => {
        const before = batchCalls;
        same(await leastScope(() => ours(leastGet)), 'reference cold');
        if (batchCalls - before !== 1) throw new Error('reference: not one batch');
        return time(() => leastScope(() => ours(leastGet)));
      },
      DataLoader: async (time) => {
        const before = batchCalls;
        same(await viaLoader(loaderOf()), 'DataLoader cold');
        if (batchCalls - before !== 1) throw new Error('DataLoader: not one batch');
        return time(() => viaLoader(loaderOf()));
      },
    },
  },
  {
    name: '100 hits after it',
    variants: {
      contextBatched: (time) =>
        withCacheContext(async () => {
          await ours(batched);
          const before = batchCalls;
          same(await ours(batched), 'contextBatched hits');
          if (batchCalls !== before) throw new Error('contextBatched: a hit queued a batch');
          return time(() => ours(batched));
        }),
      'contextCached hits': (time) =>
        withCacheContext(async () => {
          await ours(cached);
          same(await ours(cached), 'contextCached hits');
          return time(() => ours(cached));
        }),
      DataLoader: async (time) => {
        const loader = loaderOf();
        await viaLoader(loader);
        const before = batchCalls;
        same(await viaLoader(loader), 'DataLoader hits');
        if (batchCalls !== before) throw new Error('DataLoader: a hit called the batch');
        return time(() => viaLoader(loader));
      },
    },
  },
];

const results = {};
for (let round = 0; round < rounds; round++) {
  for (const scenario of scenarios) {
    const names = Object.keys(scenario.variants);
    // Rotate the order each round, so no variant always runs first.
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round) % names.length];
      const stats = await scenario.variants[name]((fn) => measure(fn, timing));
      results[scenario.name] ??= {};
      results[scenario.name][name] ??= [];
      results[scenario.name][name].push(stats.avg);
    }
  }
}

const rows = [];
const summary = {};
for (const scenario of scenarios) {
  const medians = Object.fromEntries(
    Object.entries(results[scenario.name]).map(([name, runs]) => [name, median(runs)]),
  );
  summary[scenario.name] = medians;
  const base = medians.DataLoader;
  for (const [name, ns] of Object.entries(medians)) {
    rows.push([scenario.name, name, (ns / 1000).toFixed(2), (base / ns).toFixed(2)]);
  }
}
printTable(
  `Batching micro (Node ${process.version}, ${rounds} interleaved round(s), medians)`,
  ['scenario', 'variant', 'µs per 100 keys', 'speed vs DataLoader'],
  rows,
);
if (jsonFile !== undefined) writeFileSync(jsonFile, `${JSON.stringify(summary, null, 2)}\n`);
