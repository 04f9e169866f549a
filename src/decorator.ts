/**
 * `@cached(group)`: the standard (TC39, TypeScript 5+) method decorator form of
 * `contextCached`, for repository classes. The controls a `contextCached` getter carries
 * as properties (`invalidate`, `prime`) are reached with `cachedControls(method)`,
 * because a decorator cannot change a method's type.
 */

import { claimGroup } from './groups.js';
import type { CacheKey } from './keys.js';
import { checkGroup } from './keys.js';
import type { LoaderContext } from './scope.js';
import { describe } from './warnings.js';
import { type ContextCachedOptions, groupTiers, lookup, type TierLoader } from './wrap.js';

/**
 * What `cachedControls()` returns for a method decorated with `@cached(group)`: the
 * same `invalidate` and `prime` a `contextCached` getter has.
 *
 * @example
 * ```ts
 * const { invalidate, prime, group } = cachedControls(users.getById);
 * ```
 */
export interface CachedControls<K extends CacheKey, T> {
  /** The group the method caches under. */
  readonly group: string;
  /**
   * Drop `key` from the request cache at once and from the shared tier, if any. The
   * promise resolves when the shared store has dropped the key and other instances
   * have been told; it rejects when the shared store could not be reached.
   */
  invalidate(key: K): Promise<void>;
  /** Store `value` for `key` in the request cache, replacing any value there. */
  prime(key: K, value: T): void;
}

/** The method a `@cached` decorator accepts: one key, and a promise of the value. */
export type CachedMethod<This, K extends CacheKey, T> = (
  this: This,
  key: K,
  ctx: LoaderContext,
) => PromiseLike<T>;

/** The method `@cached` puts in its place: the key in, a promise of the value out. */
export type CachedMethodReplacement<This, K extends CacheKey, T> = (
  this: This,
  key: K,
) => Promise<T>;

// biome-ignore lint/complexity/noBannedTypes: any decorated method is looked up by identity.
const controlsOf = new WeakMap<Function, CachedControls<CacheKey, unknown>>();

/**
 * A standard method decorator that makes a class method a per-request cached getter,
 * exactly as `contextCached(group, loader, options)` does for a function: each key loads
 * once per request (concurrent calls share the load), errors are not cached, the
 * request cache is read first, then `options.shared`, then the method itself. The
 * method receives the key and the loader context (`{ signal }`, the request's).
 *
 * The group names the cache, not the instance: every instance of the class (and any
 * `contextCached` getter with the same group) shares the entries, as with
 * `contextCached`. Use `cachedControls(method)` to invalidate or prime a key.
 *
 * Needs standard decorators: TypeScript 5+ without `experimentalDecorators`, or a
 * compiler that implements them (esbuild, SWC, Babel's `2023-11` decorators).
 *
 * @example
 * ```ts
 * class UserRepository {
 *   @cached('user')
 *   async getById(id: number): Promise<User> {
 *     return db.users.find(id);
 *   }
 *
 *   async rename(id: number, name: string): Promise<void> {
 *     await db.users.update(id, { name });
 *     await cachedControls(this.getById).invalidate(id);
 *   }
 * }
 * ```
 */
export function cached<V = unknown>(
  group: string,
  options?: ContextCachedOptions<V>,
): <This, K extends CacheKey, T extends V>(
  method: CachedMethod<This, K, T>,
  context: ClassMethodDecoratorContext<This, CachedMethod<This, K, T>>,
) => CachedMethodReplacement<This, K, T> {
  checkGroup('cached', group);
  const tiers = groupTiers<V>('cached', group, options);
  const { invalidate, prime } = tiers;
  const controls: CachedControls<CacheKey, unknown> = {
    group,
    invalidate,
    prime: prime as (key: CacheKey, value: unknown) => void,
  };

  return function decorateCached<This, K extends CacheKey, T extends V>(
    method: CachedMethod<This, K, T>,
    context: ClassMethodDecoratorContext<This, CachedMethod<This, K, T>>,
  ): CachedMethodReplacement<This, K, T> {
    if (
      typeof context !== 'object' ||
      context === null ||
      typeof (context as { kind?: unknown }).kind !== 'string'
    ) {
      throw new TypeError(
        `@cached('${group}') is a standard decorator, but it was called as a legacy one ` +
          `(with ${describe(context)} as its second argument). Turn off ` +
          '"experimentalDecorators" in tsconfig.json, or use contextCached() instead.',
      );
    }
    if (context.kind !== 'method' || typeof method !== 'function') {
      throw new TypeError(
        `@cached('${group}') decorates a class method such as getById(id), ` +
          `got a ${String(context.kind)} (${String(context.name)}).`,
      );
    }
    claimGroup('contextCached', group, method, cached);
    // The loader takes the instance as `this` (see `lookup`): a hit allocates nothing.
    const load = tiers.load(method as TierLoader<K, T>);
    const cachedMethod: CachedMethodReplacement<This, K, T> = function cachedMethod(
      this: This,
      key: K,
    ): Promise<T> {
      return lookup(group, key, load as never, cachedMethod, this) as Promise<T>;
    };
    controlsOf.set(cachedMethod, controls);
    return cachedMethod;
  };
}

/**
 * The `invalidate` and `prime` controls of a method decorated with `@cached(group)`,
 * typed from the method. Pass the method itself (`this.getById`,
 * `repo.getById` or `UserRepository.prototype.getById`); the controls are the same for
 * every instance, since the group names the cache.
 *
 * @example
 * ```ts
 * await db.users.update(id, { name });
 * await cachedControls(users.getById).invalidate(id);
 * cachedControls(users.getById).prime(user.id, user); // after loading a list
 * ```
 */
export function cachedControls<K extends CacheKey, T>(
  method: (key: K, ctx: LoaderContext) => PromiseLike<T>,
): CachedControls<K, T> {
  const controls = typeof method === 'function' ? controlsOf.get(method) : undefined;
  if (controls === undefined) {
    throw new TypeError(
      `cachedControls(): method must be a method decorated with @cached(group), such as ` +
        `repo.getById, got ${describe(method)}.`,
    );
  }
  return controls as CachedControls<K, T>;
}
