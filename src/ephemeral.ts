/**
 * The request cache: `group → key → entry`, created lazily, bounded, with a lifetime.
 * No dependency. One instance per request; see `scope.ts` for how it is found.
 *
 * Hot path (a hit): a map read, a counter and one integer comparison. The entry holds
 * the promise handed to the first caller, so a hit returns it without allocating. The
 * lifetime is checked against a coarse clock rather than `Date.now()`, and only once per
 * reading of that clock: a cache keeps the clock's epoch in which it last found itself
 * serving, and a hit compares that with the clock's current epoch.
 */

import { epoch, now, readEpoch, STALE } from './clock.js';
import { publishEnd, traceLoad, tracingLoads } from './diagnostics.js';
import { type CacheKey, checkGroup, checkLoader, mapKeyOf } from './keys.js';
import type { LoaderContext, ScopeState } from './scope.js';
import { callerLabel, ENDED, EXPIRED, type StackCut, warn } from './warnings.js';

/**
 * How long a request cache serves, in ms: five minutes, as Gitea's
 * `contextCacheLifetime`. A request that needs longer is almost certainly long-running
 * work that should not be tied to a request cache at all (see `detach()`).
 */
export const DEFAULT_LIFETIME = 5 * 60 * 1000;

/** Entries per request cache before the oldest are evicted. */
export const DEFAULT_MAX_ENTRIES = 10_000;

/** Counts of one request cache's lookups, as returned by `stats()`. */
export interface CacheStats {
  /** Lookups that found a settled value. */
  hits: number;
  /** Lookups that found a load of the same key in flight and joined it. */
  joins: number;
  /** Lookups that found nothing. */
  misses: number;
  /** Loaders started. */
  loads: number;
  /** Loads that failed (threw or rejected). */
  errors: number;
  /** Entries dropped because the cache held `maxEntries`. */
  evictions: number;
  /** Calls to a `contextBatched` batch function. */
  batches: number;
}

/**
 * A request cache, as returned by `getContextCache()`. Adapters call `end()` when the
 * response is done and read `stats()`.
 *
 * @example
 * ```ts
 * const cache = getContextCache();
 * if (cache) res.setHeader('x-cache-hits', String(cache.stats().hits));
 * ```
 */
export interface EphemeralCache {
  /** This cache's counts so far (the final counts once it has ended). */
  stats(): CacheStats;
  /**
   * Drop every entry at once and stop caching: later lookups in this scope pass
   * through to their loaders, and the first one emits a `CONTEXT_CACHE_ENDED`
   * warning. Calling it twice is a no-op.
   */
  end(): void;
  /** Whether `end()` has been called. */
  readonly ended: boolean;
  /** Whether the cache has outlived its lifetime (it then serves nothing). */
  readonly expired: boolean;
  /** Entries currently held. */
  readonly size: number;
}

/** Options of a request cache. */
export interface CacheOptions {
  /** How long the cache serves, in ms (default 5 minutes). */
  lifetime?: number;
  /** At most this many entries; past it the oldest inserted are evicted (default 10,000). */
  maxEntries?: number;
}

type Loader = (key: never, ctx: LoaderContext) => unknown;
type SyncLoader = (key: never) => unknown;

/**
 * A request-cache entry, as `contextBatched` holds it: `promise` is set on a hit or a
 * join, and set by the getter itself right after a miss made the entry. Settling an
 * entry that has left its cache (dropped, evicted, or replaced by a set while its load
 * ran) changes nothing anyone can read.
 */
export interface BatchedEntry {
  settled: boolean;
  value: unknown;
  promise: Promise<unknown> | undefined;
}

/**
 * One cached value or load in flight. An entry does not know its map or key: whoever
 * drops it has them at hand. Its `seq` orders insertions for eviction: within a group's
 * map, Map order is insertion order, so the oldest entry of the cache is the first of
 * one of its maps.
 */
class Entry implements BatchedEntry {
  /** Whether `value` holds the result (a pending load has only `promise`). */
  settled: boolean;
  value: unknown;
  /** The promise handed to async callers; made lazily for values set synchronously. */
  promise: Promise<unknown> | undefined;
  /** When it was inserted, in the cache's insertion count. */
  readonly seq: number;

  constructor(
    settled: boolean,
    value: unknown,
    promise: Promise<unknown> | undefined,
    seq: number,
  ) {
    this.settled = settled;
    this.value = value;
    this.promise = promise;
    this.seq = seq;
  }
}

/** An entry that belongs to no cache, for a batched key queued where none serves. */
export function looseEntry(): BatchedEntry {
  return new Entry(false, undefined, undefined, 0);
}

function ignore(): void {}

/** A sync loader's result, or the TypeError for a promise (see `asyncLoaderError`). */
function syncResult(group: string, value: unknown): unknown {
  if (isThenable(value)) throw asyncLoaderError(group, value);
  return value;
}

/**
 * The TypeError for a synchronous lookup whose loader returned a promise. The promise
 * is not stored, and its rejection (if any) is not left unhandled.
 */
