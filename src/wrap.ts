/**
 * The lookup functions: memoize a load in the active request cache, or pass through to
 * the loader when there is none (Gitea's behaviour outside a cache context).
 */

import { type CacheKey, checkGroup, checkKey, checkLoader } from './keys.js';
import { currentScope, type LoaderContext } from './scope.js';
import { GROUP_VIEW, type SharedCache, type SharedGroupView } from './shared/types.js';
import { describe, type StackCut } from './warnings.js';

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
  checkKey('getWithContextCache', key); // the same TypeError as with a cache
  try {
    return Promise.resolve(loader.call(thisArg, key, scope?.loaderContext ?? NO_CONTEXT));
  } catch (err) {
    return Promise.reject(err);
  }
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
export function getWithContextCache<K extends CacheKey, T>(
  group: string,
  key: K,
  loader: (key: K, ctx: LoaderContext) => T | PromiseLike<T>,
): Promise<T> {
  return lookup(group, key, loader, getWithContextCache);
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
  return loader(key);
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
export function setContextData(group: string, key: CacheKey, value: unknown): void {
  const cache = currentScope()?.cache;
  if (cache !== undefined) {
    cache.setData('setContextData', group, key, value, setContextData);
    return;
  }
  validateOutside('setContextData', group, key);
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
export function removeContextData(group: string, key: CacheKey): void {
  const cache = currentScope()?.cache;
  if (cache !== undefined) {
    cache.removeData('removeContextData', group, key, removeContextData);
    return;
  }
  validateOutside('removeContextData', group, key);
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

/** Options of `contextCached`. */
export interface ContextCachedOptions<T> {
  /** A shared tier behind the request cache, made by `createSharedCache()`. */
  shared?: SharedCache<T>;
}

/**
 * Wrap a repository getter: the returned function loads each key once per request,
 * reading the request cache first, then the shared tier (if given), then `loader`.
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
  const { view, invalidate, prime } = groupTiers('contextCached', group, options);
  const load: (key: K, ctx: LoaderContext) => T | PromiseLike<T> =
    view === undefined
      ? loader
      : (key) => view.getOrLoad(key, loader as (key: CacheKey, ctx: LoaderContext) => T);
  const cached = (key: K): Promise<T> => lookup(group, key, load, cached);
  cached.invalidate = invalidate;
  cached.prime = prime;
  return cached;
}

/** The shared view of a group (if any) and its `invalidate` and `prime`. */
export interface GroupTiers<T> {
  readonly view: SharedGroupView<T> | undefined;
  invalidate(key: CacheKey): Promise<void>;
  prime(key: CacheKey, value: T): void;
}

/**
 * What `contextCached` and `@cached` share: the group's view of `options.shared`
 * (checked), and `invalidate` / `prime` over both tiers. `fn` names the caller in errors.
 */
export function groupTiers<T>(
  fn: string,
  group: string,
  options: ContextCachedOptions<T> | undefined,
): GroupTiers<T> {
  const shared = options?.shared;
  let view: SharedGroupView<T> | undefined;
  if (shared !== undefined) {
    if (typeof shared !== 'object' || shared === null || typeof shared[GROUP_VIEW] !== 'function') {
      throw new TypeError(
        `${fn}(): options.shared must be a cache made by createSharedCache(), got ${describe(shared)}.`,
      );
    }
    view = shared[GROUP_VIEW](group);
  }
  return {
    view,
    invalidate(key) {
      removeContextData(group, key);
      return view === undefined ? Promise.resolve() : view.delete(key);
    },
    prime(key, value) {
      setContextData(group, key, value);
    },
  };
}
