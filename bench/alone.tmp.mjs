import { run, bench } from 'mitata';
import { AsyncLocalStorage } from 'node:async_hooks';
import { withCacheContext } from 'context-cache';
const als = new AsyncLocalStorage();
const noop = () => 1;
let clock = Date.now();
class Nine { constructor(s) { this.context = undefined; this.contents = undefined; this.flags = 0; this.cache = this; this.signalValue = s; this.signalSource = undefined; this.lifetime = 1; this.maxEntries = 2; this.deadline = clock + 1; } }
const which = process.argv[2];
const cases = {
  ours: () => withCacheContext(noop),
  hand: () => als.run(new Map(), noop),
  nine: () => als.run(new Nine(undefined), noop),
  getnine: () => { const p = als.getStore(); if (p !== undefined) return noop(); return als.run(new Nine(p?.signal), noop); },
  obj: () => als.run({}, noop),
};
bench(which, cases[which]);
await run({ format: 'quiet' }).then((r) => console.log(which, r.benchmarks[0].runs[0].stats.p50.toFixed(1)));