export function asyncLoaderError(group: string, value: PromiseLike<unknown>): TypeError {
  value.then(undefined, ignore);
  return new TypeError(
    `getWithContextCacheSync(): the loader of group '${group}' returned a promise, which a ` +
      'synchronous lookup cannot wait for, so nothing was stored. Use ' +
      `await getWithContextCache('${group}', key, loader) for an async loader.`,
  );
}

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}

/**
 * The loader context of a scope whose signal is made on first use. A class, not an
 * object literal with a getter: V8 builds such a literal on a slow path (~250 ns).
 */
class LazyLoaderContext implements LoaderContext {
  private readonly scope: { readonly signal: AbortSignal | undefined };

  constructor(scope: { readonly signal: AbortSignal | undefined }) {
    this.scope = scope;
  }

  get signal(): AbortSignal {
    return this.scope.signal as AbortSignal;
  }
}

/**
 * Besides a function, what makes a scope's signal on first use: an adapter's request
 * passes itself, so opening a request makes no closure.
 */
export interface SignalSource {
  makeSignal(): AbortSignal;
  /**
   * Start watching for the request's end, for a cache made with `untracked`: called
   * once, on the cache's first use, before anything is served. It may end the cache
   * at once (the response was already over).
   */
  track?(): void;
  /**
   * For a cache made with `untracked`: whether the request is already over, asked when
   * something reads `ended` (as `getContextCache()` does) before the cache was used.
   */
  over?(): boolean;
}

function isSignalSource(value: unknown): value is SignalSource {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<SignalSource>).makeSignal === 'function'
  );
}

/** What loaders get when their scope has no signal. */
export const EMPTY_CONTEXT: LoaderContext = Object.freeze({});

/** `Cache.flags` bits. */
const IS_CLOSED = 1; // ended or expired: serves nothing
const IS_ENDED = 2;
const WARNED_ENDED = 4;
const WARNED_EXPIRED = 8;
/**
 * Made by an adapter that watches for the request's end only once the cache is used
 * (see `SignalSource.track`): such a cache starts `STALE`, so its first use takes the
 * slow half of the serving check, which starts the watch.
 */
const UNTRACKED = 16;
/** Ended because the client closed the connection before the response was sent. */
const CLIENT_GONE = 32;

/**
 * What a request cache holds and counts, made on its first lookup or write: a request
 * that never looks anything up (a health check, a static file) only pays for the
 * `Cache` itself. `end()` drops the entries and keeps the counts.
 *
 * Primitive keys: the group looked up last is kept in `lastGroup` / `lastMap`, and the
 * one before it in `otherGroup` / `otherMap`, where the hit paths read them without a map
 * lookup (runs of one getter, and two getters called in turn). Most requests use one or
 * two groups, so the first group lives only there; the `primitives` map of every group is
 * made when a second group arrives (and then holds those two too).
 */
class Contents implements CacheStats {
  /** The group looked up last and its primitive-key map (a group's map never changes). */
  lastGroup: string | undefined = undefined;
  lastMap: Map<unknown, Entry> | undefined = undefined;
  /** The group looked up last before `lastGroup`, and its map (always in `primitives`). */
  otherGroup: string | undefined = undefined;
  otherMap: Map<unknown, Entry> | undefined = undefined;
  primitives: Map<string, Map<unknown, Entry>> | undefined = undefined;
  composites: Map<string, Map<unknown, Entry>> | undefined = undefined;
  /** Entries inserted so far: the next entry's `seq`. */
  inserted = 0;
  /**
   * Every entry as `(map, key, seq)` triples in insertion order, from `orderHead` on,
   * made when the cache first goes past its bound and kept from then on: a cache that
   * never reaches `maxEntries` pays nothing for its eviction order. A triple whose map
   * no longer holds an entry of that `seq` under that key is stale and skipped.
   */
  order: unknown[] | undefined = undefined;
  orderHead = 0;
  size = 0;
  hits = 0;
  joins = 0;
  misses = 0;
  loads = 0;
  errors = 0;
  evictions = 0;
  batches = 0;

  /**
   * The map of `group` for primitive or composite keys, if it exists yet. Lookups tend
   * to come in runs of one group, so a primitive group found becomes the last group.
   */
  mapOf(group: string, composite: boolean): Map<unknown, Entry> | undefined {
    return composite ? this.composites?.get(group) : this.knownMap(group);
  }

  /**
   * The primitive-key map of `group` if it has one: the last group's for one comparison,
   * else the one in `primitives`, which then becomes the last. The hit paths start here,
   * so code that alternates between getters of two groups stays on them; a group found
   * here was checked when its map was made (anything else, a wrong group included,
   * finds nothing and takes the full path).
   */
  knownMap(group: string): Map<unknown, Entry> | undefined {
    // Small enough to inline into every hit path: the rest is a call of its own.
    return group === this.lastGroup ? this.lastMap : this.notLastMap(group);
  }

