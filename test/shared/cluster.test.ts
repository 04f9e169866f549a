/**
 * The shared tier on a real Redis Cluster (three masters on loopback, started here):
 * keys spread over the nodes, an entry and its lock in one slot, the cold-key lock and
 * the write ordering across two instances, and tieredStore invalidations through
 * sharded pub/sub (classic pub/sub where the servers lack it).
 */

import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  contextBatched,
  createSharedCache,
  memoryStore,
  type SharedCache,
  withCacheContext,
} from '../../src/index.js';
import { encodeKey } from '../../src/keys.js';
import {
  type RedisClient,
  redisStore,
  type TieredStore,
  tieredStore,
} from '../../src/shared/redis.js';
import { defaultSerializer } from '../../src/shared/serializer.js';
import { frame } from '../../src/shared/version.js';
import { deferred, eventually, noUnhandledRejections, sleep } from '../helpers/async.js';
import { type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';

let cluster: RedisCluster;
/** One plain connection per master, to see where keys really are. */
let nodes: Redis[];
const clients: Cluster[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster();
  nodes = cluster.ports.map((port) => new Redis({ host: '127.0.0.1', port }));
}, 60_000);

afterAll(async () => {
  for (const client of clients) client.disconnect();
  for (const node of nodes ?? []) node.disconnect();
  await cluster?.stop();
});

beforeEach(async () => {
  await Promise.all(nodes.map((node) => node.flushall()));
});

noUnhandledRejections();

/** A Cluster client of our own (as an application makes one), closed after the file. */
function connect(): Cluster {
  const client = new Cluster([...cluster.nodes]);
  clients.push(client);
  return client;
}

/** The store key of `key` in namespace `app`, as the cache writes it. */
const stored = (key: string) => `app:{${encodeKey('test', key)}}`;

/** Which master holds each key: index into `nodes` (SCAN is local to a node). */
async function whereAre(): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  for (const [i, node] of nodes.entries()) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', 'app:*', 'COUNT', 1000);
      for (const key of keys) found.set(key, i);
      cursor = next;
    } while (cursor !== '0');
  }
  return found;
}

it('runs on a Redis server with sharded pub/sub (7.0 or later)', () => {
  const major = Number(cluster.version.split('.')[0]);
  expect(
    major,
    `redis-server ${cluster.version} has no sharded pub/sub: install Redis 7 or later`,
  ).toBeGreaterThanOrEqual(7);
});

describe('redisStore({ client: Cluster })', () => {
  let cache: SharedCache<unknown>;

  beforeEach(() => {
    cache = createSharedCache<unknown>({
      store: redisStore({ client: connect() }),
      ttl: 60_000,
      namespace: 'app',
    });
    return () => cache.close();
  });

  it('gets, sets, loads and deletes keys spread over every master', async () => {
    const keys = Array.from({ length: 30 }, (_, i) => `user:${i}`);
    for (const [i, key] of keys.entries()) {
      if (i % 2 === 0) await cache.set(key, { id: i, at: new Date(i) });
      else
        expect(await cache.getOrLoad(key, () => ({ id: i, at: new Date(i) }))).toEqual({
          id: i,
          at: new Date(i),
        });
    }
    await eventually(async () => (await whereAre()).size === keys.length, 'every value stored');
    const where = await whereAre();
    expect([...where.keys()].sort()).toEqual(keys.map(stored).sort());
    // Spread: every master holds some of them.
    expect(new Set(where.values())).toEqual(new Set([0, 1, 2]));
    for (const [i, key] of keys.entries()) {
      const value = await cache.get(key);
      expect(value).toEqual({ id: i, at: new Date(i) });
      expect((value as { at: Date }).at).toBeInstanceOf(Date);
    }
    let loads = 0;
    expect(await cache.getOrLoad('user:3', () => ++loads)).toEqual({ id: 3, at: new Date(3) });
    expect(loads).toBe(0);
    for (const key of keys) await cache.delete(key);
    // Each delete leaves a tombstone (a 21-byte header ending in '!') on the key's master,
    // which reads as a miss.
    const left = await whereAre();
    expect(left.size).toBe(keys.length);
    for (const [key, i] of left) {
      const raw = await (nodes[i] as Redis).get(key);
      expect(raw).toMatch(/^cc1:\d{16}!$/);
    }
    expect(await cache.get('user:3')).toBeUndefined();
  });

  it('puts an entry and its lock in one hash slot', async () => {
    for (const key of ['a', 'user:1', 'a}b{c', '']) {
      const entry = stored(key);
      const [entrySlot, lockSlot] = await Promise.all([
        nodes[0]!.cluster('KEYSLOT', entry),
        nodes[0]!.cluster('KEYSLOT', `${entry}:lock`),
      ]);
      expect(lockSlot).toBe(entrySlot);
    }
  });

  it('writes only over an older value, compared and set on the node that owns the key', async () => {
    const store = redisStore({ client: connect() });
    const keys = ['k1', 'k2', 'k3', 'k4', 'k5', 'k6'].map(stored);
    const older = 1_700_000_000_000_000;
    for (const key of keys) {
      expect(
        await store.set(key, frame(older + 10, Buffer.from('newer')), 60_000, older + 10),
      ).toBe(true);
      // The later-finishing but earlier-started write is refused.
      expect(await store.set(key, frame(older, Buffer.from('older')), 60_000, older)).toBe(false);
      const raw = await store.get(key);
      expect((raw as Buffer).subarray(21).toString()).toBe('newer');
    }
    expect(new Set((await whereAre()).values()).size).toBeGreaterThan(1);
  });
});

