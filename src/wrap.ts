/**
 * The lookup functions: memoize a load in the active request cache, or pass through to
 * the loader when there is none (Gitea's behaviour outside a cache context).
 */

import { checkTimeout, withDeadline } from './deadline.js';
import { asyncLoaderError, isThenable } from './ephemeral.js';
import { claimGroup } from './groups.js';
import {
  type CacheKey,
  type CheckedKey,
  checkGroup,
  checkKey,
  checkLoader,
  type KeyCandidate,
} from './keys.js';
import { currentScope, type LoaderContext } from './scope.js';
import { GROUP_VIEW, type SharedCache, type SharedGroupView } from './shared/types.js';
import { checkOptionNames, describe, labelCalls, type StackCut } from './warnings.js';

const NO_CONTEXT: LoaderContext = Object.freeze({});

/**
 * The async lookup behind `getWithContextCache`, `contextCached` and `@cached`. The
 * loader is called with `thisArg` as `this` (a decorated method's instance), so a
 * caller never needs a fresh closure per call.
 */
export function lookup<K extends CacheKey, T>(
  group: string,
  key: K,
  loader: (key: K, ctx: LoaderContext) => T | PromiseLike<T>,
  cut: StackCut,
  thisArg?: unknown,
): Promise<T> {
  const scope = currentScope();
  const cache = scope?.cache;
  if (cache !== undefined)
    return cache.fetch(group, key, loader as never, cut, thisArg) as Promise<T>;
  checkGroup('getWithContextCache', group);
  checkLoader('getWithContextCache', loader);
  checkKey('getWithContextCache', key, cut); // the same TypeError as with a cache
  let result: T | PromiseLike<T>;
  try {
    result = loader.call(thisArg, key, scope?.loaderContext ?? NO_CONTEXT);
  } catch (err) {
    return handled(Promise.reject(err));
  }
  // A plain value cannot fail: only a promise needs the handler below.
  return isThenable(result) ? handled(Promise.resolve(result)) : Promise.resolve(result);
}

/**
 * `promise`, with a handler that makes a failure nobody awaits not an unhandled
 * rejection, as inside a request cache (which keeps its own handler on every load); a
 * caller that awaits it still gets the error.
 */
function handled<T>(promise: Promise<T>): Promise<T> {
  promise.then(undefined, ignore);
  return promise;
}

function ignore(): void {}

/** Options of `getWithContextCache`. */
export interface LookupOptions {
  /**
   * Milliseconds the loader may take. Past it the callers waiting on the load reject
   * with a `LoadTimeoutError` naming the group, the key and the limit, the entry is
   * dropped and the next call loads again. Default: none. (A lookup given options
   * wraps its loader on every call; a getter made once with `contextCached(group,
   * loader, { timeout })` does not, and suits a hot path better.)
   */
  timeout?: number;
}

const LOOKUP_OPTIONS = ['timeout'] as const;

/** The loader of `getWithContextCache` with a `timeout` (only a load runs it). */
function timedLoader<K extends CacheKey, T>(
  fn: string,
  group: string,
  loader: (key: K, ctx: LoaderContext) => T | PromiseLike<T>,
  timeout: number,
): (key: K, ctx: LoaderContext) => T | PromiseLike<T> {
  return function loadWithTimeout(this: unknown, key, ctx) {
    const result = loader.call(this, key, ctx);
    return isThenable(result) ? withDeadline(result, timeout, fn, group, key) : result;
  };
}

/**
 * Load `key` of `group` once per request: the first call runs `loader` and stores its
 * promise; every later or concurrent call in the same request gets that same promise.
 * A failed load is not stored (the next call loads again). Outside a cache context the
 * loader runs every time. The loader receives the key and `{ signal }`, the request's
 * signal.
 *
 * @example
 * ```ts
 * const user = await getWithContextCache('user', id, (id, { signal }) => db.findUser(id, { signal }));
 * ```
 */