  /** `knownMap` for a group other than the last one. */
  private notLastMap(group: string): Map<unknown, Entry> | undefined {
    // Two getters called in turn (a row's author, then its repository) find theirs here,
    // without a map lookup or a write.
    if (group === this.otherGroup) return this.otherMap;
    const map = this.primitives?.get(group);
    if (map !== undefined) this.promote(group, map);
    return map;
  }

  /** Make `group` the last group, and the last one the other. */
  private promote(group: string, map: Map<unknown, Entry>): void {
    this.otherGroup = this.lastGroup;
    this.otherMap = this.lastMap;
    this.lastGroup = group;
    this.lastMap = map;
  }

  /** The primitive-key map of `group`, made on first use; it becomes the last group. */
  primitiveMap(group: string): Map<unknown, Entry> {
    const found = this.mapOf(group, false);
    if (found !== undefined) return found;
    const map = new Map<unknown, Entry>();
    const last = this.lastGroup;
    if (last !== undefined) {
      let groups = this.primitives;
      if (groups === undefined) {
        // A second group: from now on every group is in `primitives`.
        groups = new Map();
        groups.set(last, this.lastMap as Map<unknown, Entry>);
        this.primitives = groups;
      }
      groups.set(group, map);
    }
    this.promote(group, map);
    return map;
  }

  /** The composite-key map of `group`, made on first use. */
  compositeMap(group: string): Map<unknown, Entry> {
    let groups = this.composites;
    if (groups === undefined) {
      groups = new Map();
      this.composites = groups;
    }
    let map = groups.get(group);
    if (map === undefined) {
      map = new Map();
      groups.set(group, map);
    }
    return map;
  }

  /** Drop every entry; the counts stay. */
  clear(): void {
    this.lastGroup = undefined;
    this.lastMap = undefined;
    this.otherGroup = undefined;
    this.otherMap = undefined;
    this.primitives = undefined;
    this.composites = undefined;
    this.size = 0;
    this.order = undefined;
  }

  /**
   * Build `order` from the maps. Each map is in insertion order already, so merging
   * them by `seq` (a pass over every entry per group map) orders the whole cache.
   */
  buildOrder(): unknown[] {
    const maps: Map<unknown, Entry>[] = [];
    if (this.primitives !== undefined) maps.push(...this.primitives.values());
    else if (this.lastMap !== undefined) maps.push(this.lastMap);
    if (this.composites !== undefined) maps.push(...this.composites.values());
    const cursors = maps.map((map) => map.entries());
    const heads = cursors.map((cursor) => cursor.next());
    const order: unknown[] = [];
    for (;;) {
      let best = -1;
      let seq = Infinity;
      for (let j = 0; j < heads.length; j++) {
        const head = heads[j] as IteratorResult<[unknown, Entry]>;
        if (!head.done && head.value[1].seq < seq) {
          seq = head.value[1].seq;
          best = j;
        }
      }
      if (best < 0) break;
      order.push(maps[best], (heads[best] as IteratorYieldResult<[unknown, Entry]>).value[0], seq);
      heads[best] = (cursors[best] as MapIterator<[unknown, Entry]>).next();
    }
    this.order = order;
    this.orderHead = 0;
    return order;
  }
}

/**
 * The request cache. Exposed to users through the `EphemeralCache` interface. It is
 * also the scope kept in the AsyncLocalStorage for its request (`cache` is itself), so
 * opening a request allocates one small object: what it holds, its counts and its
 * loaders' context are made when first needed.
 */
export class Cache implements EphemeralCache, ScopeState {
  readonly cache: Cache;
  private signalValue: AbortSignal | undefined;
  /** Makes the signal on first use (see `CacheContextOptions.signal`). */
  private signalSource: (() => AbortSignal) | SignalSource | undefined;
  private context: LoaderContext | undefined = undefined;
  private contents: Contents | undefined = undefined;
  private flags = 0;
  /**
   * The clock epoch in which this cache last found itself serving (neither ended nor
   * expired, its request watched), else `STALE`. While it is the clock's epoch, the
   * hit paths serve on one integer comparison, without reading the clock or the flags;
   * anything that closes the cache sets it back to `STALE`.
   */
  private servingIn = STALE;
  private readonly deadline: number;
  readonly lifetime: number;
  readonly maxEntries: number;
  /**
   * Inside `withTransaction`: the transaction handed to loaders as `ctx.transaction`,
   * and the cache around this one, which `removeContextData` (and so `invalidate`)
   * also clears. Both `undefined` for a request's cache.
   */
  transaction: unknown = undefined;
  /**
   * Entries removed so far (dropped, failed, evicted). A pending batch compares it with
   * its value when the batch opened: unchanged, every key it queued still has its entry,
   * so an entry lookup alone tells whether a key is queued already.
   */
  removals = 0;
  outer: Cache | undefined = undefined;

