// The micro suite: every contender, every scenario, one process, same run. Each
// scenario first checks every contender's results and load counts (a wrong answer
// stops the run), then times it with mitata. Loaders return ready values: no I/O.
//
//
//   node --expose-gc micro.mjs [--quick] [--json FILE] [--filter REGEXP] [--contender NAME]
//                              [--baseline ENTRY]
//
// After the scenarios, the "user shapes" (ids shape-*): five calls written as a user
// writes them (lib/shapes.mjs), ours against a hand-rolled AsyncLocalStorage map, in
// 9 interleaved rounds. `--baseline ENTRY` adds another build of this package (its ESM
// entry, such as a copy of an older dist/index.js) as a third contender there, so a
// change is measured before and after in one process.
import { tracingChannel } from 'node:diagnostics_channel';
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { getHeapStatistics } from 'node:v8';
import * as contextCache from 'context-cache';
import { do_not_optimize, measure } from 'mitata';
import * as handRolled from './contenders/hand-rolled.mjs';
import { contenders as all } from './contenders/index.mjs';
import { flag, median, option, printTable } from './lib/util.mjs';

const quick = flag('--quick');
const jsonFile = option('--json');
const filter = new RegExp(option('--filter') ?? '.');
// One contender alone: its code is then the only code V8 has seen at every call site it
// shares with the others (AsyncLocalStorage.prototype.run above all).
const only = option('--contender');
const contenders = only === undefined ? all : all.filter((c) => c.name === only);
if (contenders.length === 0) throw new Error(`no contender named ${only}`);
const baseline = option('--baseline');

// 200 ms of samples per trial and round (mitata's default is 642 ms): ~1.5 minutes in all.
const timing = quick
  ? { min_cpu_time: 5e6, min_samples: 4, warmup_samples: 1, batch_samples: 256 }
  : { min_cpu_time: 200e6 };

let seq = 1; // fresh keys, so process-wide caches miss where a new request would
let loads = 0;
const value = (key) => {
  loads++;
  return key;
};
const resolved = (key) => {
  loads++;
  return Promise.resolve(key);
};
const composite = (a, b) => {
  loads++;
  return a * 1000 + b;
};

function expect(ok, what) {
  if (!ok) throw new Error(`correctness check failed: ${what}`);
}

/** Bytes allocated per call of `fn` (min over 5 runs of 10,000 calls, no GC inside). */
function bytesPerCall(fn) {
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    globalThis.gc?.();
    const before = getHeapStatistics().used_heap_size;
    for (let i = 0; i < 10_000; i++) do_not_optimize(fn());
    const after = getHeapStatistics().used_heap_size;
    best = Math.min(best, Math.max(0, after - before) / 10_000);
  }
  return best;
}

const noop = () => 1;
const calls = new Array(1000);

/** A new request that loads 10 fresh keys, one after another; resolves with 45. */
function missPage(c) {
  const get = c.getter('repo', resolved);
  return () =>
    c.request(async () => {
      const base = seq;
      seq += 10;
      let sum = 0;
      for (let i = 0; i < 10; i++) sum += await get(base + i);
      return sum - 10 * base;
    });
}

/**
 * Each scenario: `applies(c)`; `prepare(c)` builds the getters once (as a module would)
 * and returns { check, fn, inRequest?, alloc? }. `check` runs before timing and throws on
 * a wrong result; `inRequest` means `fn` is timed inside one open request that `check`
 * warmed; `alloc` is measured for bytes per call.
 */
