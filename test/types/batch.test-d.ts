// Type tests of contextBatched: checked by `tsc -p tsconfig.spec.json`, never run.
import { expectTypeOf } from 'vitest';
import {
  type BatchMessage,
  type ContextBatchedFunction,
  contextBatched,
  createSharedCache,
  type LoaderContext,
  memoryStore,
  type Store,
  type StoreEntry,
} from '../../src/index.js';

interface User {
  id: number;
  name: string;
}
declare function findUsers(ids: readonly number[], signal?: AbortSignal): Promise<User[]>;

// The key type comes from the batch function's keys, the value from what it resolves.
const getUser = contextBatched('user', async (ids: readonly number[], { signal }) => {
  expectTypeOf(signal).toEqualTypeOf<AbortSignal | undefined>();
  const rows = await findUsers(ids, signal);
  return ids.map((id) => rows.find((row) => row.id === id) ?? new Error(`no user ${id}`));
});
expectTypeOf(getUser).toEqualTypeOf<ContextBatchedFunction<number, User>>();
expectTypeOf(getUser(1)).toEqualTypeOf<Promise<User>>();
expectTypeOf(getUser.many([1, 2])).toEqualTypeOf<Promise<User[]>>();
expectTypeOf(getUser.invalidate(1)).toEqualTypeOf<Promise<void>>();
getUser.prime(1, { id: 1, name: 'Ada' });
// @ts-expect-error the key is a number
void getUser('1');
// @ts-expect-error many() takes an array of keys
void getUser.many(1);
// @ts-expect-error prime takes a value of the getter's type
getUser.prime(1, { id: 1 });

// A Map result: keys to values.
const getName = contextBatched(
  'name',
  async (keys: readonly string[]) => new Map(keys.map((key) => [key, key.length])),
);
expectTypeOf(getName('a')).toEqualTypeOf<Promise<number>>();

// Composite keys.
const getMember = contextBatched('member', async (keys: readonly (readonly [number, number])[]) =>
  keys.map(([repo, user]) => repo + user),
);
expectTypeOf(getMember([1, 2])).toEqualTypeOf<Promise<number>>();

// Options, checked by type too.
const shared = createSharedCache<User>({
  store: memoryStore({ max: 10 }),
  ttl: 1000,
  namespace: 'x',
});
contextBatched('user2', async (ids: readonly number[]) => findUsers(ids), {
  maxBatchSize: 100,
  shared,
  timeout: 5000,
});
// @ts-expect-error maxBatchSize is a number
contextBatched('user3', async (ids: readonly number[]) => findUsers(ids), { maxBatchSize: '100' });
// @ts-expect-error unknown option
contextBatched('user4', async (ids: readonly number[]) => findUsers(ids), { batchSize: 100 });
// @ts-expect-error the batch function must return a promise of values
contextBatched('user5', (ids: readonly number[]) => ids);
// @ts-expect-error keys must be cache keys, not objects
contextBatched('user6', async (keys: readonly { id: number }[]) => keys);

const loaderContext: LoaderContext = {};
expectTypeOf<Parameters<Parameters<typeof contextBatched>[1]>[1]>().toEqualTypeOf<LoaderContext>();
void loaderContext;

// The tracing message and the store's optional batch methods.
expectTypeOf<BatchMessage['count']>().toEqualTypeOf<number>();
expectTypeOf<NonNullable<Store['getMany']>>().returns.toEqualTypeOf<
  Promise<(string | Buffer | undefined)[]>
>();
expectTypeOf<StoreEntry>().toHaveProperty('version').toEqualTypeOf<number>();