  /**
   * `untracked`: `signal` is a `SignalSource` with `track()`, called on the cache's
   * first use (a lookup, a write, its signal) and not before.
   */
  constructor(
    lifetime: number,
    maxEntries: number,
    signal: AbortSignal | (() => AbortSignal) | SignalSource | undefined,
    untracked = false,
  ) {
    this.cache = this;
    if (untracked) this.flags = UNTRACKED;
    if (typeof signal === 'function' || isSignalSource(signal)) {
      this.signalValue = undefined;
      this.signalSource = signal;
    } else {
      this.signalValue = signal;
      this.signalSource = undefined;
    }
    this.lifetime = lifetime;
    this.maxEntries = maxEntries;
    this.deadline = now() + lifetime;
  }

  /** The request's signal, made on first use when the scope was given a function. */
  get signal(): AbortSignal | undefined {
    // Watched first: a request already over gets a signal already aborted.
    if ((this.flags & UNTRACKED) !== 0) this.track();
    const source = this.signalSource;
    if (source !== undefined) {
      this.signalSource = undefined;
      this.signalValue = typeof source === 'function' ? source() : source.makeSignal();
    }
    return this.signalValue;
  }

  /** What loaders get: `{ signal }`, made on the first load of this scope. */
  get loaderContext(): LoaderContext {
    let context = this.context;
    if (context === undefined) {
      if (this.transaction !== undefined) {
        const signal = this.signal;
        context =
          signal === undefined
            ? { transaction: this.transaction }
            : { signal, transaction: this.transaction };
      } else if (this.signalSource !== undefined) {
        // A loader that never reads `ctx.signal` never makes the signal.
        context = new LazyLoaderContext(this);
      } else {
        const signal = this.signalValue;
        context = signal === undefined ? EMPTY_CONTEXT : { signal };
      }
      this.context = context;
    }
    return context;
  }

  get ended(): boolean {
    // Reading `ended` is not a use: an untracked cache asks whether its request is over
    // (then ends) and otherwise stays unwatched.
    if ((this.flags & UNTRACKED) !== 0 && (this.signalSource as SignalSource).over?.() === true) {
      this.track();
    }
    return (this.flags & IS_ENDED) !== 0;
  }

  /** Start watching for the request's end (see `UNTRACKED`); may end the cache. */
  private track(): void {
    this.flags &= ~UNTRACKED;
    (this.signalSource as SignalSource).track?.();
  }

  get expired(): boolean {
    return now() >= this.deadline;
  }

  get size(): number {
    return this.contents?.size ?? 0;
  }

  stats(): CacheStats {
    const c = this.contents;
    if (c === undefined) {
      return { hits: 0, joins: 0, misses: 0, loads: 0, errors: 0, evictions: 0, batches: 0 };
    }
    return {
      hits: c.hits,
      joins: c.joins,
      misses: c.misses,
      loads: c.loads,
      errors: c.errors,
      evictions: c.evictions,
      batches: c.batches,
    };
  }

  end(): void {
    if ((this.flags & IS_ENDED) !== 0) return;
    // An untracked cache stays so: its request's signal, made later, still aborts when
    // the response closes.
    this.flags |= IS_ENDED | IS_CLOSED;
    this.servingIn = STALE;
    this.contents?.clear();
    publishEnd(this);
  }

  /**
   * End the cache because the request's client closed the connection first (an
   * adapter's call): as `end()`, and a later lookup's warning says so, with the advice
   * that fits (watch the request's signal) rather than the one for leftover work.
   */
  endClientGone(): void {
    if ((this.flags & IS_ENDED) !== 0) return;
    this.flags |= CLIENT_GONE;
    this.end();
  }

  /**
   * End a transaction's cache when its function has settled: like `end()`, without
   * publishing on `context-cache:end` (a transaction is not a request).
   */
  discard(): void {
    if ((this.flags & IS_ENDED) !== 0) return;
    this.flags |= IS_ENDED | IS_CLOSED;
    this.servingIn = STALE;
    this.contents?.clear();
    this.outer = undefined;
  }

  /** What the cache holds and counts, made on first use. */
  private hold(): Contents {
    let contents = this.contents;
    if (contents === undefined) {
      contents = new Contents();
      this.contents = contents;
    }
    return contents;
  }

  /** Whether the cache can serve: false once ended or expired. */
  private serving(fn: string, cut: StackCut): boolean {
    return this.servesNow() || this.stillServing(fn, cut);
  }

  /**
   * The hit paths' serving check: one integer comparison while the clock's epoch is the
   * one this cache last found itself serving in, else `fresh()`.
   */
  private servesNow(): boolean {
    return this.servingIn === epoch() || this.fresh();
  }

  /**
   * The serving check once the epoch differs (once per clock reading on Node, Bun and
   * Deno; on every lookup where readings are not reused, as on Workers): open, watched
   * and within the lifetime by the clock. The hit paths call it too, so a hit stays on
   * the hit path wherever the clock is read every time.
   */
  private fresh(): boolean {
    if ((this.flags & (IS_CLOSED | UNTRACKED)) === 0 && now() < this.deadline) {
      // Until the clock's next reading, `now()` returns the one just compared.
      this.servingIn = readEpoch();
      return true;
    }
    return false;
  }

