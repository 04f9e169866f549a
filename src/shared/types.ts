/**
 * The shared tier's public types, kept apart from its implementation so the request
 * cache (`contextCached`) can accept a shared cache without loading lru-cache or ioredis.
 */

import type { CacheKey } from '../keys.js';

/** What a shared-tier loader receives: the signal of the shared load. */
export interface SharedLoaderContext {
  /** Aborts only when every caller waiting for this load has given up. */
  readonly signal: AbortSignal;
}

/** Per-call options of a shared cache. */
export interface SharedSetOptions {
  /** Time to live of this entry, in ms (default: the cache's `ttl`). */
  ttl?: number;
}

/**
 * Registered symbol under which a shared cache offers a view scoped to one group, as
 * `contextCached(group, loader, { shared })` uses it. Registered so two copies of this
 * package (ESM and CJS) understand each other's caches.
 */
export const GROUP_VIEW: unique symbol = Symbol.for('context-cache.shared.group.v1') as never;

/** A shared cache seen through one group: its keys are prefixed with the group. */
export interface SharedGroupView<V> {
  getOrLoad(
    key: CacheKey,
    loader: (key: CacheKey, ctx: SharedLoaderContext) => V | PromiseLike<V>,
    options?: SharedSetOptions,
  ): Promise<V>;
  delete(key: CacheKey): Promise<void>;
  /**
   * The values of `keys` for a batched getter, one promise per key: from the store
   * (one round trip), else from a load of the key already running in this process,
   * else from one call of `load` for every key still missing, written back detached
   * in one round trip. `load` resolves one element per missed key, in their order: the
   * value, or a `batchFailure(error)` for a key that failed (never stored).
   */
  loadMany(
    keys: readonly CacheKey[],
    load: (
      missed: readonly CacheKey[],
      ctx: SharedLoaderContext,
    ) => PromiseLike<readonly unknown[]>,
  ): Promise<unknown>[];
}

/** Marks a failed key in what a batch load resolves (shared by every copy of this package). */
export const BATCH_FAILED: unique symbol = Symbol.for('context-cache.batch.failed.v1') as never;

/** A failed key's element in what a batch load resolves. */
export interface BatchFailure {
  readonly [BATCH_FAILED]: unknown;
}

/** Wrap the error of a failed key for `SharedGroupView.loadMany`. */
export function batchFailure(error: unknown): BatchFailure {
  return { [BATCH_FAILED]: error };
}

/** Whether `value` is a failed key's element. */
export function isBatchFailure(value: unknown): value is BatchFailure {
  return typeof value === 'object' && value !== null && BATCH_FAILED in value;
}

/** One write of `Store.setMany`: the same four things `set` takes. */
export interface StoreEntry {
  readonly key: string;
  readonly value: StoreValue;
  /** Time to live in ms. */
  readonly ttl: number;
  /** When the value's load started (see `set`). */
  readonly version: number;
}

/** A process-wide or cross-process cache, made by `createSharedCache()`. */
export interface SharedCache<V> {
  /**
   * The stored value, else the value of a load of the same key already running in this
   * process, else the loader's value (written back in the background). Never rejects
   * for a store fault; rejects only with the loader's own error.
   */
  getOrLoad<K extends CacheKey>(
    key: K,
    loader: (key: K, ctx: SharedLoaderContext) => V | PromiseLike<V>,
    options?: SharedSetOptions,
  ): Promise<V>;
  /** The stored value, or `undefined` on a miss (also when the store is down or slow). */
  get(key: CacheKey): Promise<V | undefined>;
  /** Store a value; rejects when the store is down or the value is too large. */
  set(key: CacheKey, value: V, options?: SharedSetOptions): Promise<void>;
  /** Drop a key; rejects when the store is down. */
  delete(key: CacheKey): Promise<void>;
  /** Wait for pending write-backs, then close the store. */
  close(): Promise<void>;
  /** The view used by `contextCached(group, loader, { shared })`. */
  readonly [GROUP_VIEW]: (group: string) => SharedGroupView<V>;
}

/** What a store keeps: the encoded envelope of a value. */
export type StoreValue = string | Buffer;

