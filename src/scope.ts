/**
 * The scope: one `AsyncLocalStorage<ScopeState>` for the whole process. It lives on
 * `globalThis` under a registered symbol that carries the major version, so an ESM
 * import and a CJS require of this package (or two installs of one major version)
 * share it: a cache opened by one copy is seen by the other.
 *
 * Nesting rules (`With` = withCacheContext, `WithNo` = withNoCacheContext), after
 * Gitea's context cache (go-gitea/gitea PR 23330):
 *
 * | nesting                                     | scope inside | meaning                                    |
 * |---------------------------------------------|--------------|--------------------------------------------|
 * | `With(ctx)`                                 | A            | new cache                                  |
 * | `With(With(ctx))`                           | A            | reuse the active cache, never stack        |
 * | `With(With(With(ctx)))`                     | A            | ditto                                      |
 * | `WithNo(ctx)`                               | ctx          | nothing to discard, nothing created        |
 * | `WithNo(With(ctx))`                         | A′           | caching off inside                         |
 * | `WithNo(WithNo(With(ctx)))`                 | A′           | stays off, nothing new                     |
 * | `With(WithNo(With(ctx)))`                   | B            | a discarded cache is never reused: new B   |
 * | `WithNo(With(WithNo(With(ctx))))`           | B′           |                                            |
 * | `With(WithNo(With(WithNo(With(ctx)))))`     | C            | only one live cache at a time              |
 *
 * One deliberate difference from Go: there `WithNo` discards the shared cache object,
 * so the parent request loses its cache too. Here the scope inside `WithNo` simply
 * holds no reference to A: long-lived work started there cannot keep A's data alive,
 * and the request that started it keeps caching.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import {
  Cache,
  DEFAULT_LIFETIME,
  DEFAULT_MAX_ENTRIES,
  EMPTY_CONTEXT,
  type EphemeralCache,
  isThenable,
} from './ephemeral.js';
import { checkOptionNames, describe, isCount, isDuration } from './warnings.js';

/** What a loader receives besides its key. */
export interface LoaderContext {
  /** The request's signal: aborts when the client disconnects or the response is sent. */
  readonly signal?: AbortSignal;
  /**
   * Inside `withTransaction(tx, fn)`: `tx`, the transaction the loader should run its
   * query on (`(ctx.transaction ?? db).query(...)`). `undefined` elsewhere.
   */
  readonly transaction?: unknown;
}

/** The value kept in the AsyncLocalStorage: the request cache and the request's signal. */
export interface ScopeState {
  readonly cache: Cache | undefined;
  readonly signal: AbortSignal | undefined;
  /** Handed to loaders; made at most once per scope, so a load allocates no context object. */
  readonly loaderContext: LoaderContext;
}

/**
 * A scope without a cache of its own (inside `withNoCacheContext`, `detach`, or the
 * pools' bookkeeping). A scope with a cache is the `Cache` itself.
 */
export class Scope implements ScopeState {
  readonly cache: Cache | undefined;
  readonly signal: AbortSignal | undefined;
  readonly loaderContext: LoaderContext;

  constructor(cache: Cache | undefined, signal: AbortSignal | undefined) {
    this.cache = cache;
    this.signal = signal;
    this.loaderContext = signal === undefined ? EMPTY_CONTEXT : { signal };
  }
}

/** Bump with the major version when `Scope` changes shape. */
const REGISTRY_KEY = Symbol.for('context-cache.scope.v1');
const VERSION = '1';

interface Registry {
  readonly version: string;
  readonly storage: AsyncLocalStorage<ScopeState>;
  /** The default background pool (`background.ts`), created on first use. */
  backgroundPool?: unknown;
  /** The runtime's execution context of each request, where an adapter knows it. */
  execution?: AsyncLocalStorage<ExecutionContext>;
}

/**
 * What Workers hands a `fetch` handler as its third argument (Hono's `c.executionCtx`):
 * `waitUntil` keeps the request's invocation alive until a promise settles.
 */
export interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
}

type GlobalWithRegistry = typeof globalThis & { [REGISTRY_KEY]?: Registry };

let storage: AsyncLocalStorage<ScopeState> | undefined;

/** The process-wide storage, created on first use (importing has no side effect). */
export function scopeStorage(): AsyncLocalStorage<ScopeState> {
  if (storage !== undefined) return storage;
  const g = globalThis as GlobalWithRegistry;
  let registry = g[REGISTRY_KEY];
  if (registry === undefined) {
    registry = { version: VERSION, storage: new AsyncLocalStorage<ScopeState>() };
    Object.defineProperty(g, REGISTRY_KEY, { value: registry, enumerable: false });
  }
  storage = registry.storage;
  return storage;
}

/**
 * The process-wide default background pool, shared like the storage by every copy of
 * this package; `create` makes it on first use.
 */
export function sharedBackgroundPool<T>(create: () => T): T {
  const reg = registry();
  reg.backgroundPool ??= create();
  return reg.backgroundPool as T;
}

