/**
 * The embedded store: an lru-cache in this process. It is the shared tier of a single
 * instance, and the L1 of `tieredStore()` in front of Redis.
 */

import { LRUCache } from 'lru-cache';
import { checkOptionNames, describe } from '../warnings.js';
import type { Store, StoreEntry, StoreValue } from './types.js';
import { isNewer, isTombstone } from './version.js';

/** Options of `memoryStore`. */
export interface MemoryStoreOptions {
  /** At most this many entries; past it the least recently used are evicted. */
  max: number;
  /**
   * Longest time an entry lives, in ms. Entries written with a longer ttl are kept this
   * long at most; as the L1 of `tieredStore()` it bounds how stale an instance can be.
   * A delete's tombstone (which refuses the write-back of a load older than the delete)
   * keeps its own ttl.
   */
  ttl?: number;
}

/** A store in this process's memory, made by `memoryStore()`. */
export interface MemoryStore extends Store {
  peek(key: string): StoreValue | undefined;
  /** Resolves `false` when a value with a larger `version` is kept instead. */
  set(key: string, value: StoreValue, ttl: number, version?: number): Promise<boolean>;
  getMany(keys: readonly string[]): Promise<(StoreValue | undefined)[]>;
  /** Resolves, per entry, whether it landed (`false`: a newer value was kept). */
  setMany(entries: readonly StoreEntry[]): Promise<boolean[]>;
  lock(key: string, token: string, ttl: number): Promise<boolean>;
  unlock(key: string, token: string): Promise<void>;
  /** The `ttl` option: the longest time an entry lives, if set. */
  readonly ttl: number | undefined;
  /** Entries currently held. */
  readonly size: number;
  /** Drop every entry. */
  clear(): void;
}

function checkOptions(options: unknown): asserts options is MemoryStoreOptions {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `memoryStore(): options must be an object such as { max: 10_000, ttl: 60_000 }, got ${describe(options)}.`,
    );
  }
  checkOptionNames('memoryStore', options, ['max', 'ttl']);
  const { max, ttl } = options as Record<string, unknown>;
  if (!(typeof max === 'number' && Number.isInteger(max) && max >= 1)) {
    throw new TypeError(
      `memoryStore(): options.max must be a positive integer (the most entries to keep, such as 10_000), got ${describe(max)}.`,
    );
  }
  if (ttl !== undefined && !(typeof ttl === 'number' && ttl > 0 && Number.isFinite(ttl))) {
    throw new TypeError(
      `memoryStore(): options.ttl must be a positive number of milliseconds (such as 60_000), got ${describe(ttl)}.`,
    );
  }
}

/**
 * A store on lru-cache in this process: the shared tier of a single instance, or the L1
 * of `tieredStore()`. Entries are kept encoded, so a caller that mutates a value it got
 * back never changes what the next caller sees. A versioned write lands only over
 * nothing or over a value whose load started earlier, as in Redis.
 *
 * @example
 * ```ts
 * import { createSharedCache, memoryStore } from 'context-cache';
 *
 * const settings = createSharedCache<string>({
 *   store: memoryStore({ max: 10_000 }),
 *   ttl: 60_000,
 *   namespace: 'settings',
 * });
 * ```
 */
export function memoryStore(options: MemoryStoreOptions): MemoryStore {
  checkOptions(options);
  const cap = options.ttl;
  const lru = new LRUCache<string, StoreValue>({ max: options.max, ttlAutopurge: false });
  const locks = new Map<string, { token: string; until: number }>();
  // A delete's tombstone keeps its own ttl: it must outlive every write-back of a load
  // that started before the delete, however short the cap on values.
  const life = (ttl: number, value: StoreValue): number =>
    Math.max(1, cap === undefined || isTombstone(value) ? ttl : Math.min(ttl, cap));
  return {
    ttl: cap,
    get size() {
      return lru.size;
    },
    peek: (key) => lru.get(key),
    get: (key) => Promise.resolve(lru.get(key)),
    set(key, value, ttl, version) {
      // The same rule as the Redis script: over nothing or over an older load only.
      if (version !== undefined && !isNewer(version, lru.peek(key))) return Promise.resolve(false);
      lru.set(key, value, { ttl: life(ttl, value) });
      return Promise.resolve(true);
    },
    getMany: (keys) => Promise.resolve(keys.map((key) => lru.get(key))),
    setMany(entries) {
      const landed = entries.map(({ key, value, ttl, version }) => {
        if (!isNewer(version, lru.peek(key))) return false;
        lru.set(key, value, { ttl: life(ttl, value) });
        return true;
      });
      return Promise.resolve(landed);
    },
    delete(key) {
      lru.delete(key);
      return Promise.resolve();
    },
    lock(key, token, ttl) {
      const now = Date.now();
      const held = locks.get(key);
      if (held !== undefined && held.until > now) return Promise.resolve(false);
      locks.set(key, { token, until: now + ttl });
      return Promise.resolve(true);
    },
    unlock(key, token) {
      if (locks.get(key)?.token === token) locks.delete(key);
      return Promise.resolve();
    },
    clear() {
      lru.clear();
      locks.clear();
    },
    close() {
      lru.clear();
      locks.clear();
      return Promise.resolve();
    },
  };
}