describe('two instances on one Redis Cluster', () => {
  it('lets one instance load a cold key while the other waits for its value (lock)', async () => {
    const make = () =>
      createSharedCache<string>({
        store: redisStore({ client: connect() }),
        ttl: 60_000,
        namespace: 'app',
        lock: { ttl: 5_000, wait: 5_000 },
      });
    const a = make();
    const b = make();
    for (const key of ['cold:1', 'cold:2', 'cold:3']) {
      let loads = 0;
      const gate = deferred();
      const loader = async () => {
        loads++;
        await gate.promise;
        return `${key} loaded`;
      };
      const first = a.getOrLoad(key, loader);
      await eventually(async () => loads === 1, 'A holds the lock and loads');
      const second = b.getOrLoad(key, loader);
      await sleep(50);
      gate.resolve();
      expect(await Promise.all([first, second])).toEqual([`${key} loaded`, `${key} loaded`]);
      expect(loads).toBe(1);
    }
    await a.close();
    await b.close();
  });

  it('a later-started load wins over an earlier one, whatever order they finish in', async () => {
    const a = createSharedCache<string>({
      store: redisStore({ client: connect() }),
      ttl: 60_000,
      namespace: 'app',
    });
    const b = createSharedCache<string>({
      store: redisStore({ client: connect() }),
      ttl: 60_000,
      namespace: 'app',
    });
    const early = deferred<string>();
    let started = false;
    const first = a.getOrLoad('race', () => {
      started = true;
      return early.promise;
    });
    await eventually(async () => started, "A's load started");
    expect(await b.getOrLoad('race', () => 'started later')).toBe('started later');
    await eventually(
      async () => (await a.get('race')) === 'started later',
      'the later load stored',
    );
    early.resolve('started earlier');
    expect(await first).toBe('started earlier');
    await a.close(); // waits for A's write-back, which is refused
    expect(await b.get('race')).toBe('started later');
    await b.close();
  });
});