function registry(): Registry {
  scopeStorage();
  return (globalThis as GlobalWithRegistry)[REGISTRY_KEY]!;
}

/**
 * Run `fn` with `context` as the request's execution context (adapters on runtimes that
 * have one). It is a storage of its own, not part of the scope, so it reaches work the
 * request starts in any scope: inside `withNoCacheContext`, `detach` and background
 * tasks alike.
 */
export function runWithExecutionContext<T>(context: ExecutionContext, fn: () => T): T {
  const reg = registry();
  reg.execution ??= new AsyncLocalStorage<ExecutionContext>();
  return reg.execution.run(context, fn);
}

/** The execution context of the current request, if an adapter gave one. */
export function currentExecutionContext(): ExecutionContext | undefined {
  return (globalThis as GlobalWithRegistry)[REGISTRY_KEY]?.execution?.getStore();
}

/** The active scope, if any. */
export function currentScope(): ScopeState | undefined {
  return (storage ?? scopeStorage()).getStore();
}

/** Run `fn` in `scope`. */
export function runInScope<T>(scope: ScopeState, fn: () => T): T {
  return (storage ?? scopeStorage()).run(scope, fn);
}

/** A scope with no cache and no signal. */
let blank: Scope | undefined;

/**
 * Run `fn` outside any request: in a scope with no cache and no signal, so timers and
 * promises it creates do not keep a request's cache reachable. (Not
 * `AsyncLocalStorage.exit`: on Node 20 that only switches the storage off until a
 * nested `run` switches it back on, and what is created after that carries the
 * request again.)
 */
export function outsideScope<T>(fn: () => T): T {
  blank ??= new Scope(undefined, undefined);
  return (storage ?? scopeStorage()).run(blank, fn);
}

/** Options of `withCacheContext`. */
export interface CacheContextOptions {
  /** How long the cache serves, in ms (default 5 minutes). */
  lifetime?: number;
  /** At most this many entries; past it the oldest inserted are evicted (default 10,000). */
  maxEntries?: number;
  /**
   * The request's signal, handed to loaders and returned by `currentSignal()`.
   * Without it the enclosing scope's signal (if any) is kept. A function returning the
   * signal is called once, the first time anything asks for it (`currentSignal()`, a
   * loader reading `ctx.signal`): adapters pass one, so a request that never looks at
   * its signal never makes an `AbortController`.
   */
  signal?: AbortSignal | (() => AbortSignal);
}

const CONTEXT_OPTIONS = ['lifetime', 'maxEntries', 'signal'] as const;

function checkOptions(options: unknown): void {
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `withCacheContext(): options must be an object such as { lifetime: 60_000 }, got ${describe(options)}.`,
    );
  }
  // Adapters come through here once per request: the names are compared inline (no
  // array search) and only an unknown one builds the error.
  for (const name in options) {
    if (name !== 'lifetime' && name !== 'maxEntries' && name !== 'signal') {
      checkOptionNames('withCacheContext', options, CONTEXT_OPTIONS);
    }
  }
  const { lifetime, maxEntries, signal } = options as Record<string, unknown>;
  if (lifetime !== undefined && !isDuration(lifetime)) {
    throw new TypeError(
      `withCacheContext(): options.lifetime must be a positive number of milliseconds, got ${describe(lifetime)}.`,
    );
  }
  if (maxEntries !== undefined && !isCount(maxEntries, 1)) {
    throw new TypeError(
      `withCacheContext(): options.maxEntries must be a positive integer, got ${describe(maxEntries)}.`,
    );
  }
  if (
    signal !== undefined &&
    typeof signal !== 'function' &&
    !(
      typeof signal === 'object' &&
      signal !== null &&
      typeof (signal as AbortSignal).aborted === 'boolean' &&
      typeof (signal as AbortSignal).addEventListener === 'function'
    )
  ) {
    throw new TypeError(
      `withCacheContext(): options.signal must be an AbortSignal (such as an AbortController's signal) or a function returning one, got ${describe(signal)}.`,
    );
  }
}

function checkFn(name: string, fn: unknown): void {
  if (typeof fn !== 'function') {
    throw new TypeError(
      `${name}(): fn must be the function to run inside the scope, such as () => next(), got ${describe(fn)}.`,
    );
  }
}

/**
 * Run `fn` with a request cache. Inside an active, not yet ended cache it reuses that
 * cache (and ignores `options`); otherwise it opens a new one for `fn` and everything
 * `fn` starts, across every `await` and callback. Returns what `fn` returns.
 *
 * @example
 * ```ts
 * await withCacheContext(async () => {
 *   await renderPage(); // every getUser(1) inside loads user 1 once
 * }, { signal: request.signal });
 * ```
 */