/**
 * The tiny interface behind a shared cache: `memoryStore()`, `redisStore()` and
 * `tieredStore()` implement it, and so can any other backend. Keys arrive fully
 * encoded (namespace included); values arrive encoded by the cache's serializer. A
 * failed or slow operation rejects (or is cut by the cache's timeouts); the cache turns
 * that into a miss and reports the outage.
 *
 * @example
 * ```ts
 * // a store over a Map, without expiry (for illustration only)
 * const map = new Map<string, StoreValue>();
 * const store: Store = {
 *   get: async (key) => map.get(key),
 *   // ignores the version: correct for one process, no ordering across writers
 *   set: async (key, value) => void map.set(key, value),
 *   delete: async (key) => void map.delete(key),
 *   close: async () => map.clear(),
 * };
 * ```
 */
export interface Store {
  /**
   * A synchronous read of a local tier that cannot fail (an in-process cache). A hit
   * here is served without touching the remote tier, and counts neither as a failure
   * nor as a recovery of it.
   */
  peek?(key: string): StoreValue | undefined;
  /** The stored value, or `undefined` when the key is absent or expired. */
  get(key: string): Promise<StoreValue | undefined>;
  /**
   * Store `value` under `key` for `ttl` ms.
   *
   * `version` is when the value's load started (microseconds since the epoch; a `set`
   * counts as a load started when it was called). The value's first bytes carry it too
   * (see `versionOf`), so what is stored can be compared without decoding it. A store
   * that keeps the order writes only over nothing or over a value with a smaller
   * version, atomically, and resolves `false` when it kept the newer value instead. A
   * store that ignores `version` (and resolves nothing) still works, without that
   * guarantee: a late write-back may then overwrite a newer value. Without `version`
   * (a direct call), the write is unconditional.
   *
   * The cache's `delete` and `invalidate` arrive here too, as a tombstone: the header
   * alone, ending in `!` (see `versionOf`), with a ttl longer than any load that may
   * still write back (at least five minutes). The same rule keeps
   * it over any value whose load started before the delete; reads treat it as a miss.
   */
  set(key: string, value: StoreValue, ttl: number, version?: number): Promise<unknown>;
  /**
   * Read many keys in one round trip (`MGET` on Redis): one element per key, in order,
   * `undefined` for a miss. A batched getter's store read; without it, keys are read
   * one by one.
   */
  getMany?(keys: readonly string[]): Promise<(StoreValue | undefined)[]>;
  /**
   * Write many entries in one round trip, each by the rule of `set` (only over nothing
   * or over an older version). A batched getter's write-back; without it, entries are
   * written one by one.
   */
  setMany?(entries: readonly StoreEntry[]): Promise<unknown>;
  /**
   * Drop `key` (and tell other instances, where the store has any), for direct calls.
   * The cache itself never calls it: its deletes, and its replacement of a value that
   * does not decode, write a tombstone through `set`, under the version rule.
   */
  delete(key: string): Promise<void>;
  /**
   * Take the lock `key` for `ttl` ms unless someone holds it (`SET key token NX PX ttl`);
   * resolves whether it was taken. Needed for the cache's `lock` option.
   */
  lock?(key: string, token: string, ttl: number): Promise<boolean>;
  /** Release the lock `key` if `token` still holds it. */
  unlock?(key: string, token: string): Promise<void>;
  /**
   * The client's own view of its connection, asked before every operation: the number
   * of times it has become ready so far (0 before the first time, or when it cannot
   * tell) while it is connected or connecting for the first time, else the `Error` that
   * keeps it from the server (its own cause, such as `ECONNREFUSED`). An `Error` means
   * the operation is not sent: the cache fails it at once with that cause. A count
   * larger than at the start of an outage ends the outage's backoff window: the next
   * operation is sent as the probe.
   */
  connection?(): number | Error;
  /**
   * Call `listener` with each key another instance wrote or deleted, where the store
   * hears of them (`tieredStore()`'s invalidation messages): the cache then lets no new
   * caller join a load of that key it started before, nor writes that load back.
   * Returns a function that stops the calls, which the cache calls when it closes.
   */
  onInvalidate?(listener: (key: string) => void): (() => void) | undefined;
  /** Release what the store created (its own clients); never a client it was given. */
  close(): Promise<void>;
}
