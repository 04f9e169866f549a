// Type tests: checked by `tsc -p tsconfig.spec.json` (part of `npm test`), never run.
// A wrong expectation, or a `@ts-expect-error` line that compiles, fails the build.
import { expectTypeOf } from 'vitest';
import {
  type CacheKey,
  type CacheStats,
  type ContextCachedFunction,
  contextCached,
  createBackgroundPool,
  currentSignal,
  detach,
  drainBackground,
  type EphemeralCache,
  getContextCache,
  getContextData,
  getWithContextCache,
  getWithContextCacheSync,
  hasContextData,
  type LoaderContext,
  runInBackground,
  type SharedCache,
  setContextData,
  withCacheContext,
  withNoCacheContext,
  withTransaction,
} from '../../src/index.js';

interface User {
  id: number;
  name: string;
}
declare const findUser: (id: number, signal?: AbortSignal) => Promise<User>;
declare const userCache: SharedCache<User>;
declare const repoCache: SharedCache<{ slug: string }>;

// contextCached: the key type comes from the loader's parameter, the value from its result.
const getUser = contextCached('user', (id: number, { signal }) => findUser(id, signal));
expectTypeOf(getUser).toEqualTypeOf<ContextCachedFunction<number, User>>();
expectTypeOf(getUser).parameter(0).toEqualTypeOf<number>();
expectTypeOf(getUser(1)).toEqualTypeOf<Promise<User>>();
expectTypeOf(getUser.invalidate).toEqualTypeOf<(key: number) => Promise<void>>();
expectTypeOf(getUser.prime).toEqualTypeOf<(key: number, value: User) => void>();

// A synchronous loader still gives an async getter; nullable values stay nullable.
const getSetting = contextCached('setting', (name: 'theme' | 'lang') =>
  name === 'theme' ? 'dark' : undefined,
);
expectTypeOf(getSetting).parameter(0).toEqualTypeOf<'theme' | 'lang'>();
expectTypeOf(getSetting('theme')).toEqualTypeOf<Promise<'dark' | undefined>>();

// Composite keys: a tuple of primitives.
const getMembership = contextCached(
  'membership',
  async ([repoId, userId]: readonly [number, number]) => ({ repoId, userId, admin: false }),
);
expectTypeOf(getMembership).parameter(0).toEqualTypeOf<readonly [number, number]>();
expectTypeOf(getMembership([1, 2]))
  .resolves.toHaveProperty('admin')
  .toEqualTypeOf<boolean>();
// @ts-expect-error a composite key is called with the whole tuple, not with two arguments
getMembership(1, 2);

// The loader receives the key and the loader context (the request's optional signal).
contextCached('user', (id: bigint, ctx) => {
  expectTypeOf(id).toEqualTypeOf<bigint>();
  expectTypeOf(ctx).toEqualTypeOf<LoaderContext>();
  expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal | undefined>();
  return null;
});

// A shared tier must hold the getter's value type.
contextCached('user', (id: number) => findUser(id), { shared: userCache });
// @ts-expect-error a shared cache of repositories cannot back a getter of users
contextCached('user', (id: number) => findUser(id), { shared: repoCache });

// getWithContextCache: the loader gets the key back with the argument's type (a literal
// stays literal), and the loader context. Checked through the result: an assertion inside
// a loader whose parameters are inferred runs while TypeScript is still inferring them.
declare const userId: number;
const user = getWithContextCache('user', userId, (id, ctx) => findUser(id, ctx.signal));
expectTypeOf(user).toEqualTypeOf<Promise<User>>();
expectTypeOf(getWithContextCache('user', userId, (id, ctx) => [id, ctx] as const)).toEqualTypeOf<
  Promise<readonly [number, LoaderContext]>
>();
expectTypeOf(getWithContextCache('user', 7, (id) => id)).toEqualTypeOf<Promise<7>>();
expectTypeOf(
  getWithContextCache('repo', ['acme', 'web'], async ([owner, name]) => `${owner}/${name}`),
).toEqualTypeOf<Promise<string>>();
// A thenable result is unwrapped too.
declare const query: PromiseLike<User[]>;
expectTypeOf(getWithContextCache('users', 'all', () => query)).toEqualTypeOf<Promise<User[]>>();

// getWithContextCacheSync: no promise added, no loader context.
class DataLoaderLike {
  load(_id: number): Promise<User> {
    return findUser(_id);
  }
}
const loader = getWithContextCacheSync('loaders', 'user', () => new DataLoaderLike());
expectTypeOf(loader).toEqualTypeOf<DataLoaderLike>();
expectTypeOf(getWithContextCacheSync('x', userId, (key) => [key] as const)).toEqualTypeOf<
  readonly [number]
>();
// @ts-expect-error the sync loader receives no loader context
getWithContextCacheSync('x', 1, (_key: number, _ctx: LoaderContext) => 1);

