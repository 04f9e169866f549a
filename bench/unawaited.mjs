// What the "a failed lookup nobody awaits is never an unhandled rejection" rule costs:
// two builds of the package in one process, same run, interleaved rounds. The rule adds
// a handler to the promise of a lookup that passes through (no scope, caching off, cache
// ended) when its loader returned a promise (a plain value cannot fail); a hit returns
// the stored promise exactly as before.
//
//   npm run build
//   node bench/unawaited.mjs --base PATH/TO/OLD/dist/index.js [--current dist/index.js] [--quick]
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { do_not_optimize, measure } from 'mitata';
import { flag, median, option, printTable } from './lib/util.mjs';

const base = option('--base');
if (base === undefined) throw new Error('pass --base PATH to the dist/index.js to compare with');
const current = option('--current') ?? new URL('../dist/index.js', import.meta.url).pathname;
const timing = flag('--quick')
  ? { min_cpu_time: 20e6, min_samples: 8, warmup_samples: 2 }
  : { min_cpu_time: 200e6 };
const rounds = flag('--quick') ? 3 : 7;

const builds = {
  before: await import(pathToFileURL(resolve(base)).href),
  after: await import(pathToFileURL(resolve(current)).href),
};

const ready = (key) => key;
const resolved = (key) => Promise.resolve(key);
const BATCH = 100;

/** Each scenario: the call to time, and whether it is timed inside a request scope. */
function scenarios(lib) {
  const getUser = lib.contextCached('bench-user', ready);
  return {
    'hit (getWithContextCache)': {
      scoped: true,
      fn: () => lib.getWithContextCache('bench', 1, ready),
    },
    'hit (contextCached getter)': { scoped: true, fn: () => getUser(1) },
    'pass-through, no scope, value': {
      scoped: false,
      fn: () => lib.getWithContextCache('bench', 1, ready),
    },
    'pass-through, no scope, promise': {
      scoped: false,
      fn: () => lib.getWithContextCache('bench', 1, resolved),
    },
    'pass-through, withNoCacheContext, promise': {
      scoped: true,
      fn: () => lib.withNoCacheContext(() => lib.getWithContextCache('bench', 1, resolved)),
    },
  };
}

/** Time `scenario` of `lib`, inside a request scope (warmed: the key is loaded) if scoped. */
function time(lib, { scoped, fn }) {
  // Batches of BATCH calls, then one await: the promise jobs a batch queued (the
  // rule's handler among them) run inside the sample, as they would for a caller, and
  // no sync loop piles up millions of them.
  const run = () =>
    measure(async () => {
      let last;
      for (let i = 0; i < BATCH; i++) last = fn();
      do_not_optimize(await last);
    }, timing);
  if (!scoped) return run();
  return lib.withCacheContext(() => {
    fn();
    return run();
  });
}

const table = { before: scenarios(builds.before), after: scenarios(builds.after) };
const names = Object.keys(table.before);
const samples = Object.fromEntries(names.map((n) => [n, { before: [], after: [] }]));
for (let round = 0; round < rounds; round++) {
  for (const name of names) {
    for (const which of round % 2 === 0 ? ['before', 'after'] : ['after', 'before']) {
      const stats = await time(builds[which], table[which][name]);
      samples[name][which].push(stats.avg);
    }
  }
}
printTable(
  `Lookups, ns per call (batches of ${BATCH}, median of ${rounds} interleaved rounds; Node ${process.version})`,
  ['scenario', 'before', 'after', 'after / before'],
  names.map((name) => {
    const before = median(samples[name].before) / BATCH;
    const after = median(samples[name].after) / BATCH;
    return [name, before.toFixed(1), after.toFixed(1), `${(after / before).toFixed(3)}x`];
  }),
);
