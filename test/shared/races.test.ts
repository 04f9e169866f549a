/**
 * Races and contract breaches the shared tier must come through without serving a wrong
 * value, against the real redis-server of the test setup: this instance's own delete
 * racing its write-back, L1 fills from a batched read, a short-capped memoryStore's
 * tombstones, another instance's invalidation while a load is being written back, a batch
 * whose callers all left, and a store that breaks its own contract.
 */

import type { AddressInfo } from 'node:net';
import { connect, createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  contextBatched,
  contextCached,
  createSharedCache,
  memoryStore,
  type SharedCache,
  type Store,
  withCacheContext,
} from '../../src/index.js';
import { type RedisClient, redisStore, tieredStore } from '../../src/shared/redis.js';
import { deferred, eventually, noUnhandledRejections, sleep } from '../helpers/async.js';
import { type RedisServer, startRedis } from '../helpers/redis-server.js';

let server: RedisServer;
let admin: Redis;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  server = await startRedis();
  admin = new Redis(server.url);
});
afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  admin?.disconnect();
  await server?.stop();
});
beforeEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await admin.flushall();
});

noUnhandledRejections();

let n = 0;
function tiered(client?: RedisClient, namespace = `race${++n}`) {
  const store = tieredStore({
    l1: memoryStore({ max: 100, ttl: 30_000 }),
    l2: client === undefined ? redisStore({ url: server.url }) : redisStore({ client }),
  });
  const cache = createSharedCache<string>({ store, ttl: 60_000, namespace });
  closers.push(() => cache.close());
  return { store, cache };
}

describe("tieredStore: this instance's own delete", () => {
  it('is never undone in L1 by a write-back that was on its way to Redis', async () => {
    const { store, cache } = tiered();
    await store.ready();
    let row = 'old';
    // The write-back of this load is sent, not yet answered, when the delete goes out.
    expect(await cache.getOrLoad('k', async () => row)).toBe('old');
    row = 'new';
    await cache.delete('k');
    expect(await cache.get('k')).toBeUndefined();
    expect(await cache.getOrLoad('k', async () => row)).toBe('new');
  });

  it('is read back by the next request after contextCached(...).invalidate()', async () => {
    const { store, cache } = tiered();
    await store.ready();
    const rows = new Map([[1, 'Alice']]);
    const getUser = contextCached(`race-user-${n}`, async (id: number) => rows.get(id), {
      shared: cache as SharedCache<string | undefined>,
    });
    await withCacheContext(async () => {
      expect(await getUser(1)).toBe('Alice');
      rows.set(1, 'Alicia');
      await getUser.invalidate(1);
    });
    expect(await withCacheContext(() => getUser(1))).toBe('Alicia');
  });
});

describe('tieredStore: a batched read', () => {
  it('fills L1 for no longer than the Redis entry has left to live', async () => {
    const { store, cache } = tiered();
    await store.ready();
    const getPost = contextBatched(
      `race-post-${n}`,
      async (ids: readonly number[]) => ids.map((id) => `post ${id}`),
      { shared: cache as SharedCache<unknown> },
    );
    await withCacheContext(() => getPost.many([1, 2]));
    let keys: string[] = [];
    await eventually(async () => {
      keys = await admin.keys(`race${n}:*`);
      return keys.length === 2;
    }, 'both keys written back');
    // Another instance's L1 reads them in one batch while they have 200 ms left.
    for (const key of keys) await admin.pexpire(key, 200);
    const other = tieredStore({
      l1: memoryStore({ max: 100, ttl: 30_000 }),
      l2: redisStore({ url: server.url }),
    });
    closers.push(() => other.close());
    await other.ready();
    const first = await other.getMany(keys);
    expect(first.every((value) => value !== undefined)).toBe(true);
    await eventually(
      async () => (await admin.keys(`race${n}:*`)).length === 0,
      'Redis expired them',
    );
    await sleep(20);
    expect(await other.getMany(keys)).toEqual([undefined, undefined]);
  });
});