export function getWithContextCache<K extends KeyCandidate, T>(
  group: string,
  key: CheckedKey<K>,
  loader: (key: K, ctx: LoaderContext) => T | PromiseLike<T>,
  options?: LookupOptions,
): Promise<T>;
/** The same, for a key whose type is a type parameter (in generic code). */
export function getWithContextCache<K extends CacheKey, T>(
  group: string,
  key: K,
  loader: (key: K, ctx: LoaderContext) => T | PromiseLike<T>,
  options?: LookupOptions,
): Promise<T>;
export function getWithContextCache<K extends CacheKey, T>(
  group: string,
  key: K,
  loader: (key: K, ctx: LoaderContext) => T | PromiseLike<T>,
  options?: LookupOptions,
): Promise<T> {
  if (options === undefined) return lookup(group, key, loader, getWithContextCache);
  const timeout = checkLookupOptions('getWithContextCache', options);
  checkLoader('getWithContextCache', loader);
  return lookup(
    group,
    key,
    timeout === undefined ? loader : timedLoader('getWithContextCache', group, loader, timeout),
    getWithContextCache,
  );
}

function checkLookupOptions(fn: string, options: unknown): number | undefined {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `${fn}(): options must be an object such as { timeout: 5000 }, got ${describe(options)}.`,
    );
  }
  checkOptionNames(fn, options, LOOKUP_OPTIONS);
  return checkTimeout(fn, (options as LookupOptions).timeout);
}

/**
 * The synchronous variant: returns the stored value, or runs `loader` now and stores
 * what it returns (a throw is not stored). It shares entries with
 * `getWithContextCache`; when it meets a load still in flight it runs its own loader.
 *
 * @example
 * ```ts
 * // one DataLoader per request, however many code paths ask for it
 * const loader = getWithContextCacheSync('loaders', 'user', () => new DataLoader(batchUsers));
 * ```
 */
export function getWithContextCacheSync<K extends KeyCandidate, T>(
  group: string,
  key: CheckedKey<K>,
  loader: (key: K) => T,
): T;
/** The same, for a key whose type is a type parameter (in generic code). */
export function getWithContextCacheSync<K extends CacheKey, T>(
  group: string,
  key: K,
  loader: (key: K) => T,
): T;
export function getWithContextCacheSync<K extends CacheKey, T>(
  group: string,
  key: K,
  loader: (key: K) => T,
): T {
  const cache = currentScope()?.cache;
  if (cache !== undefined) {
    return cache.fetchSync(group, key, loader as never, getWithContextCacheSync) as T;
  }
  checkGroup('getWithContextCacheSync', group);
  checkLoader('getWithContextCacheSync', loader);
  checkKey('getWithContextCacheSync', key);
  const value = loader(key);
  if (isThenable(value)) throw asyncLoaderError(group, value);
  return value;
}

function validateOutside(fn: string, group: unknown, key: unknown): void {
  checkGroup(fn, group);
  checkKey(fn, key);
}

/**
 * The value stored under `(group, key)` in the request cache, or `undefined` (also
 * while its load is still in flight, and outside a cache context).
 *
 * @example
 * ```ts
 * const user = getContextData('user', 1) as User | undefined;
 * ```
 */
export function getContextData<K extends KeyCandidate>(group: string, key: CheckedKey<K>): unknown;
/** The same, for a key whose type is a type parameter (in generic code). */
export function getContextData(group: string, key: CacheKey): unknown;
export function getContextData(group: string, key: CacheKey): unknown {
  const cache = currentScope()?.cache;
  if (cache !== undefined) return cache.getData('getContextData', group, key, getContextData);
  validateOutside('getContextData', group, key);
  return undefined;
}

/**
 * Whether a value is stored under `(group, key)` (a stored `undefined` counts).
 *
 * @example
 * ```ts
 * if (!hasContextData('setting', 'theme')) setContextData('setting', 'theme', await loadTheme());
 * ```
 */