describe('tieredStore over a Redis Cluster', () => {
  const channel = 'app:invalidate';

  /** Subscribers per pub/sub kind, summed over every master. */
  async function subscribers(): Promise<{ sharded: number; classic: number }> {
    let sharded = 0;
    let classic = 0;
    for (const node of nodes) {
      const [, s] = (await node.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
      const [, c] = (await node.call('PUBSUB', 'NUMSUB', channel)) as [string, number];
      sharded += Number(s);
      classic += Number(c);
    }
    return { sharded, classic };
  }

  async function twoInstances(client: () => RedisClient) {
    const make = () => {
      const store = tieredStore({
        l1: memoryStore({ max: 100, ttl: 60_000 }),
        l2: redisStore({ client: client() }),
        channel,
      });
      const cache = createSharedCache<string>({ store, ttl: 60_000, namespace: 'app' });
      return { store, cache };
    };
    const a = make();
    const b = make();
    await Promise.all([a.store.ready(), b.store.ready()]);
    return { a, b };
  }

  interface Instance {
    store: TieredStore;
    cache: SharedCache<string>;
  }

  async function dropsStaleL1(a: Instance, b: Instance) {
    const raw = connect();
    for (const key of ['k1', 'k2', 'k3', 'k4']) {
      expect(await a.cache.getOrLoad(key, () => `${key} v1`)).toBe(`${key} v1`);
      // B reads it into its L1, and keeps it there once A's message for its write-back
      // (which drops B's copy) has arrived.
      await eventually(async () => {
        if ((await b.cache.get(key)) !== `${key} v1`) return false;
        await sleep(30);
        return b.store.peek(stored(key)) !== undefined;
      }, 'B holds it in its L1');
      // Changed behind the cache's back (no message): B keeps serving its L1 copy.
      await raw.set(
        stored(key),
        frame(1, defaultSerializer.encode({ cc: 1, v: 'sneaked in' })),
        'PX',
        60_000,
      );
      expect(await b.cache.get(key)).toBe(`${key} v1`);
      await a.cache.set(key, `${key} v2`);
      await eventually(
        async () => (await b.cache.get(key)) === `${key} v2`,
        "B dropped its L1 copy on A's message",
      );
      await b.cache.delete(key);
      await eventually(
        async () => (await a.cache.get(key)) === undefined,
        "A dropped its L1 copy on B's delete",
      );
    }
  }

  it('drops a key from the other instance’s L1 through sharded pub/sub', async () => {
    const { a, b } = await twoInstances(() => connect());
    try {
      expect(await subscribers()).toEqual({ sharded: 2, classic: 0 });
      await dropsStaleL1(a, b);
    } finally {
      await a.cache.close();
      await b.cache.close();
    }
    await eventually(async () => (await subscribers()).sharded === 0, 'the subscribers closed');
  });

  it('drops the keys of a batched write-back from the other instance’s L1 (sharded too)', async () => {
    const { a, b } = await twoInstances(() => connect());
    try {
      expect(await subscribers()).toEqual({ sharded: 2, classic: 0 });
      let version = 'v1';
      const getter = (cache: SharedCache<string>) =>
        contextBatched(
          'cluster-post',
          async (ids: readonly string[]) => ids.map((id) => `${id} ${version}`),
          { shared: cache as SharedCache<unknown> },
        );
      const getA = getter(a.cache);
      const getB = getter(b.cache);
      // B loads both keys into Redis and its own L1.
      expect(await withCacheContext(() => getB.many(['p1', 'p2']))).toEqual(['p1 v1', 'p2 v1']);
      await eventually(async () => (await whereAre()).size === 2, 'B wrote them back');
      // They leave Redis behind the caches' back (eviction, expiry); the rows change, and
      // A loads them again in one batch, written back in one setMany.
      await Promise.all(nodes.map((node) => node.flushall()));
      version = 'v2';
      expect(await withCacheContext(() => getA.many(['p1', 'p2']))).toEqual(['p1 v2', 'p2 v2']);
      await eventually(
        async () =>
          JSON.stringify(await withCacheContext(() => getB.many(['p1', 'p2']))) ===
          JSON.stringify(['p1 v2', 'p2 v2']),
        "B dropped its L1 copies on A's messages",
      );
    } finally {
      await a.cache.close();
      await b.cache.close();
    }
  });

  it('clears L1 after a shard’s subscriber reconnects (messages sent meanwhile were lost)', async () => {
    const { a, b } = await twoInstances(() => connect());
    try {
      const raw = connect();
      expect(await a.cache.getOrLoad('k', () => 'v1')).toBe('v1');
      await eventually(async () => {
        if ((await b.cache.get('k')) !== 'v1') return false;
        await sleep(30);
        return b.store.peek(stored('k')) !== undefined;
      }, 'B holds it in its L1');
      // Cut every sharded subscriber's connection on the node that carries the channel,
      // then change the value without a message: only clearing L1 can show it.
      const owner = await Promise.all(
        nodes.map(async (node) => {
          const [, count] = (await node.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
          return Number(count) > 0;
        }),
      );
      const node = nodes[owner.indexOf(true)]!;
      await raw.set(
        stored('k'),
        frame(1, defaultSerializer.encode({ cc: 1, v: 'changed while away' })),
        'PX',
        60_000,
      );
      expect(await b.cache.get('k')).toBe('v1');
      await node.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      await eventually(
        async () => (await b.cache.get('k')) === 'changed while away',
        'B cleared its L1 once its subscriber was back',
      );
      await eventually(async () => (await subscribers()).sharded === 2, 'both subscribed again');
      // And invalidations flow again.
      await a.cache.set('k', 'v2');
      await eventually(async () => (await b.cache.get('k')) === 'v2', "B heard A's write");
    } finally {
      await a.cache.close();
      await b.cache.close();
    }
  });

  it('falls back to classic pub/sub on a cluster whose servers lack sharded pub/sub', async () => {
    // The real cluster, seen through a client that reports no SPUBLISH (as Redis 6 does).
    const olderServer = (): RedisClient => {
      const real = connect();
      return new Proxy(real, {
        get(target, name, receiver) {
          if (name === 'call') {
            return (command: string, ...args: (string | number)[]) =>
              command === 'COMMAND' && String(args[1]).toUpperCase() === 'SPUBLISH'
                ? Promise.resolve([null])
                : target.call(command, ...args);
          }
          const value = Reflect.get(target, name, receiver) as unknown;
          return typeof value === 'function' ? value.bind(target) : value;
        },
      }) as unknown as RedisClient;
    };
    const { a, b } = await twoInstances(olderServer);
    try {
      expect(await subscribers()).toEqual({ sharded: 0, classic: 2 });
      await dropsStaleL1(a, b);
    } finally {
      await a.cache.close();
      await b.cache.close();
    }
  });
});