describe("tieredStore: a write's reply that comes after another instance's message", () => {
  it("does not put the older value back into the writer's L1", async () => {
    // Instance A's command connection answers 150 ms late (a slow link, under
    // readTimeout); its subscriber is not delayed, so B's message can come first.
    const proxy = createServer((client) => {
      const upstream = connect(server.port, '127.0.0.1');
      let subscriber = false;
      client.on('data', (data) => {
        if (/subscribe/i.test(data.toString('latin1'))) subscriber = true;
        upstream.write(data);
      });
      upstream.on('data', (data) => {
        if (subscriber) client.write(data);
        else setTimeout(() => client.destroyed || client.write(data), 150);
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.on('error', () => {});
      upstream.on('error', () => {});
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => proxy.close(resolve)));
    const namespace = `race${++n}`;
    const a = tieredStore({
      l1: memoryStore({ max: 100, ttl: 30_000 }),
      l2: redisStore({ url: `redis://127.0.0.1:${(proxy.address() as AddressInfo).port}` }),
    });
    const aCache = createSharedCache<string>({ store: a, ttl: 60_000, namespace });
    closers.push(() => aCache.close());
    const b = tiered(undefined, namespace);
    await Promise.all([a.ready(), b.store.ready()]);
    // Redis learns the compare-and-set script first, as after any instance's first write.
    await aCache.getOrLoad('warm-up', async () => 'x');
    await sleep(400);
    let row = 'v1';
    // A's write-back lands in Redis; its reply is still on the way when B deletes.
    expect(await aCache.getOrLoad('k', async () => row)).toBe('v1');
    await sleep(50);
    row = 'v2';
    await b.cache.delete('k');
    await sleep(300);
    expect(await aCache.getOrLoad('k', async () => row)).toBe('v2');
  });
});

describe('memoryStore as the shared store', () => {
  it('skips the write-back of a load every caller left once its key is deleted, even if the tombstone was evicted', async () => {
    const cache = createSharedCache<string>({
      store: memoryStore({ max: 2 }),
      ttl: 60_000,
      namespace: 'evicted',
    });
    closers.push(() => cache.close());
    let row = 'v1';
    const client = new AbortController();
    const slow = deferred<string>();
    const first = withCacheContext(
      () => cache.getOrLoad('k', () => slow.promise.then(() => 'v1')),
      { signal: client.signal },
    );
    first.catch(() => {});
    client.abort(new Error('client went away'));
    row = 'v2';
    await cache.delete('k');
    // Two other keys: past max, the tombstone is evicted.
    await cache.getOrLoad('x', async () => 'x');
    await cache.getOrLoad('y', async () => 'y');
    slow.resolve('done');
    await first.catch(() => undefined);
    await sleep(20);
    expect(await cache.getOrLoad('k', async () => row)).toBe('v2');
  });
});

describe('memoryStore({ ttl }) as the shared store', () => {
  it("keeps a delete's tombstone past its cap, so an older load never stores its value", async () => {
    // Two caches over one store: the delete of one cannot mark the other's load.
    const store = memoryStore({ max: 100, ttl: 50 });
    const loader = createSharedCache<string>({ store, ttl: 60_000, namespace: 'capped' });
    const writer = createSharedCache<string>({ store, ttl: 60_000, namespace: 'capped' });
    closers.push(
      () => loader.close(),
      () => writer.close(),
    );
    const slow = deferred<string>();
    const loading = loader.getOrLoad('k', () => slow.promise);
    await writer.delete('k');
    // The tombstone outlives the store's cap on values.
    await sleep(120);
    slow.resolve('read before the delete');
    expect(await loading).toBe('read before the delete');
    await sleep(20);
    expect(await writer.get('k')).toBeUndefined();
    expect(await loader.get('k')).toBeUndefined();
  });
});

describe("another instance's invalidation", () => {
  it('lets no new caller join a finished load of this instance still being written back', async () => {
    // This instance's compare-and-set replies are slow: its write-back is in flight for a while.
    const real = new Redis(server.url);
    closers.push(async () => real.disconnect());
    const slow = new Proxy(real, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (prop === 'evalsha' || prop === 'eval') {
          return async (...args: unknown[]) => {
            await sleep(400);
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as unknown as RedisClient;
    const a = tiered(slow);
    const b = tiered(undefined, `race${n}`);
    await Promise.all([a.store.ready(), b.store.ready()]);
    let row = 'old';
    expect(await a.cache.getOrLoad('k', async () => row)).toBe('old');
    row = 'new';
    await b.cache.delete('k');
    // Well before A's write-back (400 ms) is answered.
    await eventually(
      async () => (await a.cache.getOrLoad('k', async () => row)) === 'new',
      "A's next caller loads again once B's message has arrived",
      8,
    );
  });
});

describe('a batch through the shared tier', () => {
  it('tells its batch function to stop once every key left to load has lost its callers', async () => {
    const cache = createSharedCache<unknown>({
      store: redisStore({ url: server.url }),
      ttl: 60_000,
      namespace: 'abandon',
    });
    closers.push(() => cache.close());
    const seen: { signal?: AbortSignal | undefined } = {};
    const getPost = contextBatched(
      'race-abandon',
      async (ids: readonly string[], ctx) => {
        seen.signal = ctx.signal;
        if (!ids.includes('b')) return ids.map((id) => `post ${id}`);
        await new Promise((resolve) => {
          ctx.signal?.addEventListener('abort', resolve);
          setTimeout(resolve, 1500);
        });
        return ids.map((id) => `post ${id}`);
      },
      { shared: cache },
    );
    // 'a' is in Redis already; 'b' must be loaded.
    await withCacheContext(() => getPost('a'));
    await eventually(async () => (await admin.keys('abandon:*')).length === 1, 'a written back');
    seen.signal = undefined;
    const client = new AbortController();
    const asked = withCacheContext(() => Promise.allSettled([getPost('a'), getPost('b')]), {
      signal: client.signal,
    });
    await eventually(
      () => seen.signal !== undefined && !seen.signal.aborted,
      'the batch for b runs',
    );
    client.abort(new Error('client went away'));
    expect((await asked).map((result) => result.status)).toEqual(['fulfilled', 'rejected']);
    expect((seen.signal as AbortSignal | undefined)?.aborted).toBe(true);
  });
});

describe('a store that breaks its contract', () => {
  it('is a store that did not answer: connection() throwing, getMany resolving no list', async () => {
    const broken = (override: Partial<Store>): Store => ({
      get: async () => undefined,
      set: async () => true,
      delete: async () => {},
      close: async () => {},
      ...override,
    });
    const throwing = createSharedCache<number>({
      store: broken({
        connection: () => {
          throw new Error('connection() failed');
        },
      }),
      ttl: 1000,
      namespace: 'broken',
      onError: () => {},
    });
    closers.push(() => throwing.close());
    expect(await throwing.getOrLoad('k', async () => 1)).toBe(1);
    await expect(throwing.set('k', 2)).rejects.toThrow(/connection\(\) failed/);
    await expect(throwing.delete('k')).rejects.toThrow(/connection\(\) failed/);

    const noList = createSharedCache<unknown>({
      store: broken({ getMany: async () => null as never }),
      ttl: 1000,
      namespace: 'broken',
    });
    closers.push(() => noList.close());
    const getPost = contextBatched(
      'race-broken',
      async (ids: readonly number[]) => ids.map((id) => `post ${id}`),
      { shared: noList },
    );
    expect(await withCacheContext(() => getPost.many([1, 2]))).toEqual(['post 1', 'post 2']);
  });
});