export function hasContextData<K extends KeyCandidate>(group: string, key: CheckedKey<K>): boolean;
/** The same, for a key whose type is a type parameter (in generic code). */
export function hasContextData(group: string, key: CacheKey): boolean;
export function hasContextData(group: string, key: CacheKey): boolean {
  const cache = currentScope()?.cache;
  if (cache !== undefined) return cache.hasData('hasContextData', group, key, hasContextData);
  validateOutside('hasContextData', group, key);
  return false;
}

/**
 * Store a value under `(group, key)` for the rest of the request; a no-op outside a
 * cache context. Replacing a value keeps its place in the eviction order.
 *
 * @example
 * ```ts
 * setContextData('user', user.id, user); // after loading a list, seed the per-id entries
 * ```
 */
export function setContextData<K extends KeyCandidate>(
  group: string,
  key: CheckedKey<K>,
  value: unknown,
): void;
/** The same, for a key whose type is a type parameter (in generic code). */
export function setContextData(group: string, key: CacheKey, value: unknown): void;
export function setContextData(group: string, key: CacheKey, value: unknown): void {
  setIn('setContextData', group, key, value, setContextData);
}

/** `setContextData` as `fn` (named so in messages), called through `cut`. */
function setIn(fn: string, group: string, key: CacheKey, value: unknown, cut: StackCut): void {
  const cache = currentScope()?.cache;
  if (cache !== undefined) {
    cache.setData(fn, group, key, value, cut);
    return;
  }
  validateOutside(fn, group, key);
}

/**
 * Drop `(group, key)` from the request cache, so the next lookup loads again. A load
 * in flight still settles for the callers already waiting on it.
 *
 * @example
 * ```ts
 * await db.renameUser(id, name);
 * removeContextData('user', id);
 * ```
 */
export function removeContextData<K extends KeyCandidate>(group: string, key: CheckedKey<K>): void;
/** The same, for a key whose type is a type parameter (in generic code). */
export function removeContextData(group: string, key: CacheKey): void;
export function removeContextData(group: string, key: CacheKey): void {
  removeIn('removeContextData', group, key, removeContextData);
}

/** `removeContextData` as `fn` (named so in messages), called through `cut`. */
function removeIn(fn: string, group: string, key: CacheKey, cut: StackCut): void {
  const cache = currentScope()?.cache;
  if (cache !== undefined) {
    cache.removeData(fn, group, key, cut);
    return;
  }
  validateOutside(fn, group, key);
}

/** A getter made by `contextCached`: call it with a key, or invalidate or prime a key. */
export interface ContextCachedFunction<K extends CacheKey, T> {
  (key: K): Promise<T>;
  /**
   * Drop `key` from the request cache at once and from the shared tier, if any. The
   * promise resolves when the shared store has dropped the key and other instances
   * have been told; it rejects when the shared store could not be reached.
   */
  invalidate(key: K): Promise<void>;
  /** Store `value` for `key` in the request cache, replacing any value there. */
  prime(key: K, value: T): void;
}

/** Options of `contextCached` (and of `@cached`). */
export interface ContextCachedOptions<T> {
  /** A shared tier behind the request cache, made by `createSharedCache()`. */
  shared?: SharedCache<T>;
  /**
   * Milliseconds the loader may take. Past it the callers waiting on the load reject
   * with a `LoadTimeoutError` (code `CONTEXT_CACHE_LOAD_TIMEOUT`) naming the group, the
   * key and the limit; the entry is dropped and the next call loads again (with a
   * shared tier, the shared load fails too, so other requests load again as well).
   * Default: none.
   */
  timeout?: number;
}

const CACHED_OPTIONS = ['shared', 'timeout'] as const;

/**
 * Wrap a repository getter: the returned function loads each key once per request,
 * reading the request cache first, then the shared tier (if given), then `loader`.
 * Inside `withTransaction(tx, fn)` the loader receives the transaction as
 * `ctx.transaction`, and the shared tier is neither read nor written.
 *
 * @example
 * ```ts
 * export const getUserById = contextCached('user', (id: number) => db.users.find(id));
 * await getUserById(1); // loads
 * await getUserById(1); // same request: served from the request cache
 * ```
 */
