// The five calls of the "user shapes" section of micro.mjs, written as a user writes
// them: direct calls with a literal group, each in a plain `for` loop. micro.mjs imports
// this module once per contender (`shapes.mjs?c=<name>`), so every contender runs its own
// copy of these functions and no call site here ever sees two libraries: as in an
// application, each call site calls one function.
//
// `use(api)` binds the copy to a library: { withCacheContext(fn), getWithContextCache(
// group, key, loader), getWithContextCacheSync(group, key, loader) }.

let withCacheContext;
let getWithContextCache;
let getWithContextCacheSync;

export function use(api) {
  withCacheContext = api.withCacheContext;
  getWithContextCache = api.getWithContextCache;
  getWithContextCacheSync = api.getWithContextCacheSync;
}

/** Calls per timed run of each shape: a sample is one run; ns per call = sample ÷ calls. */
export const CALLS = { awaited: 1000, sync: 10000, turns: 10000, request: 100, herd: 1 };

export let loads = 0;
const loader = (key) => {
  loads++;
  return key;
};
const herd = new Array(1000);

/** `await getWithContextCache('g', 1, loader)` inside `withCacheContext(async () => …)`. */
export function awaitedHits() {
  return withCacheContext(async () => {
    let sum = 0;
    for (let i = 0; i < 1000; i++) sum += await getWithContextCache('g', 1, loader);
    return sum;
  });
}

/** `getWithContextCacheSync('gs', 1, loader)` inside `withCacheContext(() => …)`. */
export function syncHits() {
  return withCacheContext(() => {
    let sum = 0;
    for (let i = 0; i < 10000; i++) sum += getWithContextCacheSync('gs', 1, loader);
    return sum;
  });
}

/**
 * `getWithContextCacheSync('ga', 1, loader)` and `getWithContextCacheSync('gb', 2,
 * loader)` in turn inside `withCacheContext(() => …)`: two getters called by the same
 * code, as a row asks for its author and then its repository.
 */
export function syncHitsInTurn() {
  return withCacheContext(() => {
    let sum = 0;
    for (let i = 0; i < 5000; i++) {
      sum += getWithContextCacheSync('ga', 1, loader);
      sum += getWithContextCacheSync('gb', 2, loader);
    }
    return sum;
  });
}

/** `await withCacheContext(() => getWithContextCache('g', 1, loader))`: a request, one miss. */
export async function oneMissRequests() {
  let sum = 0;
  for (let i = 0; i < 100; i++)
    sum += await withCacheContext(() => getWithContextCache('g', 1, loader));
  return sum;
}

/** 1000 concurrent calls of one cold key in a new scope. */
export function coldHerd() {
  return withCacheContext(async () => {
    for (let i = 0; i < 1000; i++) herd[i] = getWithContextCache('g', 1, loader);
    const values = await Promise.all(herd);
    return values[0] + values[999];
  });
}