  /**
   * The slow half of `serving()`: starts watching an untracked cache's request (which may
   * end it), marks the cache closed once it is ended or expired and emits the matching
   * warning once per cache. `cut` is the public function the user
   * called, where the warning's stack trace starts.
   */
  private stillServing(fn: string, cut: StackCut): boolean {
    // An untracked cache is watched from now on, which may end it; otherwise `fresh()`
    // has just said no, so the cache has ended or expired.
    if ((this.flags & UNTRACKED) !== 0) {
      this.track();
      if (this.fresh()) return true;
    }
    const flags = this.flags;
    this.flags |= IS_CLOSED;
    const who = callerLabel(fn, cut);
    if ((flags & IS_ENDED) !== 0) {
      if ((flags & WARNED_ENDED) === 0) {
        this.flags |= WARNED_ENDED;
        warn(
          (flags & CLIENT_GONE) !== 0
            ? `${who} ran after its request's client had closed the connection, so ` +
                'nothing was cached. Stop the work of a request whose client has gone: ' +
                'currentSignal() (ctx.signal in loaders) aborted when it left. Run work ' +
                'that must finish anyway in detach() or runInBackground().'
            : this.transaction !== undefined
              ? `${who} ran after its withTransaction() function had settled, so nothing ` +
                'was cached: this code outlives the transaction. Await it inside the ' +
                'transaction, or start it after withTransaction() returns.'
              : `${who} ran after its request had ended, so nothing was cached: this code ` +
                'outlives the response. Run work that continues after the response in ' +
                'detach() or runInBackground(), which give it its own scope and timeout.',
          ENDED,
          cut,
        );
      }
    } else if ((flags & WARNED_EXPIRED) === 0) {
      this.flags |= WARNED_EXPIRED;
      warn(
        `${who} used a request cache more than ${this.lifetime} ms after it was created, ` +
          'past its lifetime, so lookups now pass through to their loaders. This is ' +
          'likely long-running work inside a request cache: run it in detach() or ' +
          'withNoCacheContext().',
        EXPIRED,
        cut,
      );
    }
    return false;
  }

  /** The map of `group` for primitive or composite keys, if it exists yet. */
  private mapOf(group: string, composite: boolean): Map<unknown, Entry> | undefined {
    return this.contents?.mapOf(group, composite);
  }

  /**
   * The async lookup behind `getWithContextCache`. The hit path comes first and checks
   * only what a hit needs: a primitive key found in the map of the group looked up last
   * was validated when it was stored, and that group's name is a valid group, so only
   * the loader (which a hit does not call) is checked. Anything else takes `fetchAny`.
   */
  fetch(
    group: string,
    key: CacheKey,
    loader: Loader,
    cut: StackCut,
    thisArg?: unknown,
  ): Promise<unknown> {
    const contents = this.contents;
    if (contents !== undefined && typeof key !== 'object' && typeof loader === 'function') {
      const entry = contents.knownMap(group)?.get(key);
      if (entry !== undefined && this.servesNow()) {
        if (entry.settled) {
          contents.hits++;
          const promise = entry.promise;
          return promise !== undefined ? promise : this.promiseOf(entry);
        }
        contents.joins++;
        return entry.promise as Promise<unknown>;
      }
    }
    return this.fetchAny(group, key, loader, cut, thisArg);
  }

  /** The promise of a value set synchronously, made on its first async hit. */
  private promiseOf(entry: Entry): Promise<unknown> {
    const promise = Promise.resolve(entry.value);
    entry.promise = promise;
    return promise;
  }

  /** Every async lookup the hit path of `fetch` does not answer. */
  private fetchAny(
    group: string,
    key: CacheKey,
    loader: Loader,
    cut: StackCut,
    thisArg: unknown,
  ): Promise<unknown> {
    checkGroup('getWithContextCache', group);
    checkLoader('getWithContextCache', loader);
    const mapKey = mapKeyOf('getWithContextCache', key, cut);
    if (!this.serving('getWithContextCache', cut)) {
      return this.passThrough(group, key, loader, thisArg);
    }
    const contents = this.contents;
    if (contents !== undefined) {
      const entry = contents.mapOf(group, typeof key === 'object' && key !== null)?.get(mapKey);
      if (entry !== undefined) {
        if (entry.settled) {
          contents.hits++;
          const promise = entry.promise;
          return promise !== undefined ? promise : this.promiseOf(entry);
        }
        contents.joins++;
        return entry.promise as Promise<unknown>;
      }
    }
    return this.load(group, key, mapKey, loader, thisArg);
  }

