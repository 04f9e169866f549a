/**
 * contextBatched with a shared tier, against the real redis-server of the test setup:
 * one MGET per batch (read back with INFO commandstats), one batch call for the keys
 * the store missed, write-back in one round trip, keys another request is loading
 * joined, and fail-open when the store cannot answer.
 */

import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  contextBatched,
  createSharedCache,
  memoryStore,
  type SharedCache,
  type Store,
  withCacheContext,
  withTransaction,
} from '../src/index.js';
import { redisStore, tieredStore } from '../src/shared/redis.js';
import { deferred, eventually, noUnhandledRejections } from './helpers/async.js';
import { type RedisServer, startRedis } from './helpers/redis-server.js';

noUnhandledRejections();

let server: RedisServer;
let admin: Redis;
const caches: SharedCache<unknown>[] = [];

beforeAll(async () => {
  server = await startRedis();
  admin = new Redis(server.url);
});
afterAll(async () => {
  for (const cache of caches) await cache.close();
  admin?.disconnect();
  await server?.stop();
});
beforeEach(async () => {
  await admin.flushall();
  await admin.config('RESETSTAT');
});

/** Calls of each Redis command since the last reset, from INFO commandstats. */
async function commands(): Promise<Record<string, number>> {
  const info = await admin.info('commandstats');
  const counts: Record<string, number> = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    counts[match[1] as string] = Number(match[2]);
  }
  return counts;
}

let n = 0;
let namespace = '';
function sharedOver(store: Store): SharedCache<unknown> {
  namespace = `batch${++n}`;
  const cache = createSharedCache<unknown>({ store, ttl: 60_000, namespace });
  caches.push(cache);
  return cache;
}

function users(shared: SharedCache<unknown>, group = `user-${++n}`) {
  const calls: number[][] = [];
  const getter = contextBatched(
    group,
    async (ids: readonly number[]) => {
      calls.push([...ids]);
      return ids.map((id) => (id === 13 ? new Error('no 13') : { id, name: `user ${id}` }));
    },
    { shared },
  );
  return { calls, getter };
}

/** Keys of this test's namespace that Redis holds (writes-back are detached). */
async function stored(): Promise<number> {
  return (await admin.keys(`${namespace}:*`)).length;
}