const scenarios = [
  {
    id: 'hit-awaited',
    name: 'awaited hit',
    applies: () => true,
    prepare(c) {
      const get = c.getter('user', value);
      let key = 0; // a fresh key per check, so process-wide caches start cold too
      return {
        inRequest: true,
        async check() {
          key = seq++;
          const before = loads;
          expect((await get(key)) === key && (await get(key)) === key, `${c.name}: hit value`);
          expect(loads - before === (c.name === 'no cache' ? 2 : 1), `${c.name}: hit loads once`);
        },
        fn: () => get(key), // mitata awaits the returned promise: one await per call
        alloc: () => get(key),
      };
    },
  },
  {
    id: 'hit-call',
    name: 'hit call (the promise, not awaited)',
    applies: () => true,
    prepare(c) {
      const get = c.getter('user', value);
      let key = 0;
      return {
        inRequest: true,
        async check() {
          key = seq++;
          expect((await get(key)) === key, `${c.name}: hit value`);
          if (c.name === 'context-cache' || c.name === 'hand-rolled ALS Map') {
            const first = get(key);
            expect(get(key) === first, `${c.name}: a hit returns the stored promise itself`);
          }
        },
        fn: () => {
          do_not_optimize(get(key));
        },
      };
    },
  },
  {
    id: 'sync-hit',
    name: 'sync hit',
    applies: (c) => c.syncGetter !== undefined,
    prepare(c) {
      const get = c.syncGetter('setting', value);
      let key = 0;
      return {
        inRequest: true,
        check() {
          key = seq++;
          const before = loads;
          expect(get(key) === key && get(key) === key, `${c.name}: sync hit returns the value`);
          expect(loads - before === (c.name === 'no cache' ? 2 : 1), `${c.name}: sync loads once`);
        },
        fn: () => get(key),
        alloc: () => get(key),
      };
    },
  },
  {
    id: 'composite-hit',
    name: 'composite-key hit (awaited)',
    applies: () => true,
    prepare(c) {
      const get = c.compositeGetter('member', composite);
      let a = 0;
      return {
        inRequest: true,
        async check() {
          a = seq++;
          const before = loads;
          expect((await get(a, 4)) === a * 1000 + 4, `${c.name}: composite value`);
          expect((await get(a, 4)) === a * 1000 + 4, `${c.name}: composite hit value`);
          expect((await get(4, a)) === 4000 + a, `${c.name}: [4, a] is another key`);
          const want = c.name === 'no cache' ? 3 : 2;
          expect(loads - before === want, `${c.name}: composite loads ${loads - before}`);
        },
        fn: () => get(a, 4),
      };
    },
  },
  {
    id: 'miss',
    name: '10 awaited misses, resolved loader, new request',
    applies: () => true,
    prepare(c) {
      const page = missPage(c);
      return {
        async check() {
          const before = loads;
          expect((await page()) === 45, `${c.name}: miss values`);
          expect(loads - before === 10, `${c.name}: 10 misses load 10 times`);
        },
        fn: page,
      };
    },
  },
  {
    // The same misses with a subscriber on the load tracing channel: what tracing costs.
    // Compare with the row above: with no subscriber the request cache only asks
    // `hasSubscribers`, so its 'miss' row is the untraced cost.
    id: 'miss-traced',
    name: '10 awaited misses, with a context-cache:load subscriber',
    applies: (c) => c.name === 'context-cache',
    prepare(c) {
      const get = c.getter('repo', resolved);
      const channel = tracingChannel('context-cache:load');
      let traced = 0;
      const counting = {
        start: () => traced++,
        end() {},
        asyncStart() {},
        asyncEnd() {},
        error() {},
      };
      const page = () =>
        c.request(async () => {
          const base = seq;
          seq += 10;
          let sum = 0;
          for (let i = 0; i < 10; i++) sum += await get(base + i);
          return sum - 10 * base;
        });
      return {
        before: () => channel.subscribe(counting),
        after: () => channel.unsubscribe(counting),
        async check() {
          const before = traced;
          expect((await page()) === 45, `${c.name}: traced miss values`);
          expect(traced - before === 10, `${c.name}: every miss is traced`);
        },
        fn: page,
      };
    },
  },
  {
    id: 'setup',
    name: 'per-request setup',
    applies: (c) => c.scoped,
    prepare(c) {
      return {
        check() {
          expect(c.request(noop) === 1, `${c.name}: request returns fn's value`);
        },
        fn: () => c.request(noop),
      };
    },
  },
  {
    id: 'cold-1000',
    name: '1000 concurrent cold calls, one key, new request',
    applies: () => true,
    prepare(c) {
      const get = c.getter('org', value);
      const burst = () =>
        c.request(async () => {
          const key = seq++;
          for (let i = 0; i < 1000; i++) calls[i] = get(key);
          const values = await Promise.all(calls);
          return values[999] === key;
        });
      return {
        async check() {
          const before = loads;
          expect((await burst()) === true, `${c.name}: every caller gets the value`);
          const want = c.name === 'no cache' ? 1000 : 1;
          expect(
            loads - before === want,
            `${c.name}: 1000 concurrent calls load ${loads - before}`,
          );
        },
        fn: burst,
      };
    },
  },
  {
    id: 'page-40',
    name: 'page: 40 lookups of 4 keys, new request',
    applies: () => true,
    prepare(c) {
      const getUser = c.getter('page-user', value);
      const getRepo = c.getter('page-repo', value);
      const page = () =>
        c.request(async () => {
          const base = seq;
          seq += 4;
          let sum = 0;
          // 10 rows: author, assignee and repo together, then the repo's owner.
          for (let i = 0; i < 10; i++) {
            const [a, b, r] = await Promise.all([
              getUser(base + (i % 3)),
              getUser(base + ((i + 1) % 3)),
              getRepo(base + (i % 1)),
            ]);
            sum += a + b + r + (await getUser(base));
          }
          return sum - 40 * base;
        });
      return {
        async check() {
          const before = loads;
          expect((await page()) === 19, `${c.name}: page values`);
          const want = c.name === 'no cache' ? 40 : 4;
          expect(loads - before === want, `${c.name}: 40 lookups load ${loads - before}`);
        },
        fn: page,
      };
    },
  },
  {
    id: 'no-scope',
    name: 'no scope: pass-through call',
    applies: (c) => ['context-cache', 'hand-rolled ALS Map', 'no cache'].includes(c.name),
    prepare(c) {
      const get = c.getter('outside', value);
      return {
        async check() {
          const before = loads;
          expect((await get(5)) === 5 && (await get(5)) === 5, `${c.name}: pass-through value`);
          expect(loads - before === 2, `${c.name}: outside a request every call loads`);
        },
        fn: () => get(5),
      };
    },
  },
];