  private passThrough(
    group: string,
    key: CacheKey,
    loader: Loader,
    thisArg: unknown,
  ): Promise<unknown> {
    const counts = this.ended ? undefined : this.hold();
    if (counts !== undefined) {
      counts.misses++;
      counts.loads++;
    }
    const ctx = this.loaderContext;
    let result: unknown;
    try {
      result = tracingLoads()
        ? traceLoad(group, key, false, false, () => loader.call(thisArg, key as never, ctx))
        : loader.call(thisArg, key as never, ctx);
    } catch (err) {
      if (counts !== undefined && !this.ended) counts.errors++;
      const failed = Promise.reject(err);
      failed.then(undefined, ignore);
      return failed;
    }
    const promise = Promise.resolve(result);
    // As for a stored load (see `load`): a failure nobody awaits is not unhandled, and is
    // counted while the cache has not ended. A plain value cannot fail, so only a
    // promise gets the handler.
    if (isThenable(result)) {
      if (counts === undefined) {
        promise.then(undefined, ignore);
      } else {
        promise.then(undefined, () => {
          if (!this.ended) counts.errors++;
        });
      }
    }
    return promise;
  }

  private load(
    group: string,
    key: CacheKey,
    mapKey: unknown,
    loader: Loader,
    thisArg: unknown,
  ): Promise<unknown> {
    const counts = this.hold();
    counts.misses++;
    counts.loads++;
    const ctx = this.loaderContext;
    let result: unknown;
    try {
      result = tracingLoads()
        ? traceLoad(group, key, false, true, () => loader.call(thisArg, key as never, ctx))
        : loader.call(thisArg, key as never, ctx);
    } catch (err) {
      // Errors are not cached: a throwing loader rejects this call and stores nothing,
      // and, as for a load that rejects, a failure nobody awaits is not unhandled. (A
      // loader that ended the cache leaves its final counts alone.)
      if (!this.ended) counts.errors++;
      const failed = Promise.reject(err);
      failed.then(undefined, ignore);
      return failed;
    }
    if (!isThenable(result)) {
      const promise = Promise.resolve(result);
      // A loader that ended the request cache (however odd) stores nothing.
      if (this.ended) return promise;
      const map = this.groupMap(group, typeof key === 'object' && key !== null);
      this.insert(map, mapKey, true, result, promise);
      return promise;
    }
    const promise = Promise.resolve(result);
    if (this.ended) return promise;
    const map = this.groupMap(group, typeof key === 'object' && key !== null);
    const entry = this.insert(map, mapKey, false, undefined, promise);
    promise.then(
      (value) => {
        // Skipped when a synchronous set replaced this load's result in the meantime.
        if (entry.promise === promise) {
          entry.settled = true;
          entry.value = value;
        }
      },
      () => {
        if (!this.ended) counts.errors++;
        if (entry.promise === promise) this.remove(map, mapKey, entry);
      },
    );
    return promise;
  }

  // --- contextBatched (batch.ts) --------------------------------------------------

  /**
   * A batched getter's lookup of `key` (its map key `mapKey`, already checked), in one
   * call. A hit or a join returns the entry found, whose `promise` is set. A miss is
   * counted as a miss and a load and returns a new entry stored for the key with no
   * `promise` yet: the caller queues the key and sets the entry's `promise` before
   * anything else runs, so other lookups of `(group, key)` join it. `null` when the
   * cache no longer serves (the miss and the load are counted while it has not ended;
   * nothing will be stored).
   */
  lookupBatched(
    fn: string,
    group: string,
    mapKey: unknown,
    composite: boolean,
    cut: StackCut,
  ): BatchedEntry | null {
    // The common case first, as in `fetch`: a primitive key of a group that has its map,
    // in a cache that serves.
    const contents = this.contents;
    if (contents !== undefined && !composite) {
      const map = contents.knownMap(group);
      if (map !== undefined && this.servesNow()) {
        const found = map.get(mapKey);
        if (found === undefined) {
          contents.misses++;
          contents.loads++;
          return this.link(map, mapKey, false, undefined, undefined);
        }
        return this.foundBatched(contents, found);
      }
    }
    return this.lookupBatchedAny(fn, group, mapKey, composite, cut);
  }

  /** A batched lookup's hit or join: count it; the entry's `promise` is set. */
  private foundBatched(contents: Contents, found: Entry): Entry {
    if (found.settled) {
      contents.hits++;
      if (found.promise === undefined) found.promise = Promise.resolve(found.value);
    } else {
      contents.joins++;
    }
    return found;
  }

  /** Every batched lookup the fast path of `lookupBatched` does not answer. */
  private lookupBatchedAny(
    fn: string,
    group: string,
    mapKey: unknown,
    composite: boolean,
    cut: StackCut,
  ): BatchedEntry | null {
    if (!this.serving(fn, cut)) {
      if (!this.ended) {
        const counts = this.hold();
        counts.misses++;
        counts.loads++;
      }
      return null;
    }
    const contents = this.hold();
    const map = composite ? contents.compositeMap(group) : contents.primitiveMap(group);
    const found = map.get(mapKey);
    if (found !== undefined) return this.foundBatched(contents, found);
    contents.misses++;
    contents.loads++;
    return this.link(map, mapKey, false, undefined, undefined);
  }