export function withCacheContext<T>(fn: () => T, options?: CacheContextOptions): T {
  checkFn('withCacheContext', fn);
  const store = storage ?? scopeStorage();
  const parent = store.getStore();
  if (parent?.cache !== undefined && !parent.cache.ended) {
    // Options are ignored here, and still checked: a call is wrong or right wherever it runs.
    if (options !== undefined) checkOptions(options);
    return fn();
  }
  if (options === undefined) {
    return store.run(new Cache(DEFAULT_LIFETIME, DEFAULT_MAX_ENTRIES, parent?.signal), fn);
  }
  checkOptions(options);
  const cache = new Cache(
    options.lifetime ?? DEFAULT_LIFETIME,
    options.maxEntries ?? DEFAULT_MAX_ENTRIES,
    options.signal ?? parent?.signal,
  );
  return store.run(cache, fn);
}

/**
 * Run `fn` with caching turned off: lookups inside call their loaders every time, and
 * nothing inside can reach (or keep alive) the enclosing request cache, which goes on
 * caching for the rest of the request. The request's signal is kept.
 *
 * @example
 * ```ts
 * withNoCacheContext(() => rebuildSearchIndex()); // long-running: must not hold the request cache
 * ```
 */
export function withNoCacheContext<T>(fn: () => T): T {
  checkFn('withNoCacheContext', fn);
  const store = storage ?? scopeStorage();
  const parent = store.getStore();
  if (parent?.cache === undefined) return fn();
  return store.run(new Scope(undefined, parent.signal), fn);
}

/**
 * The active request cache, or `undefined` outside a cache context, inside
 * `withNoCacheContext`, or once the cache has ended.
 *
 * @example
 * ```ts
 * const stats = getContextCache()?.stats(); // { hits, joins, misses, loads, errors, evictions, batches }
 * ```
 */
export function getContextCache(): EphemeralCache | undefined {
  const cache = (storage ?? scopeStorage()).getStore()?.cache;
  return cache === undefined || cache.ended ? undefined : cache;
}

/**
 * The signal of the enclosing request scope: it aborts when the client disconnects or
 * the response has been sent. `undefined` when no enclosing scope has a signal.
 *
 * @example
 * ```ts
 * const rows = await db.query(sql, { signal: currentSignal() });
 * ```
 */
export function currentSignal(): AbortSignal | undefined {
  return (storage ?? scopeStorage()).getStore()?.signal;
}

/**
 * Run `fn` inside a database transaction's own cache. Lookups inside (`contextCached`
 * getters, `getWithContextCache`, `@cached` methods) go to a cache that belongs to this
 * transaction alone: their loaders receive `transaction` as `ctx.transaction` (run the
 * query on it, and a read after a write in the same transaction sees the write), the
 * shared tier is neither read nor written, and what was loaded is dropped when `fn`
 * settles, whether the transaction commits or rolls back. `invalidate(key)` and
 * `removeContextData` inside also clear the key in the request's cache around it (and
 * a getter's shared tier), since the transaction may commit. Returns what `fn` returns.
 *
 * @example
 * ```ts
 * const getUser = contextCached('user', (id: number, { transaction }) =>
 *   ((transaction as Transaction | undefined) ?? db).query('select * from users where id = $1', [id]),
 * );
 *
 * await db.transaction((tx) =>
 *   withTransaction(tx, async () => {
 *     await tx.query('update users set name = $1 where id = $2', [name, id]);
 *     await getUser.invalidate(id);
 *     return getUser(id); // loaded on tx: sees the new name, never shared
 *   }),
 * );
 * ```
 */
export function withTransaction<T>(transaction: NonNullable<unknown>, fn: () => T): T {
  if (transaction === undefined || transaction === null) {
    throw new TypeError(
      'withTransaction(): transaction must be the transaction your loaders should query, ' +
        `such as the tx of db.transaction(async (tx) => ...), got ${describe(transaction)}.`,
    );
  }
  checkFn('withTransaction', fn);
  const store = storage ?? scopeStorage();
  const parent = store.getStore();
  const outer = parent?.cache !== undefined && !parent.cache.ended ? parent.cache : undefined;
  const cache = new Cache(
    outer?.lifetime ?? DEFAULT_LIFETIME,
    outer?.maxEntries ?? DEFAULT_MAX_ENTRIES,
    parent?.signal,
  );
  cache.transaction = transaction;
  cache.outer = outer;
  let result: T;
  try {
    result = store.run(cache, fn);
  } catch (err) {
    cache.discard();
    throw err;
  }
  if (!isThenable(result)) {
    cache.discard();
    return result;
  }
  // A new promise that settles as `result` does, after the cache is dropped: a
  // rejection the caller ignores stays theirs (reported as unhandled), as without us.
  // Through Promise.resolve: a thenable that is not a promise settles it as `await`
  // would, and one whose `then` throws still drops the cache.
  return Promise.resolve(result).then(
    (value) => {
      cache.discard();
      return value;
    },
    (err: unknown) => {
      cache.discard();
      throw err;
    },
  ) as T;
}