// Three interleaved rounds (the contender order rotates each round); a row reports the
// median over rounds of each round's p50, so a burst of noise hits one round, not a row.
const rounds = quick ? 1 : 3;
const prepared = [];
for (const scenario of scenarios) {
  if (!filter.test(scenario.id)) continue;
  const entries = contenders.filter((c) => scenario.applies(c));
  prepared.push({
    scenario,
    entries: entries.map((c) => ({ c, s: scenario.prepare(c), runs: [] })),
  });
}
for (let round = 0; round < rounds; round++) {
  for (const { entries } of prepared) {
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[(i + round) % entries.length];
      const { c, s } = entry;
      const timed = async () => {
        s.before?.(); // a scenario may attach something (a subscriber) for its timing only
        try {
          await s.check(); // before every timing: a contender that goes wrong stops the run
          const stats = await measure(s.fn, timing);
          const bytes = s.alloc === undefined || round > 0 ? undefined : bytesPerCall(s.alloc);
          return { stats, bytes };
        } finally {
          s.after?.();
        }
      };
      const { stats, bytes } = s.inRequest ? await c.request(timed) : await timed();
      entry.runs.push(stats);
      if (bytes !== undefined) entry.bytes = bytes;
    }
  }
}
const rows = [];
for (const { scenario, entries } of prepared) {
  for (const { c, runs, bytes } of entries) {
    rows.push({
      scenario: scenario.id,
      title: scenario.name,
      contender: c.name,
      p50: median(runs.map((r) => r.p50)),
      avg: median(runs.map((r) => r.avg)),
      p99: median(runs.map((r) => r.p99)),
      ...(bytes === undefined ? {} : { bytes }),
    });
  }
}

// A request cache that is not request-scoped in the end-to-end sense: the same `page`
// must also see no entries from an earlier request (checked for the scoped contenders).
for (const c of contenders.filter((c) => c.scoped)) {
  const get = c.getter('isolation', value);
  const before = loads;
  await c.request(() => get(42));
  await c.request(() => get(42));
  expect(loads - before === 2, `${c.name}: a new request must not see the last one's entries`);
}

