/**
 * `contextBatched`: DataLoader's batching carried by the request scope. A miss queues
 * its key in the pending batch of its own scope; the batch is dispatched once the code
 * running now and the promise jobs it queued have run, with the unique keys in
 * first-asked order. The entries are the request cache's, so a batched load is a hit
 * for `contextCached` / `getWithContextCache` of the same group and the other way round.
 *
 * Nothing here is made per request: a getter keeps its pending batches in a map keyed
 * by the scope they belong to, and each batch leaves that map when it is dispatched.
 */

import { checkTimeout, LoadTimeoutError, withDeadline } from './deadline.js';
import { traceBatch, tracingBatches } from './diagnostics.js';
import {
  type BatchedEntry,
  type Cache,
  EMPTY_CONTEXT,
  isThenable,
  looseEntry,
} from './ephemeral.js';
import { claimGroup } from './groups.js';
import { type CacheKey, checkGroup, encodeComposite, mapKeyOf } from './keys.js';
import { currentScope, type LoaderContext, type ScopeState } from './scope.js';
import { batchFailure, type SharedCache, type SharedGroupView } from './shared/types.js';
import { checkOptionNames, describe, isCount, labelCalls } from './warnings.js';
import { groupTiers } from './wrap.js';

const FN = 'contextBatched';

/**
 * What a batch function receives and returns: the unique keys of one batch (in the
 * order they were first asked for) and the loader context (`{ signal }` of the scope
 * the keys were asked in); it resolves to one value or `Error` per key, in the keys'
 * order, or to a `Map` from key to value.
 */
export type BatchFunction<K extends CacheKey, V> = (
  keys: readonly K[],
  ctx: LoaderContext,
) => PromiseLike<ReadonlyArray<V | Error> | ReadonlyMap<K, V>>;

/** Options of `contextBatched`. */
export interface ContextBatchedOptions<V> {
  /**
   * At most this many keys per call of the batch function (a positive integer, or
   * `Infinity`, the default); a larger batch is split into calls that run concurrently.
   */
  maxBatchSize?: number;
  /** A shared tier behind the request cache, made by `createSharedCache()`. */
  shared?: SharedCache<V>;
  /**
   * How long one call of the batch function may take, in ms. Past it, each key of that
   * call is rejected with a `LoadTimeoutError` (code `CONTEXT_CACHE_LOAD_TIMEOUT`)
   * naming the group, the key and the limit, and is not cached: the next call loads it
   * again. Default: none.
   */
  timeout?: number;
}

/** A getter made by `contextBatched`. */
export interface ContextBatchedFunction<K extends CacheKey, V> {
  /** The value of `key`: from the request cache, else through the next batch. */
  (key: K): Promise<V>;
  /**
   * The values of `keys`, in their order, loaded through one batch (plus hits). Rejects
   * like `Promise.all`: with the error of the first key to fail.
   */
  many(keys: readonly K[]): Promise<V[]>;
  /**
   * Drop `key` from the request cache at once and from the shared tier, if any. The
   * promise resolves when the shared store has dropped the key and other instances
   * have been told; it rejects when the shared store could not be reached.
   */
  invalidate(key: K): Promise<void>;
  /** Store `value` for `key` in the request cache, replacing any value there. */
  prime(key: K, value: V): void;
}

/** What the executor below hands over: set and read right away, cleared at dispatch. */
let nextResolve: ((value: unknown) => void) | undefined;

/**
 * One executor for every queued key's promise, so queuing a key makes no closure. Only
 * `resolve` is kept: a failed key is resolved with a rejected promise, which rejects it.
 */
function executor(resolve: (value: unknown) => void): void {
  nextResolve = resolve;
}

/**
 * The keys one scope has queued for one getter since its last dispatch, in parallel
 * arrays (one small allocation per array, not one object per key).
 */
class Pending {
  readonly owner: object;
  readonly scope: ScopeState | undefined;
  /** `scope.cache.removals` when the batch opened (see `queue`). */
  readonly removals: number;
  readonly keys: CacheKey[] = [];
  /** Each key's resolve function. */
  readonly settlers: ((value: unknown) => void)[] = [];
  /**
   * Each key's entry, whose `promise` is the key's: the request cache's when it serves,
   * else a loose one.
   */
  readonly entries: BatchedEntry[] = [];
  /**
   * The queued keys' indexes by map key, primitive and composite apart (an encoded
   * composite key is a string, which may equal a string key), made when an entry lookup
   * cannot tell whether a key is queued already: without a serving cache, or after an
   * entry was dropped.
   */
  byKey: Map<unknown, number> | undefined = undefined;
  byComposite: Map<unknown, number> | undefined = undefined;
  /** With a `timeout`: when the batch's calls (and the promises they answer with) expire. */
  deadline: number | undefined = undefined;

