/**
 * `@cached(group)`: the method decorator form of `contextCached`, for repository and
 * service classes, under standard decorators and under `experimentalDecorators` alike.
 * The controls a `contextCached` getter carries as properties (`invalidate`, `prime`) are
 * reached with `cachedControls(method)`, because a decorator cannot change a method's type.
 */

import { claimGroup } from './groups.js';
import type { CacheKey } from './keys.js';
import { checkGroup } from './keys.js';
import type { LoaderContext } from './scope.js';
import { describe, labelCalls } from './warnings.js';
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
 * The method descriptor a legacy (`experimentalDecorators`) method decorator receives.
 * Only `value` is read; `TypedPropertyDescriptor` of the method is assignable to it.
 */
export interface CachedMethodDescriptor<K extends CacheKey, T> {
  value?: (key: K, ctx: LoaderContext) => PromiseLike<T>;
}

/**
 * What `cached(group)` returns: a method decorator in both of TypeScript's forms,
 * told apart by the arguments it receives. Under standard decorators (TypeScript 5+
 * without `experimentalDecorators`, esbuild, SWC, Babel `2023-11`) it is called with
 * `(method, context)` and returns the cached method; under `experimentalDecorators`
 * (every Nest project, with or without `emitDecoratorMetadata`) it is called with
 * `(target, propertyKey, descriptor)` and puts the cached method in the descriptor.
 */
export interface CachedDecorator<V> {
  /** The standard (TC39) form. */
  <This, K extends CacheKey, T extends V>(
    method: CachedMethod<This, K, T>,
    context: ClassMethodDecoratorContext<This, CachedMethod<This, K, T>>,
  ): CachedMethodReplacement<This, K, T>;
  /** The legacy (`experimentalDecorators`) form. */
  <K extends CacheKey, T extends V>(
    target: object,
    propertyKey: string | symbol,
    descriptor: CachedMethodDescriptor<K, T>,
  ): void;
}

/** A class member decorator called in the standard form: its context names its kind. */
function isStandardContext(context: unknown): context is DecoratorContext {
  return (
    typeof context === 'object' &&
    context !== null &&
    typeof (context as { kind?: unknown }).kind === 'string'
  );
}

/**
 * A method decorator that makes a class method a per-request cached getter,
 * exactly as `contextCached(group, loader, options)` does for a function: each key loads
 * once per request (concurrent calls share the load), errors are not cached, the
 * request cache is read first, then `options.shared`, then the method itself. The
 * method receives the key and the loader context (`{ signal }`, the request's).
 *
 * The group names the cache, not the instance: every instance of the class (and any
 * `contextCached` getter with the same group) shares the entries, as with
 * `contextCached`. Use `cachedControls(method)` to invalidate or prime a key.
 *
 * Works under standard decorators (TypeScript 5+ without `experimentalDecorators`,
 * esbuild, SWC, Babel's `2023-11` decorators) and under TypeScript's
 * `experimentalDecorators` (with or without `emitDecoratorMetadata`, as in every Nest
 * project): the form is told from the arguments the decorator receives.
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
): CachedDecorator<V> {
  checkGroup('cached', group);
  const tiers = groupTiers<V>('cached', group, options);
  const { invalidate, prime } = tiers;
  const controls: CachedControls<CacheKey, unknown> = {
    group,
    invalidate,
    prime: prime as (key: CacheKey, value: unknown) => void,
  };

  /** The cached method that takes the place of `method`, in either form. */
  function cacheMethod<This, K extends CacheKey, T extends V>(
    method: CachedMethod<This, K, T>,
  ): CachedMethodReplacement<This, K, T> {
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
    labelCalls(cachedMethod, `@cached('${group}') ${method.name || 'method'}()`);
    return cachedMethod;
  }

  function decorateCached(method: unknown, context: unknown, descriptor?: unknown): unknown {
    if (isStandardContext(context)) {
      if (context.kind !== 'method' || typeof method !== 'function') {
        throw new TypeError(
          `@cached('${group}') decorates a class method such as getById(id), ` +
            `got a ${String(context.kind)} (${String(context.name)}).`,
        );
      }
      return cacheMethod(method as CachedMethod<unknown, CacheKey, V>);
    }
    if (typeof context === 'string' || typeof context === 'symbol') {
      // Legacy: (prototype or constructor, member name, descriptor). A field has no
      // descriptor; an accessor's has get/set instead of a function value.
      const value = (descriptor as PropertyDescriptor | undefined)?.value;
      if (typeof value !== 'function') {
        const kind =
          descriptor === undefined || descriptor === null
            ? 'field'
            : (descriptor as PropertyDescriptor).get !== undefined ||
                (descriptor as PropertyDescriptor).set !== undefined
              ? 'getter or setter'
              : 'property';
        throw new TypeError(
          `@cached('${group}') decorates a class method such as getById(id), ` +
            `got a ${kind} (${String(context)}).`,
        );
      }
      (descriptor as PropertyDescriptor).value = cacheMethod(
        value as CachedMethod<unknown, CacheKey, V>,
      );
      return descriptor;
    }
    throw new TypeError(
      `@cached('${group}') decorates a class method such as getById(id), but it was called ` +
        `with ${describe(context)} as its second argument, which is neither a standard ` +
        "decorator's context nor a legacy decorator's member name. Apply it with @ to a method.",
    );
  }
  return decorateCached as CachedDecorator<V>;
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