// Keys: primitives and arrays of primitives, never objects.
expectTypeOf<string>().toExtend<CacheKey>();
expectTypeOf<readonly [number, string, null]>().toExtend<CacheKey>();
expectTypeOf<{ id: number }>().not.toExtend<CacheKey>();
expectTypeOf<Date>().not.toExtend<CacheKey>();
expectTypeOf<symbol>().not.toExtend<CacheKey>();
expectTypeOf<number[][]>().not.toExtend<CacheKey>();
declare const someUser: User;
// @ts-expect-error an object is not a key: pass user.id
getWithContextCache('user', someUser, async () => someUser);
// @ts-expect-error an object is not a key, in contextCached either
contextCached('user', async (u: User) => u.name);
// @ts-expect-error nested arrays are not keys
getWithContextCache('user', [[1]], async () => 1);
// @ts-expect-error a Date is not a key: pass date.getTime()
setContextData('day', new Date(), 1);
// @ts-expect-error a getter of number keys cannot be called with a string
getUser('1');
// @ts-expect-error prime must get a value of the getter's type
getUser.prime(1, { id: 1 });
// @ts-expect-error the group is a string
getWithContextCache(1, 1, async () => 1);

// Data functions: values are unknown (no group-wide type), presence is boolean.
expectTypeOf(getContextData('user', 1)).toEqualTypeOf<unknown>();
expectTypeOf(hasContextData('user', 1)).toEqualTypeOf<boolean>();

// Scopes return what their function returns; options are checked.
expectTypeOf(withCacheContext(() => 42)).toEqualTypeOf<number>();
expectTypeOf(withCacheContext(async () => 'x')).toEqualTypeOf<Promise<string>>();
expectTypeOf(withNoCacheContext(() => true)).toEqualTypeOf<boolean>();
withCacheContext(() => 0, {
  lifetime: 60_000,
  maxEntries: 100,
  signal: new AbortController().signal,
});
// @ts-expect-error lifetime is a number of milliseconds
withCacheContext(() => 0, { lifetime: '1m' });
// @ts-expect-error exactOptionalPropertyTypes: leave the option out rather than passing undefined
withCacheContext(() => 0, { signal: undefined });
expectTypeOf(getContextCache()).toEqualTypeOf<EphemeralCache | undefined>();
expectTypeOf(currentSignal()).toEqualTypeOf<AbortSignal | undefined>();
expectTypeOf<ReturnType<EphemeralCache['stats']>>().toEqualTypeOf<CacheStats>();
expectTypeOf<CacheStats>().toEqualTypeOf<{
  hits: number;
  joins: number;
  misses: number;
  loads: number;
  errors: number;
  evictions: number;
  batches: number;
}>();

// Background work: detach resolves with the task's value; runInBackground returns nothing.
expectTypeOf(detach(async () => 42, { timeout: 5_000, name: 'reindex' })).toEqualTypeOf<
  Promise<number>
>();
expectTypeOf(detach(() => 'sync')).toEqualTypeOf<Promise<string>>();
expectTypeOf(runInBackground(async () => {}, { onError: (err) => err.message })).toBeVoid();
expectTypeOf(drainBackground()).resolves.toEqualTypeOf<{ pending: string[] }>();
const pool = createBackgroundPool({ concurrency: 4 });
expectTypeOf(pool.running).toBeNumber();
// @ts-expect-error timeout is a number of milliseconds
detach(async () => 1, { timeout: '5s' });

// Keys that are not cache keys read as what to pass instead (see test/type-messages.test.ts).
// @ts-expect-error a Date is not a cache key: pass date.getTime()
getWithContextCache('day', new Date(), async () => 1);
// @ts-expect-error an object is not a cache key: pass its id
getContextData('user', { id: 1 });
// @ts-expect-error nor is an array holding one
hasContextData('pair', [1, new Date()]);
// Generic code over cache keys still compiles.
function readAny<K extends CacheKey>(key: K): unknown {
  setContextData('any', key, 1);
  return getWithContextCacheSync('any', key, (k) => k);
}
readAny(['a', 1]);
// Literal keys stay literal.
expectTypeOf(getWithContextCache('user', 7, async (id) => id)).toEqualTypeOf<Promise<7>>();

// Options: timeout on getters and lookups; an unknown option does not compile.
contextCached('user', (id: number) => findUser(id), { timeout: 2000 });
getWithContextCache('user', 1, (id) => findUser(id), { timeout: 2000 });
// @ts-expect-error lifetimeMs is not an option of withCacheContext (lifetime is)
withCacheContext(() => 1, { lifetimeMs: 1000 });
// @ts-expect-error ttl belongs to the shared cache, not to the getter
contextCached('user', (id: number) => findUser(id), { ttl: 1000 });

// Transactions: the loader context carries it, typed unknown (narrow it to your driver's).
declare const tx: { query(sql: string): Promise<unknown[]> };
const inTx = withTransaction(tx, async () => getUser(1));
expectTypeOf(inTx).toEqualTypeOf<Promise<User>>();
contextCached('user', (id: number, { transaction }) => {
  expectTypeOf(transaction).toEqualTypeOf<unknown>();
  return findUser(id);
});
// @ts-expect-error a transaction is required
withTransaction(undefined, () => 1);