  /**
   * A batched key failed: count it, and drop its entry (if still there) so the next call
   * loads again.
   */
  failBatched(group: string, mapKey: unknown, composite: boolean, entry: BatchedEntry): void {
    if (this.ended) return;
    this.hold().errors++;
    const map = this.mapOf(group, composite);
    if (map !== undefined) this.remove(map, mapKey, entry as Entry);
  }

  /**
   * The batched lookup just counted as a miss and a load found its key queued already
   * (its entry dropped since, or no cache serving): count it as the join it is.
   */
  countRejoin(): void {
    if (this.ended) return;
    const counts = this.hold();
    counts.misses--;
    counts.loads--;
    counts.joins++;
  }

  /** Count one call of a batch function. */
  countBatch(): void {
    if (!this.ended) this.hold().batches++;
  }

  /** The sync lookup behind `getWithContextCacheSync`; its hit path is `fetch`'s. */
  fetchSync(group: string, key: CacheKey, loader: SyncLoader, cut: StackCut): unknown {
    const contents = this.contents;
    if (contents !== undefined && typeof key !== 'object' && typeof loader === 'function') {
      const entry = contents.knownMap(group)?.get(key);
      if (entry?.settled && this.servesNow()) {
        contents.hits++;
        return entry.value;
      }
    }
    return this.fetchSyncAny(group, key, loader, cut);
  }

  /** Every sync lookup the hit path of `fetchSync` does not answer. */
  private fetchSyncAny(group: string, key: CacheKey, loader: SyncLoader, cut: StackCut): unknown {
    const fn = 'getWithContextCacheSync';
    checkGroup(fn, group);
    checkLoader(fn, loader);
    const mapKey = mapKeyOf(fn, key);
    const map = this.mapOf(group, typeof key === 'object' && key !== null);
    if (!this.serving(fn, cut)) return this.passThroughSync(group, key, loader);
    const entry = map?.get(mapKey);
    const counts = this.hold();
    if (entry?.settled) {
      counts.hits++;
      return entry.value;
    }
    // Nothing, or a load in flight that a sync caller cannot wait for: load here.
    counts.misses++;
    counts.loads++;
    let value: unknown;
    try {
      value = tracingLoads()
        ? traceLoad(group, key, true, true, () => syncResult(group, loader(key as never)))
        : syncResult(group, loader(key as never));
    } catch (err) {
      // A throw, or a promise the sync caller cannot wait for: a failed load either way.
      if (!this.ended) counts.errors++;
      throw err;
    }
    if (this.ended) return value;
    // The loader may itself have set or removed this key: only a still-present entry
    // is replaced in place.
    if (entry !== undefined && map !== undefined && map.get(mapKey) === entry) {
      this.replace(map, mapKey, entry, value);
    } else {
      const target = this.groupMap(group, typeof key === 'object' && key !== null);
      this.insert(target, mapKey, true, value, undefined);
    }
    return value;
  }

  private passThroughSync(group: string, key: CacheKey, loader: SyncLoader): unknown {
    const counts = this.ended ? undefined : this.hold();
    if (counts !== undefined) {
      counts.misses++;
      counts.loads++;
    }
    try {
      return tracingLoads()
        ? traceLoad(group, key, true, false, () => syncResult(group, loader(key as never)))
        : syncResult(group, loader(key as never));
    } catch (err) {
      if (counts !== undefined && !this.ended) counts.errors++;
      throw err;
    }
  }

  /** `getContextData`: the settled value, or `undefined`. */
  getData(fn: string, group: string, key: CacheKey, cut: StackCut): unknown {
    checkGroup(fn, group);
    const mapKey = mapKeyOf(fn, key);
    const map = this.mapOf(group, typeof key === 'object' && key !== null);
    if (!this.serving(fn, cut)) return undefined;
    const entry = map?.get(mapKey);
    return entry?.settled ? entry.value : undefined;
  }

  /** `hasContextData`: whether a settled value is present. */
  hasData(fn: string, group: string, key: CacheKey, cut: StackCut): boolean {
    checkGroup(fn, group);
    const mapKey = mapKeyOf(fn, key);
    const map = this.mapOf(group, typeof key === 'object' && key !== null);
    if (!this.serving(fn, cut)) return false;
    return map?.get(mapKey)?.settled === true;
  }

  /** `setContextData`: store a settled value, keeping an existing key's place. */
  setData(fn: string, group: string, key: CacheKey, value: unknown, cut: StackCut): void {
    checkGroup(fn, group);
    const mapKey = mapKeyOf(fn, key);
    const found = this.mapOf(group, typeof key === 'object' && key !== null);
    if (!this.serving(fn, cut)) return;
    // Inside a transaction: the value may never commit, and what the caches around it
    // hold for the key may be older than the write it follows: they drop the key.
    const outer = this.outer;
    if (outer !== undefined && !outer.ended) outer.removeData(fn, group, key, cut);
    const entry = found?.get(mapKey);
    if (entry !== undefined) {
      this.replace(found as Map<unknown, Entry>, mapKey, entry, value);
      return;
    }
    const map = this.groupMap(group, typeof key === 'object' && key !== null);
    this.insert(map, mapKey, true, value, undefined);
  }