  constructor(owner: object, scope: ScopeState | undefined) {
    this.owner = owner;
    this.scope = scope;
    this.removals = scope?.cache?.removals ?? 0;
  }

  /** The index of `mapKey` (composite or not) if it is queued already, else -1. */
  indexOf(mapKey: unknown, composite: boolean): number {
    if (this.byKey === undefined) {
      const byKey = new Map<unknown, number>();
      const byComposite = new Map<unknown, number>();
      const keys = this.keys;
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i];
        if (typeof key === 'object' && key !== null) byComposite.set(mapKeyOf(FN, key), i);
        else byKey.set(key, i);
      }
      this.byKey = byKey;
      this.byComposite = byComposite;
    }
    return ((composite ? this.byComposite : this.byKey) as Map<unknown, number>).get(mapKey) ?? -1;
  }

  /**
   * Queue a key with the request-cache entry made for it, or `null` (then a loose entry
   * holds its promise); sets the entry's `promise` and returns it.
   */
  add(
    key: CacheKey,
    mapKey: unknown,
    composite: boolean,
    entry: BatchedEntry | null,
  ): Promise<unknown> {
    // Stores by index rather than `push`: the arrays are made empty by the constructor,
    // so the first element changes their kind, and `push` would then stay a call of the
    // built-in for every key (the one place on this path where it showed in profiles).
    const keys = this.keys;
    const index = keys.length;
    keys[index] = key;
    const promise = new Promise<unknown>(executor);
    this.settlers[index] = nextResolve as (value: unknown) => void;
    const held = entry ?? looseEntry();
    held.promise = promise;
    this.entries[index] = held;
    if (this.byKey !== undefined) {
      ((composite ? this.byComposite : this.byKey) as Map<unknown, number>).set(mapKey, index);
    }
    return promise;
  }
}

function ignore(): void {}

/**
 * One element of a batch's result as the shared tier takes it: a failure marked, a
 * promise's outcome awaited (and marked if it fails), a value as it is.
 */
function sharedElement(value: unknown): unknown {
  if (value instanceof Error) return batchFailure(value);
  if (isThenable(value)) return Promise.resolve(value).then(sharedElement, batchFailure);
  return value;
}

/** What a timed-out batch call resolves to in the shared path. */
const TIMED_OUT: unique symbol = Symbol('timed out');

/** Where calls made outside any scope keep their pending batch. */
const OUTSIDE = {};

let resolved: Promise<void> | undefined;

/**
 * Run `fn` once the code running now and the promise jobs it queued have run
 * (DataLoader's default schedule): a promise job that queues a tick. Loads asked for in
 * `.then` chains and `await`s of the same turn join the batch. Runtimes without
 * `process.nextTick` fall back to `setImmediate`, then `setTimeout`.
 */
const afterPromiseJobs: (fn: () => void) => void =
  typeof process === 'object' && typeof process.nextTick === 'function'
    ? (fn) => {
        resolved ??= Promise.resolve();
        void resolved.then(() => process.nextTick(fn));
      }
    : typeof setImmediate === 'function'
      ? (fn) => void setImmediate(fn)
      : (fn) => void setTimeout(fn, 0);

function isMapLike(value: unknown): value is ReadonlyMap<unknown, unknown> {
  return (
    value instanceof Map ||
    (typeof value === 'object' &&
      value !== null &&
      typeof (value as Map<unknown, unknown>).get === 'function' &&
      typeof (value as Map<unknown, unknown>).has === 'function' &&
      typeof (value as Map<unknown, unknown>).entries === 'function')
  );
}

const OPTIONS = ['maxBatchSize', 'shared', 'timeout'] as const;

/** Check `options` by name and value; returns the timeout in ms, if any. */
function checkBatchOptions(options: unknown): number | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `${FN}(): options must be an object such as { maxBatchSize: 100 }, got ${describe(options)}.`,
    );
  }
  checkOptionNames(FN, options, OPTIONS);
  const { maxBatchSize, timeout } = options as Record<string, unknown>;
  if (maxBatchSize !== undefined && !isCount(maxBatchSize, 1)) {
    throw new TypeError(
      `${FN}(): options.maxBatchSize must be a positive integer or Infinity, such as 100, got ${describe(maxBatchSize)}.`,
    );
  }
  return checkTimeout(FN, timeout);
}