describe('contextBatched with a shared tier on Redis', () => {
  it('reads a batch with one MGET, loads only what it missed, and writes those back', async () => {
    const shared = sharedOver(redisStore({ client: admin }));
    const { calls, getter } = users(shared);
    const first = await withCacheContext(() => getter.many([1, 2, 3, 4, 5]));
    expect(first.map((u) => (u as { id: number }).id)).toEqual([1, 2, 3, 4, 5]);
    await eventually(async () => (await stored()) === 5, 'the first batch is written back');
    const second = await withCacheContext(() => getter.many([4, 5, 6, 1, 7]));
    expect(second).toEqual([4, 5, 6, 1, 7].map((id) => ({ id, name: `user ${id}` })));
    expect(calls).toEqual([
      [1, 2, 3, 4, 5],
      [6, 7],
    ]);
    await eventually(async () => (await stored()) === 7, 'the second batch is written back');
    const counted = await commands();
    // One MGET per batch, no per-key GET; every write by the compare-and-set script (a
    // server that has not seen it yet answers the first digest with NOSCRIPT).
    expect(counted.mget).toBe(2);
    expect(counted.get ?? 0).toBe(0);
    expect((counted.evalsha ?? 0) + (counted.eval ?? 0)).toBeGreaterThanOrEqual(7);
  });

  it('never stores a failed key: the next request loads it again', async () => {
    const shared = sharedOver(redisStore({ client: admin }));
    const { calls, getter } = users(shared);
    await withCacheContext(async () => {
      const settled = await Promise.allSettled([getter(12), getter(13)]);
      expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected']);
    });
    await eventually(async () => (await stored()) === 1, 'the good key is written back');
    await withCacheContext(() => getter(13).catch(() => undefined));
    expect(calls).toEqual([[12, 13], [13]]);
  });

  it('stores what an element that is a promise resolves to, and never a failed one', async () => {
    const shared = sharedOver(redisStore({ client: admin }));
    const calls: number[][] = [];
    const getter = contextBatched(
      `promised-${++n}`,
      async (ids: readonly number[]) => {
        calls.push([...ids]);
        // Sorted in place, and an async map returned without Promise.all.
        (ids as number[]).sort((a, b) => b - a);
        return new Map(
          ids.map((id) => [
            id,
            (async () => {
              if (id === 13) throw new Error('no 13');
              return { id };
            })(),
          ]),
        );
      },
      { shared },
    );
    await withCacheContext(async () => {
      const settled = await Promise.allSettled([getter(11), getter(12), getter(13)]);
      expect(settled).toEqual([
        { status: 'fulfilled', value: { id: 11 } },
        { status: 'fulfilled', value: { id: 12 } },
        { status: 'rejected', reason: new Error('no 13') },
      ]);
    });
    await eventually(async () => (await stored()) === 2, 'the good keys are written back');
    // A new request finds them in Redis: only the failed key is loaded again.
    await withCacheContext(async () => {
      expect(await getter(12)).toEqual({ id: 12 });
      await getter(13).catch(() => undefined);
    });
    expect(calls).toEqual([[11, 12, 13], [13]]);
  });

  it('joins keys another request is already loading instead of loading them again', async () => {
    const shared = sharedOver(redisStore({ client: admin }));
    const gate = deferred();
    const calls: number[][] = [];
    const getter = contextBatched(
      `slow-${n}`,
      async (ids: readonly number[]) => {
        calls.push([...ids]);
        await gate.promise;
        return ids.map((id) => id * 10);
      },
      { shared },
    );
    const a = withCacheContext(() => getter.many([1, 2]));
    await eventually(() => calls.length === 1, 'the first request calls its batch');
    const b = withCacheContext(() => getter.many([2, 3]));
    // Key 2 is joined; key 3 alone is read (a single key is a plain GET).
    await eventually(async () => (await commands()).get === 1, 'the second request reads');
    gate.resolve();
    expect(await a).toEqual([10, 20]);
    expect(await b).toEqual([20, 30]);
    // Key 2 was joined: the second request's batch loaded key 3 alone.
    expect(calls).toEqual([[1, 2], [3]]);
  });

  it('tieredStore: reads L1 first, then Redis for the rest in one MGET', async () => {
    const store = tieredStore({
      l1: memoryStore({ max: 1000, ttl: 60_000 }),
      l2: redisStore({ client: admin }),
    });
    await store.ready();
    const shared = sharedOver(store);
    const { calls, getter } = users(shared);
    await withCacheContext(() => getter.many([1, 2]));
    await eventually(async () => (await stored()) === 2, 'written back');
    await admin.config('RESETSTAT');
    // The writer keeps its values in L1: no Redis read at all.
    await withCacheContext(() => getter.many([1, 2]));
    expect((await commands()).mget ?? 0).toBe(0);
    await withCacheContext(() => getter.many([1, 2, 3, 4]));
    expect((await commands()).mget).toBe(1);
    expect(calls).toEqual([
      [1, 2],
      [3, 4],
    ]);
  });

  it('uses a store without getMany and setMany key by key', async () => {
    const inner = memoryStore({ max: 100 });
    const gets: string[] = [];
    const store: Store = {
      get: (key) => {
        gets.push(key);
        return inner.get(key);
      },
      set: (key, value, ttl, version) => inner.set(key, value, ttl, version),
      delete: (key) => inner.delete(key),
      close: () => inner.close(),
    };
    const shared = sharedOver(store);
    const { calls, getter } = users(shared);
    await withCacheContext(() => getter.many([1, 2, 3]));
    await eventually(() => inner.size === 3, 'written back key by key');
    gets.length = 0;
    expect(await withCacheContext(() => getter.many([1, 2, 3]))).toHaveLength(3);
    expect(gets).toHaveLength(3);
    expect(calls).toEqual([[1, 2, 3]]);
  });

  it('fails open: a store that cannot answer turns into one batch call, not an error', async () => {
    const store: Store = {
      get: () => Promise.reject(new Error('down')),
      getMany: () => Promise.reject(new Error('down')),
      set: () => Promise.reject(new Error('down')),
      setMany: () => Promise.reject(new Error('down')),
      delete: () => Promise.reject(new Error('down')),
      close: () => Promise.resolve(),
    };
    const errors: string[] = [];
    const shared = createSharedCache<unknown>({
      store,
      ttl: 60_000,
      namespace: 'down',
      onError: (err, info) => void errors.push(`${info.op}: ${err.message}`),
    });
    caches.push(shared);
    const { calls, getter } = users(shared);
    expect(await withCacheContext(() => getter.many([1, 2]))).toHaveLength(2);
    expect(calls).toEqual([[1, 2]]);
    expect(errors).toEqual(['getMany: down']);
  });

  it('keeps a transaction away from the shared tier', async () => {
    const shared = sharedOver(redisStore({ client: admin }));
    const { calls, getter } = users(shared);
    await withCacheContext(() => withTransaction({ tx: 1 }, () => getter.many([1, 2])));
    expect(calls).toEqual([[1, 2]]);
    expect((await commands()).mget ?? 0).toBe(0);
    expect(await stored()).toBe(0);
  });
});
