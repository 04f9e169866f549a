/**
 * A late write never overwrites a newer one, against a real redis-server: a write-back
 * that an ioredis client kept while Redis was away and delivered after another instance
 * stored a newer value, and two loads of one key racing, where the one that started
 * later wins whatever order they finish in (memoryStore, redisStore and tieredStore).
 */

import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RESOLUTION, setClock } from '../../src/clock.js';
import { createSharedCache, memoryStore, type SharedCache, type Store } from '../../src/index.js';
import { encodeKey } from '../../src/keys.js';
import { DEFAULT_WRITE_TIMEOUT, MAX_LOAD_AGE } from '../../src/shared/index.js';
import { type RedisClient, redisStore, tieredStore } from '../../src/shared/redis.js';
import { GROUP_VIEW } from '../../src/shared/types.js';
import { deferred, eventually, noUnhandledRejections, sleep } from '../helpers/async.js';
import { type RedisServer, startRedis } from '../helpers/redis-server.js';
import { startProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

let server: RedisServer;
let admin: Redis;

beforeAll(async () => {
  server = await startRedis();
  admin = new Redis(server.url, { maxRetriesPerRequest: null });
  admin.on('error', () => {});
});

afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

beforeEach(async () => {
  await admin.flushall();
});

noUnhandledRejections();

const stored = (key: string) => `order:{${encodeKey('test', key)}}`;

/** Loads started in the current test. */
let loads = 0;
beforeEach(() => {
  loads = 0;
});
function loading<T>(value: Promise<T>): Promise<T> {
  loads++;
  return value;
}

/** The value another instance sees: a cache of its own over a fresh connection. */
async function seenByAnother(key: string): Promise<unknown> {
  const other = createSharedCache<unknown>({
    store: redisStore({ url: server.url }),
    ttl: 60_000,
    namespace: 'order',
  });
  try {
    return await other.get(key);
  } finally {
    await other.close();
  }
}

describe('a write-back delivered after recovery', () => {
  let proxy: TcpProxy;
  beforeEach(async () => {
    proxy = await startProxy(server.port);
    return async () => {
      proxy.release();
      await proxy.close();
    };
  });

  /** A's store over the relay: a client made with ioredis defaults, or a `{ url }` store. */
  const variants = [
    {
      name: 'a client made with ioredis defaults',
      store: (url: string) => {
        const client = new Redis(url); // offline queue on, unanswered commands resent
        client.on('error', () => {});
        return { store: redisStore({ client }), client, own: true };
      },
    },
    {
      name: 'a { url } store',
      store: (url: string) => {
        const store = redisStore({ url });
        return { store, client: store.client as unknown as Redis, own: false };
      },
    },
  ];

  describe.each(variants)('with $name', (variant) => {
    it('never brings back the old value: a load finished while Redis was down', async () => {
      const a = variant.store(proxy.url);
      const cacheA = createSharedCache<string>({
        store: a.store,
        ttl: 60_000,
        namespace: 'order',
        writeTimeout: 200,
        onError: () => {},
      });
      await a.client.ping();
      const load = deferred<string>();
      const pending = cacheA.getOrLoad('k', () => loading(load.promise));
      // The load runs (it missed in Redis): its version is older than what comes next.
      await eventually(() => loads === 1, 'the load runs');
      await server.kill();
      await eventually(() => a.client.status !== 'ready', 'A lost its connection');
      load.resolve('OLD');
      expect(await pending).toBe('OLD'); // the caller never waits on the store
      await sleep(300); // the write-back has given up (writeTimeout)
      proxy.hold(); // A's reconnection waits, so B writes first
      await server.restart();
      // Another instance stores NEW after the recovery.
      const b = createSharedCache<string>({
        store: redisStore({ url: server.url }),
        ttl: 60_000,
        namespace: 'order',
      });
      await b.set('k', 'NEW');
      await b.close();
      proxy.release();
      await eventually(() => a.client.status === 'ready', 'A reconnected');
      await a.client.ping(); // anything A had queued was sent before this
      expect(await seenByAnother('k')).toBe('NEW');
      await cacheA.close();
      if (a.own) a.client.disconnect();
    });

    it('never brings back the old value: a write-back held in the network past NEW', async () => {
      const a = variant.store(proxy.url);
      const cacheA = createSharedCache<string>({
        store: a.store,
        ttl: 60_000,
        namespace: 'order',
        writeTimeout: 200,
        onError: () => {},
      });
      await a.client.ping();
      const load = deferred<string>();
      const pending = cacheA.getOrLoad('k', () => loading(load.promise));
      await eventually(() => loads === 1, 'the load runs');
      proxy.hold(); // A stays connected, but Redis hears nothing from it
      load.resolve('OLD');
      expect(await pending).toBe('OLD');
      await eventually(() => proxy.heldBytes > 0, "A's write-back was sent");
      await sleep(300); // the write-back has given up (writeTimeout), the command is still on its way
      const b = createSharedCache<string>({
        store: redisStore({ url: server.url }),
        ttl: 60_000,
        namespace: 'order',
      });
      await b.set('k', 'NEW');
      await b.close();
      proxy.release(); // the old write lands now, after NEW
      await a.client.ping();
      expect(await seenByAnother('k')).toBe('NEW');
      expect(await admin.pttl(stored('k'))).toBeGreaterThan(0); // NEW kept its ttl
      await cacheA.close();
      if (a.own) a.client.disconnect();
    });
  });

  it('a { url } client queues nothing once it has lost its connection', async () => {
    const store = redisStore({ url: proxy.url });
    const client = store.client as unknown as Redis;
    await client.ping();
    await server.kill();
    await eventually(() => client.status !== 'ready', 'the client lost its connection');
    try {
      await expect(client.set('queued', 'x')).rejects.toThrow(/enableOfflineQueue/);
    } finally {
      await server.restart();
    }
    await eventually(() => client.status === 'ready', 'the client reconnected');
    expect(await admin.exists('queued')).toBe(0);
    await store.close();
  });
});

describe('two loads of one key racing', () => {
  /** Two instances (two caches, each over its own store) and what their writes did. */
  const kinds = [
    {
      name: 'memoryStore',
      stores: (): [Store, Store] => {
        const one = memoryStore({ max: 100 });
        // Two caches of one process over one store (their close() closes it twice).
        return [one, { ...one, close: () => Promise.resolve() }];
      },
    },
    {
      name: 'redisStore',
      stores: (): [Store, Store] => [
        redisStore({ url: server.url }),
        redisStore({ url: server.url }),
      ],
    },
    {
      name: 'tieredStore',
      stores: (): [Store, Store] => [
        tieredStore({
          l1: memoryStore({ max: 100, ttl: 60_000 }),
          l2: redisStore({ url: server.url }),
        }),
        tieredStore({
          l1: memoryStore({ max: 100, ttl: 60_000 }),
          l2: redisStore({ url: server.url }),
        }),
      ],
    },
  ];

  /** `store` with every write's result recorded (false: a newer value was kept). */
  function recording(store: Store, results: unknown[]): Store {
    return {
      ...(store.peek === undefined ? {} : { peek: store.peek.bind(store) }),
      get: (key) => store.get(key),
      async set(key, value, ttl, version) {
        const landed = await store.set(key, value, ttl, version);
        results.push(landed);
        return landed;
      },
      delete: (key) => store.delete(key),
      close: () => store.close(),
    };
  }

  /** Two caches, one over each store, writes recorded in `results`, subscribers ready. */
  async function twoInstances(
    [s1, s2]: [Store, Store],
    results: unknown[],
  ): Promise<[SharedCache<string>, SharedCache<string>]> {
    const caches = [s1, s2].map((store) =>
      createSharedCache<string>({
        store: recording(store, results),
        ttl: 60_000,
        namespace: 'order',
      }),
    ) as [SharedCache<string>, SharedCache<string>];
    for (const store of [s1, s2]) {
      if ('ready' in store) await (store as { ready(): Promise<void> }).ready();
    }
    return caches;
  }

  describe.each(kinds)('$name', (kind) => {
    it.each([
      { order: 'the later one finishes first', first: 'later' as const },
      { order: 'the earlier one finishes first', first: 'earlier' as const },
    ])('the later-started load wins when $order', async ({ first }) => {
      const results: unknown[] = [];
      const [c1, c2] = await twoInstances(kind.stores(), results);
      const earlier = deferred<string>();
      const later = deferred<string>();
      // Each load has missed in the store and runs its loader before the next step.
      const running: string[] = [];
      const p1 = c1.getOrLoad('k', () => {
        running.push('earlier');
        return earlier.promise;
      });
      await eventually(() => running.length === 1, 'the earlier load runs');
      const p2 = c2.getOrLoad('k', () => {
        running.push('later');
        return later.promise;
      });
      await eventually(() => running.length === 2, 'the later load runs');
      const [firstLoad, secondLoad] = first === 'later' ? [later, earlier] : [earlier, later];
      firstLoad.resolve(first === 'later' ? 'later' : 'earlier');
      await eventually(() => results.length === 1, 'the first write-back was done');
      secondLoad.resolve(first === 'later' ? 'earlier' : 'later');
      expect([await p1, await p2]).toEqual(['earlier', 'later']);
      await eventually(() => results.length === 2, 'the second write-back was done');
      // Refused only when the earlier-started load finished last.
      expect(results).toEqual(first === 'later' ? [true, false] : [true, true]);
      // Both instances (L1 included, for the tiered store) see the later load's value.
      expect(await c1.get('k')).toBe('later');
      expect(await c2.get('k')).toBe('later');
      await c1.close();
      await c2.close();
    });
  });

  describe.each(kinds)('$name: a delete in another instance', (kind) => {
    it('refuses the write-back of a load that started before the delete', async () => {
      const results: unknown[] = [];
      const [c1, c2] = await twoInstances(kind.stores(), results);
      // Instance 1 misses and reads the row...
      const row = deferred<string>();
      const pending = c1.getOrLoad('d', () => loading(row.promise));
      await eventually(() => loads === 1, 'the load runs');
      // ...instance 2 updates it and deletes the key...
      await c2.delete('d');
      expect(results).toEqual([true]); // the tombstone
      // ...then instance 1's load returns what it read before the update.
      row.resolve('read before the delete');
      expect(await pending).toBe('read before the delete');
      await eventually(() => results.length === 2, 'the write-back was tried');
      expect(results[1]).toBe(false);
      // Neither instance (L1 included, for the tiered store) serves the old row.
      expect(await c1.get('d')).toBeUndefined();
      expect(await c2.get('d')).toBeUndefined();
      // The next load stores what the row holds now, over the tombstone.
      expect(await c2.getOrLoad('d', () => loading(Promise.resolve('after')))).toBe('after');
      expect(await c1.get('d')).toBe('after');
      await c1.close();
      await c2.close();
    });
  });

  it('a batch that started before another instance deleted one of its keys stores the others only', async () => {
    const store = redisStore({ url: server.url });
    const cache = createSharedCache<string>({ store, ttl: 60_000, namespace: 'order' });
    const rows = deferred<string[]>();
    const view = cache[GROUP_VIEW]('posts');
    const started = view.loadMany(['a', 'b'], () => loading(rows.promise));
    await eventually(() => loads === 1, 'the batch runs');
    const other = createSharedCache<string>({
      store: redisStore({ url: server.url }),
      ttl: 60_000,
      namespace: 'order',
    });
    await other[GROUP_VIEW]('posts').delete('b');
    rows.resolve(['a as read', 'b as read before the delete']);
    expect(await Promise.all(started)).toEqual(['a as read', 'b as read before the delete']);
    await cache.close();
    const seen = other[GROUP_VIEW]('posts');
    let reloaded = 0;
    expect(
      await Promise.all(
        seen.loadMany(['a', 'b'], (keys) => {
          reloaded += keys.length;
          return Promise.resolve(keys.map((key) => `${String(key)} now`));
        }),
      ),
    ).toEqual(['a as read', 'b now']);
    expect(reloaded).toBe(1);
    await other.close();
  });

  it('a delete leaves its tombstone for longer than any load that still writes back', async () => {
    const cache = createSharedCache<string>({
      store: redisStore({ url: server.url }),
      ttl: 60_000,
      namespace: 'order',
    });
    const other = createSharedCache<string>({
      store: redisStore({ url: server.url }),
      ttl: 60_000,
      namespace: 'order',
    });
    const row = deferred<string>();
    const pending = cache.getOrLoad('slow', () => loading(row.promise));
    await eventually(() => loads === 1, 'the load runs');
    await other.delete('slow');
    await other.close();
    // Longer than the cache's ttl (60 s): as long as a load may be and still write back.
    const left = await admin.pttl(stored('slow'));
    expect(left).toBeGreaterThan(MAX_LOAD_AGE);
    expect(left).toBeLessThanOrEqual(MAX_LOAD_AGE + DEFAULT_WRITE_TIMEOUT + RESOLUTION);
    // The load runs past that age; its tombstone has expired (dropped here by hand).
    await admin.del(stored('slow'));
    const late = Date.now() + MAX_LOAD_AGE;
    setClock(() => late);
    try {
      row.resolve('read before the delete');
      expect(await pending).toBe('read before the delete');
      await cache.close(); // waits for its write-backs
    } finally {
      setClock(undefined);
    }
    // Nothing was written back: the next reader loads the row as it is now.
    expect(await admin.exists(stored('slow'))).toBe(0);
    expect(await seenByAnother('slow')).toBeUndefined();
  });

  it('a batch older than the tombstones writes none of its keys back', async () => {
    const cache = createSharedCache<string>({
      store: redisStore({ url: server.url }),
      ttl: 60_000,
      namespace: 'order',
    });
    const rows = deferred<string[]>();
    const started = cache[GROUP_VIEW]('posts').loadMany(['x', 'y'], () => loading(rows.promise));
    await eventually(() => loads === 1, 'the batch runs');
    const late = Date.now() + MAX_LOAD_AGE;
    setClock(() => late);
    try {
      rows.resolve(['x as read', 'y as read']);
      expect(await Promise.all(started)).toEqual(['x as read', 'y as read']);
      await cache.close();
    } finally {
      setClock(undefined);
    }
    expect(await admin.keys('order:*')).toEqual([]);
  });

  it('a set always wins over a load that started before it, in every instance', async () => {
    const store = redisStore({ client: admin as unknown as RedisClient });
    const cache = createSharedCache<string>({ store, ttl: 60_000, namespace: 'order' });
    const load = deferred<string>();
    const pending = cache.getOrLoad('s', () => loading(load.promise));
    await eventually(() => loads === 1, 'the load runs');
    // Set by another instance (its own cache): this process's in-flight guard plays no part.
    const other = createSharedCache<string>({
      store: redisStore({ url: server.url }),
      ttl: 60_000,
      namespace: 'order',
    });
    await other.set('s', 'set later');
    await other.close();
    load.resolve('loaded earlier');
    expect(await pending).toBe('loaded earlier');
    await cache.close();
    expect(await seenByAnother('s')).toBe('set later');
  });
});