/**
 * Batch the loads of a group, DataLoader-style, in the request scope: keys asked for in
 * the same turn of the event loop (across resolvers, `Promise.all` and `.then` chains)
 * reach `batch` together, once per scope; each loaded key is stored in the request cache
 * like a `contextCached` load of the same group. Outside any scope, keys of the same
 * turn are still batched, and nothing is cached.
 *
 * @example
 * ```ts
 * const getAuthor = contextBatched('user', async (ids: readonly number[]) => {
 *   const rows = await db.query('SELECT * FROM users WHERE id = ANY($1)', [ids]);
 *   return new Map(rows.map((row) => [row.id, row]));
 * });
 * // 50 posts, one query for their authors:
 * const authors = await Promise.all(posts.map((post) => getAuthor(post.authorId)));
 * ```
 */
export function contextBatched<K extends CacheKey, V>(
  group: string,
  batch: BatchFunction<K, V>,
  options?: ContextBatchedOptions<V>,
): ContextBatchedFunction<K, V> {
  checkGroup(FN, group);
  if (typeof batch !== 'function') {
    throw new TypeError(
      `${FN}(): batch must be a function that loads many keys at once, such as ` +
        `(ids) => db.users.findMany(ids), got ${describe(batch)}.`,
    );
  }
  const timeout = checkBatchOptions(options);
  const maxBatchSize = options?.maxBatchSize ?? Infinity;
  const shared = options?.shared;
  const { view, invalidate, prime } = groupTiers(
    FN,
    group,
    shared === undefined ? undefined : { shared },
  );
  claimGroup(FN, group, batch, contextBatched);

  /**
   * The pending batch used last: most lookups of a turn come from one scope, and most
   * turns have one pending batch per getter, which then never enters `others`.
   */
  let last: Pending | undefined;
  /** The other scopes' pending batches, while scopes interleave within a turn. */
  let others: Map<object, Pending> | undefined;

  function pendingOf(scope: ScopeState | undefined): Pending {
    const owner: object = scope ?? OUTSIDE;
    const current = last;
    if (current !== undefined && current.owner === owner) return current;
    let pending = others?.get(owner);
    if (pending !== undefined) {
      (others as Map<object, Pending>).delete(owner);
    } else {
      const made = new Pending(owner, scope);
      afterPromiseJobs(() => dispatch(made));
      pending = made;
    }
    if (current !== undefined) {
      others ??= new Map();
      others.set(current.owner, current);
    }
    last = pending;
    return pending;
  }

  function dispatch(pending: Pending): void {
    // The executor's hand-over holds the last queued key's resolve function until now.
    nextResolve = undefined;
    if (last === pending) last = undefined;
    else others?.delete(pending.owner);
    const count = pending.keys.length;
    if (timeout !== undefined) pending.deadline = Date.now() + timeout;
    if (count <= maxBatchSize) {
      call(pending, 0, count);
      return;
    }
    for (let from = 0; from < count; from += maxBatchSize) {
      call(pending, from, Math.min(from + maxBatchSize, count));
    }
  }

  function call(pending: Pending, from: number, to: number): void {
    const scope = pending.scope;
    const n = to - from;
    const queued = pending.keys;
    const ctx = scope?.loaderContext ?? EMPTY_CONTEXT;
    // A transaction's reads may see its own uncommitted writes: they never reach the
    // shared tier.
    if (view !== undefined && ctx.transaction === undefined) {
      throughShared(
        view,
        pending,
        from,
        to,
        (n === queued.length ? queued : queued.slice(from, to)) as K[],
      );
      return;
    }
    // The batch function gets an array of its own: one that sorts or filters its keys in
    // place changes nothing the results are matched against.
    const keys = queued.slice(from, to) as K[];
    scope?.cache?.countBatch();
    let result: unknown;
    try {
      result = tracingBatches() ? traceBatch(group, n, () => batch(keys, ctx)) : batch(keys, ctx);
    } catch (err) {
      failAll(pending, from, to, err);
      return;
    }
    if (!isThenable(result)) {
      settle(pending, from, to, result);
      return;
    }
    if (timeout === undefined) {
      Promise.resolve(result).then(
        (values) => settle(pending, from, to, values),
        (err: unknown) => failAll(pending, from, to, err),
      );
      return;
    }
    let done = false;
    const limit = timeout;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      for (let i = from; i < to; i++) {
        fail(pending, i, new LoadTimeoutError(FN, group, pending.keys[i] as CacheKey, limit));
      }
    }, limit);
    Promise.resolve(result).then(
      (values) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        settle(pending, from, to, values);
      },
      (err: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        failAll(pending, from, to, err);
      },
    );
  }

  /**
   * With a shared tier: the store answers what it holds (one round trip), keys another
   * request of this process is loading are joined, and `batch` is called once for the
   * rest, whose values are written back in one round trip.
   */
  function throughShared(
    view: SharedGroupView<V>,
    pending: Pending,
    from: number,
    to: number,
    keys: readonly K[],
  ): void {
    const cache = pending.scope?.cache;
    const results = view.loadMany(keys, (missed, ctx) => {
      cache?.countBatch();
      return runForShared(missed as readonly K[], ctx);
    });
    for (let i = from; i < to; i++) {
      (results[i - from] as Promise<unknown>).then(
        (value) => one(pending, i, value),
        (err: unknown) => fail(pending, i, err),
      );
    }
  }

  /** One call of `batch` for the shared tier: one element per key, failures marked. */
  async function runForShared(keys: readonly K[], ctx: LoaderContext): Promise<unknown[]> {
    const n = keys.length;
    // Its own array, as in `call`.
    const given = keys.slice();
    // The call and the elements that are promises: `timeout` bounds both.
    let answer: Promise<unknown> = Promise.resolve(
      tracingBatches() ? traceBatch(group, n, () => batch(given, ctx)) : batch(given, ctx),
    ).then((values) => sharedElements(values, keys));
    if (timeout !== undefined) {
      const limit = timeout;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const expired = new Promise<typeof TIMED_OUT>((resolve) => {
        timer = setTimeout(resolve, limit, TIMED_OUT);
      });
      answer = Promise.race([answer, expired]).finally(() => clearTimeout(timer));
    }
    const out = await answer;
    if (out === TIMED_OUT) {
      return keys.map((key) =>
        batchFailure(new LoadTimeoutError(FN, group, key, timeout as number)),
      );
    }
    return out as unknown[];
  }

  /** A batch's result as the shared tier takes it: one element per key, promises awaited. */
  function sharedElements(values: unknown, keys: readonly K[]): unknown[] | Promise<unknown[]> {
    const n = keys.length;
    let out: unknown[];
    if (Array.isArray(values)) {
      if (values.length !== n) throw lengthError(values.length, n);
      out = values.map(sharedElement);
    } else if (isMapLike(values)) {
      out = readMap(values, keys, 0, n).map(sharedElement);
    } else {
      throw shapeError(values);
    }
    return out.some(isThenable) ? Promise.all(out) : out;
  }

  function lengthError(got: number, n: number): TypeError {
    return new TypeError(
      `${FN}('${group}'): the batch function returned ${got} values for ${n} keys. ` +
        'An array result must hold one value (or Error) per key, in the order of the keys; ' +
        'return a Map from key to value when some keys have none.',
    );
  }

  function shapeError(values: unknown): TypeError {
    return new TypeError(
      `${FN}('${group}'): the batch function must resolve to an array with one value per key ` +
        `or to a Map from key to value, got ${describe(values)}.`,
    );
  }

  function settle(pending: Pending, from: number, to: number, values: unknown): void {
    const n = to - from;
    if (Array.isArray(values)) {
      if (values.length !== n) {
        failAll(pending, from, to, lengthError(values.length, n));
        return;
      }
      for (let i = from; i < to; i++) one(pending, i, values[i - from]);
      return;
    }
    if (isMapLike(values)) {
      const found = readMap(values, pending.keys, from, to);
      for (let i = from; i < to; i++) one(pending, i, found[i - from]);
      return;
    }
    failAll(pending, from, to, shapeError(values));
  }

  function one(pending: Pending, i: number, value: unknown): void {
    if (value instanceof Error) {
      fail(pending, i, value);
      return;
    }
    if (isThenable(value)) {
      // An element that is a promise (`keys.map(async (key) => …)` returned without
      // `Promise.all`): the key takes its outcome, as DataLoader's would, within what is
      // left of the call's timeout.
      const deadline = pending.deadline;
      const outcome =
        deadline === undefined
          ? Promise.resolve(value)
          : withDeadline(
              value,
              Math.max(1, deadline - Date.now()),
              FN,
              group,
              pending.keys[i] as K,
            );
      outcome.then(
        (settled) => one(pending, i, settled),
        (err: unknown) => fail(pending, i, err),
      );
      return;
    }
    // An entry that left the cache (or a loose one) is settled for nobody.
    const entry = pending.entries[i] as BatchedEntry;
    entry.settled = true;
    entry.value = value;
    (pending.settlers[i] as (value: unknown) => void)(value);
  }

  function fail(pending: Pending, i: number, error: unknown): void {
    const entry = pending.entries[i] as BatchedEntry;
    const promise = entry.promise as Promise<unknown>;
    const cache = pending.scope?.cache;
    if (cache !== undefined) {
      const key = pending.keys[i];
      cache.failBatched(group, mapKeyOf(FN, key), typeof key === 'object' && key !== null, entry);
    }
    // As for every lookup, a failed key that nobody awaits is not an unhandled rejection
    // (a caller that awaits it still gets the error). Only a failure pays for the handler.
    promise.then(undefined, ignore);
    const rejected = Promise.reject(error);
    rejected.then(undefined, ignore);
    (pending.settlers[i] as (value: unknown) => void)(rejected);
  }

  function failAll(pending: Pending, from: number, to: number, error: unknown): void {
    for (let i = from; i < to; i++) fail(pending, i, error);
  }

  const batched = (key: K): Promise<V> => {
    const scope = currentScope();
    const kind = typeof key;
    const mapKey = kind === 'number' || kind === 'string' ? key : mapKeyOf(FN, key, batched);
    const composite = kind === 'object' && key !== null;
    const cache = scope?.cache;
    let entry: BatchedEntry | null = null;
    if (cache !== undefined) {
      entry = cache.lookupBatched(FN, group, mapKey, composite, batched);
      // A hit or a join.
      if (entry !== null && entry.promise !== undefined) return entry.promise as Promise<V>;
    }
    // The pending batch of the last lookup, checked here: `pendingOf` is not inlined.
    const current = last;
    const pending =
      current !== undefined && current.owner === (scope ?? OUTSIDE) ? current : pendingOf(scope);
    // With a serving cache whose entries are all still there, a queued key would have
    // been found above (a join); otherwise look among the queued keys.
    const index =
      entry !== null && (cache as Cache).removals === pending.removals
        ? -1
        : pending.indexOf(mapKey, composite);
    if (index < 0) return pending.add(key, mapKey, composite, entry) as Promise<V>;
    // Queued already (its entry dropped since, or no cache serving): join that load, and
    // count the lookup as the join it is rather than the miss counted above.
    cache?.countRejoin();
    const promise = (pending.entries[index] as BatchedEntry).promise as Promise<unknown>;
    if (entry !== null) {
      entry.promise = promise;
      pending.entries[index] = entry;
    }
    return promise as Promise<V>;
  };

  labelCalls(batched, `the getter of contextBatched('${group}')`);
  const getter = batched as ContextBatchedFunction<K, V>;
  getter.many = (keys: readonly K[]): Promise<V[]> => {
    if (!Array.isArray(keys)) {
      throw new TypeError(
        `${FN}('${group}').many(): keys must be an array of keys, such as [1, 2, 3], got ${describe(keys)}.`,
      );
    }
    const promises = new Array<Promise<V>>(keys.length);
    for (let i = 0; i < keys.length; i++) promises[i] = batched(keys[i] as K);
    const all = Promise.all(promises);
    // As for one key: a failure nobody awaits is not unhandled (an awaiting caller still
    // gets the error).
    all.then(undefined, ignore);
    return all;
  };
  getter.invalidate = invalidate;
  getter.prime = prime;
  return getter;
}