// --- user shapes --------------------------------------------------------------------
// Each shape is timed as whole runs of its loop (lib/shapes.mjs); a row is ns per call:
// the median over rounds of each round's p50 ÷ the calls per run. The ratio to the
// hand-rolled map is taken per round (both timed in the same round) and reported as the
// median with its lowest and highest round, so the spread shows beside the number.
const SHAPES = [
  [
    'shape-awaited',
    "await getWithContextCache('g', 1, loader) in withCacheContext(async)",
    'awaitedHits',
    'awaited',
  ],
  [
    'shape-sync',
    "getWithContextCacheSync('gs', 1, loader) in withCacheContext",
    'syncHits',
    'sync',
  ],
  [
    'shape-turns',
    "getWithContextCacheSync('ga', 1, loader) and ('gb', 2, loader) in turn, in withCacheContext",
    'syncHitsInTurn',
    'turns',
  ],
  [
    'shape-request',
    "await withCacheContext(() => getWithContextCache('g', 1, loader)): a request, one miss",
    'oneMissRequests',
    'request',
  ],
  ['shape-herd', '1000 concurrent calls of one cold key in a new scope', 'coldHerd', 'herd'],
].filter(([id]) => filter.test(id));
const shapeRows = [];
if (SHAPES.length > 0 && (only === undefined || only === 'context-cache')) {
  const apis = [
    ['context-cache', contextCache],
    [
      'hand-rolled ALS Map',
      {
        withCacheContext: (fn) => handRolled.als.run(new Map(), fn),
        getWithContextCache: handRolled.cached,
        getWithContextCacheSync: handRolled.cachedSync,
      },
    ],
  ];
  if (baseline !== undefined) {
    apis.push(['context-cache (baseline)', await import(pathToFileURL(resolve(baseline)).href)]);
  }
  // One instance of lib/shapes.mjs per contender: its own functions, its own call sites.
  const copies = [];
  for (const [name, api] of apis) {
    const shapes = await import(`./lib/shapes.mjs?c=${encodeURIComponent(name)}`);
    shapes.use(api);
    copies.push({ name, shapes, runs: SHAPES.map(() => []) });
  }
  const want = {
    awaitedHits: [1000, 1],
    syncHits: [10000, 1],
    syncHitsInTurn: [15000, 2],
    oneMissRequests: [100, 100],
    coldHerd: [2, 1],
  };
  const shapeRounds = quick ? 1 : 9;
  // Timed in this process's CPU time, not wall time: on a shared machine a run descheduled
  // in the middle of a sample would otherwise count another process's work as ours. A
  // sample is a whole loop (≥ 20 µs), so the clock's microseconds and its two reads per
  // sample are a rounding error.
  const cpuNow = () => {
    const { user, system } = process.cpuUsage();
    return (user + system) * 1e3;
  };
  const shapeTiming = quick ? timing : { min_cpu_time: 50e6, now: cpuNow };
  for (let round = 0; round < shapeRounds; round++) {
    for (let s = 0; s < SHAPES.length; s++) {
      const [id, , fnName, calls] = SHAPES[s];
      for (let i = 0; i < copies.length; i++) {
        const copy = copies[(i + round) % copies.length];
        const fn = copy.shapes[fnName];
        const before = copy.shapes.loads;
        const result = await fn();
        const [value, loaded] = want[fnName];
        expect(result === value, `${copy.name}: ${id} returned ${result}, not ${value}`);
        expect(
          copy.shapes.loads - before === loaded,
          `${copy.name}: ${id} loaded ${copy.shapes.loads - before} times, not ${loaded}`,
        );
        const stats = await measure(fn, shapeTiming);
        const per = copy.shapes.CALLS[calls];
        copy.runs[s].push({ p50: stats.p50 / per, avg: stats.avg / per, p99: stats.p99 / per });
      }
    }
  }
  const hand = copies.find((c) => c.name === 'hand-rolled ALS Map');
  for (let s = 0; s < SHAPES.length; s++) {
    const [id, title] = SHAPES[s];
    for (const copy of copies) {
      const runs = copy.runs[s];
      const ratios = runs.map((r, round) => r.p50 / hand.runs[s][round].p50);
      shapeRows.push({
        scenario: id,
        title: `user shape: ${title}`,
        contender: copy.name,
        p50: median(runs.map((r) => r.p50)),
        avg: median(runs.map((r) => r.avg)),
        p99: median(runs.map((r) => r.p99)),
        handRolled: { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) },
        rounds: runs.length,
      });
    }
  }
  rows.push(...shapeRows);
}

const node = process.version;
const acf =
  Number(node.slice(1).split('.')[0]) >= 24 &&
  !process.execArgv.includes('--no-async-context-frame');
console.log(`micro: Node ${node}${acf ? ' (AsyncContextFrame)' : ''}${quick ? ', quick' : ''}`);
if (quick) {
  console.log(
    'SMOKE RUN: one round of a few milliseconds per row, on whatever else this machine is\n' +
      'doing. It proves every scenario still runs and answers correctly; its timings are\n' +
      'not measurements (a row can read 2x slower or faster than a real run). For numbers,\n' +
      'run `npm run bench` on a quiet machine.',
  );
}
for (const scenario of scenarios) {
  const mine = rows.filter((r) => r.scenario === scenario.id);
  if (mine.length === 0) continue;
  const ours = mine.find((r) => r.contender === 'context-cache');
  printTable(
    scenario.name,
    ['contender', 'p50', 'avg', '× ours (p50)', 'bytes/call'],
    mine.map((r) => [
      r.contender,
      formatNs(r.p50),
      formatNs(r.avg),
      ours === undefined ? '' : (r.p50 / ours.p50).toFixed(2),
      r.bytes === undefined ? '' : r.bytes.toFixed(0),
    ]),
  );
}
for (const [id] of SHAPES) {
  const mine = shapeRows.filter((r) => r.scenario === id);
  if (mine.length === 0) continue;
  printTable(
    mine[0].title,
    ['contender', 'ns per call (p50)', 'avg', '÷ hand-rolled (median, lowest–highest round)'],
    mine.map((r) => [
      r.contender,
      formatNs(r.p50),
      formatNs(r.avg),
      `${r.handRolled.median.toFixed(2)}× (${r.handRolled.min.toFixed(2)}–${r.handRolled.max.toFixed(2)}, ${r.rounds} rounds)`,
    ]),
  );
}
if (jsonFile !== undefined)
  writeFileSync(jsonFile, JSON.stringify({ node, acf, quick, rows }, null, 2));

function formatNs(ns) {
  if (ns < 1e3) return `${ns.toFixed(1)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(2)} µs`;
  return `${(ns / 1e6).toFixed(2)} ms`;
}