  /** `removeContextData`: drop an entry (a load in flight still settles for its waiters). */
  removeData(fn: string, group: string, key: CacheKey, cut: StackCut): void {
    checkGroup(fn, group);
    const mapKey = mapKeyOf(fn, key);
    const map = this.mapOf(group, typeof key === 'object' && key !== null);
    if (this.ended) {
      this.stillServing(fn, cut);
      return;
    }
    const entry = map?.get(mapKey);
    if (entry !== undefined) this.remove(map as Map<unknown, Entry>, mapKey, entry);
    // Inside a transaction: what it wrote is stale in the caches around it too.
    const outer = this.outer;
    if (outer !== undefined && !outer.ended) outer.removeData(fn, group, key, cut);
  }

  /** The map of `group`, made (with what holds it) on first use. */
  private groupMap(group: string, composite: boolean): Map<unknown, Entry> {
    const contents = this.hold();
    return composite ? contents.compositeMap(group) : contents.primitiveMap(group);
  }

  /**
   * Store `value` in place of `entry`, keeping its place in the eviction order. A load
   * in flight keeps its entry (its callers and its batch still hold it): a new settled
   * entry takes its place in the map, so the load settles an entry nobody finds.
   */
  private replace(map: Map<unknown, Entry>, mapKey: unknown, entry: Entry, value: unknown): void {
    if (entry.settled) {
      entry.value = value;
      entry.promise = undefined;
      return;
    }
    map.set(mapKey, new Entry(true, value, undefined, entry.seq));
  }

  /** Insert a new entry, after `groupMap()` made `map` (so `contents` exists). */
  private insert(
    map: Map<unknown, Entry>,
    mapKey: unknown,
    settled: boolean,
    value: unknown,
    promise: Promise<unknown> | undefined,
  ): Entry {
    // A loader that stored its own key while running (re-entrant) left an entry here:
    // drop it, so the new entry is the newest and the count stays right.
    const previous = map.get(mapKey);
    if (previous !== undefined) this.remove(map, mapKey, previous);
    return this.link(map, mapKey, settled, value, promise);
  }

  /** Insert a new entry under `mapKey`, which `map` does not hold; evict past the bound. */
  private link(
    map: Map<unknown, Entry>,
    mapKey: unknown,
    settled: boolean,
    value: unknown,
    promise: Promise<unknown> | undefined,
  ): Entry {
    const contents = this.contents as Contents;
    const seq = contents.inserted++;
    const entry = new Entry(settled, value, promise, seq);
    map.set(mapKey, entry);
    // Out of line: most caches never reach their bound, and a smaller `link` is inlined
    // into the lookups that insert (~45 instructions a key of a cold batch, callgrind).
    if (contents.order !== undefined) this.keepOrder(contents, map, mapKey, seq);
    if (++contents.size > this.maxEntries) this.evict(contents);
    return entry;
  }

  /** Append a new entry to the eviction order, which exists once the bound was reached. */
  private keepOrder(
    contents: Contents,
    map: Map<unknown, Entry>,
    mapKey: unknown,
    seq: number,
  ): void {
    const order = contents.order as unknown[];
    // Stale triples pile up as entries are dropped: past twice the live ones (and a
    // margin), start over from the maps at the next eviction.
    if (order.length - contents.orderHead > 6 * contents.size + 3072) contents.order = undefined;
    else order.push(map, mapKey, seq);
  }

  /** Drop the oldest entries until the cache holds `maxEntries`. */
  private evict(contents: Contents): void {
    const order = contents.order ?? contents.buildOrder();
    let head = contents.orderHead;
    while (contents.size > this.maxEntries && !this.ended && head < order.length) {
      const map = order[head] as Map<unknown, Entry>;
      const mapKey = order[head + 1];
      const seq = order[head + 2] as number;
      head += 3;
      const entry = map.get(mapKey);
      if (entry !== undefined && entry.seq === seq) {
        this.remove(map, mapKey, entry);
        contents.evictions++;
      }
    }
    // Drop what was read once it is most of the array.
    if (head > 3072 && head * 2 > order.length) {
      contents.order = order.slice(head);
      contents.orderHead = 0;
    } else {
      contents.orderHead = head;
    }
  }

  /** Drop `entry` if `map` still holds it under `mapKey` (a replaced entry is not there). */
  private remove(map: Map<unknown, Entry>, mapKey: unknown, entry: Entry): void {
    const contents = this.contents;
    if (contents === undefined || this.ended || map.get(mapKey) !== entry) return;
    map.delete(mapKey);
    this.removals++;
    contents.size--;
  }
}