/**
 * What a batch's result map holds for `keys[from]` to `keys[to - 1]`, in order: a key
 * missing is `undefined`, and a composite key is also found among equal arrays.
 */
function readMap(
  values: ReadonlyMap<unknown, unknown>,
  keys: readonly unknown[],
  from: number,
  to: number,
): unknown[] {
  const out = new Array<unknown>(to - from);
  let encoded: Map<unknown, unknown> | undefined;
  for (let i = from; i < to; i++) {
    const key = keys[i];
    let value = values.get(key);
    if (value === undefined && typeof key === 'object' && key !== null && !values.has(key)) {
      // A composite key: the map may hold equal arrays rather than the ones passed in.
      encoded ??= encodeMapKeys(values);
      value = encoded.get(mapKeyOf(FN, key));
    }
    out[i - from] = value;
  }
  return out;
}

/** The values of a result map by encoded key, for composite keys given as other arrays. */
function encodeMapKeys(values: ReadonlyMap<unknown, unknown>): Map<unknown, unknown> {
  const encoded = new Map<unknown, unknown>();
  for (const [key, value] of values.entries()) {
    if (!Array.isArray(key)) continue;
    try {
      encoded.set(encodeComposite(FN, key), value);
    } catch {
      // Not a key this getter could have asked for.
    }
  }
  return encoded;
}