export function contextCached<K extends CacheKey, T>(
  group: string,
  loader: (key: K, ctx: LoaderContext) => T | PromiseLike<T>,
  options?: ContextCachedOptions<T>,
): ContextCachedFunction<K, T> {
  checkGroup('contextCached', group);
  checkLoader('contextCached', loader);
  const tiers = groupTiers('contextCached', group, options);
  claimGroup('contextCached', group, loader, contextCached);
  const load = tiers.load(loader);
  const cached = (key: K): Promise<T> => lookup(group, key, load, cached);
  labelCalls(cached, `the getter of contextCached('${group}')`);
  cached.invalidate = tiers.invalidate;
  cached.prime = tiers.prime;
  return cached;
}

/** A loader as the tiers call it: `this` is a decorated method's instance. */
export type TierLoader<K, T> = (key: K, ctx: LoaderContext) => T | PromiseLike<T>;

/** The shared view of a group (if any) and its `invalidate` and `prime`. */
export interface GroupTiers<T> {
  readonly view: SharedGroupView<T> | undefined;
  /** The load timeout in ms, if any. */
  readonly timeout: number | undefined;
  /**
   * What runs on a request-cache miss: `loader` (called with the same `this`), behind
   * the shared tier unless inside a transaction, under the timeout if any.
   */
  load<K extends CacheKey>(loader: TierLoader<K, T>): TierLoader<K, T>;
  invalidate(key: CacheKey): Promise<void>;
  prime(key: CacheKey, value: T): void;
}

/**
 * What `contextCached` and `@cached` share: the options (checked by name), the group's
 * view of `options.shared`, the load through the tiers, and `invalidate` / `prime` over
 * both tiers. `fn` names the caller in errors.
 */
export function groupTiers<T>(
  fn: string,
  group: string,
  options: ContextCachedOptions<T> | undefined,
): GroupTiers<T> {
  if (options !== undefined) {
    if (typeof options !== 'object' || options === null) {
      throw new TypeError(
        `${fn}(): options must be an object such as { shared, timeout: 5000 }, got ${describe(options)}.`,
      );
    }
    checkOptionNames(fn, options, CACHED_OPTIONS);
  }
  const shared = options?.shared;
  const timeout = checkTimeout(fn, options?.timeout);
  let view: SharedGroupView<T> | undefined;
  if (shared !== undefined) {
    if (typeof shared !== 'object' || shared === null || typeof shared[GROUP_VIEW] !== 'function') {
      throw new TypeError(
        `${fn}(): options.shared must be a cache made by createSharedCache(), got ${describe(shared)}.`,
      );
    }
    view = shared[GROUP_VIEW](group);
  }
  // `cachedControls(method).invalidate(key)` of `@cached('user')` names the decorator.
  const named = fn === 'cached' ? '@cached' : fn;
  const invalidateLabel = `${named}('${group}').invalidate()`;
  const primeLabel = `${named}('${group}').prime()`;
  return {
    view,
    timeout,
    load<K extends CacheKey>(loader: TierLoader<K, T>): TierLoader<K, T> {
      const timed: TierLoader<K, T> =
        timeout === undefined ? loader : timedLoader(fn, group, loader, timeout);
      if (view === undefined) return timed;
      const shared = view;
      return function loadThroughShared(this: unknown, key, ctx) {
        // A transaction's reads may see its own uncommitted writes: never share them.
        if (ctx.transaction !== undefined) return timed.call(this, key, ctx);
        // The shared load's own signal: it aborts only when every waiter has gone.
        return shared.getOrLoad(key, (k, sharedCtx) => timed.call(this, k as K, sharedCtx));
      };
    },
    invalidate: function invalidate(key) {
      removeIn(invalidateLabel, group, key, invalidate);
      return view === undefined ? Promise.resolve() : view.delete(key);
    },
    prime: function prime(key, value) {
      setIn(primeLabel, group, key, value, prime);
    },
  };
}
