/**
 * Faults of a real redis-server, each with a bounded load loop running through it:
 * the server killed (SIGKILL) and restarted, paused (SIGSTOP/SIGCONT) for longer than
 * the read timeout, and a corrupt value written under a key. Every request must
 * succeed, no rejection may go unhandled, each outage is reported exactly once (and its
 * end once), and values are served from Redis again after recovery.
 */

import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  contextCached,
  createSharedCache,
  type SharedCache,
  type Store,
  withCacheContext,
} from '../../src/index.js';
import { encodeKey } from '../../src/keys.js';
import { memoryStore } from '../../src/shared/memory.js';
import { type RedisStore, redisStore, tieredStore } from '../../src/shared/redis.js';
import { defaultSerializer } from '../../src/shared/serializer.js';
import { eventually, sleep } from '../helpers/async.js';
import { type RedisServer, startRedis } from '../helpers/redis-server.js';

let server: RedisServer;
let admin: Redis;
let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(async () => {
  server = await startRedis();
  admin = new Redis(server.url, { maxRetriesPerRequest: null });
  admin.on('error', () => {});
  process.on('unhandledRejection', onUnhandled);
});

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  admin?.disconnect();
  await server?.stop();
});

beforeEach(async () => {
  unhandled = [];
  await admin.flushall();
});

const KEYS = 20;
const userValue = (key: number) => ({ id: key, name: `user ${key}` });

interface Loop {
  requests: number;
  failed: number;
  loads: number;
  stop(): Promise<void>;
}

/**
 * Requests in the background until stopped (and never more than `max` rounds): each
 * round runs a few concurrent requests over a small key space through `getOrLoad`.
 */
function loadLoop(cache: SharedCache<unknown>, max = 2000): Loop {
  let running = true;
  const loop: Loop = {
    requests: 0,
    failed: 0,
    loads: 0,
    stop: async () => {
      running = false;
      await done;
    },
  };
  const one = async (key: number) => {
    loop.requests++;
    try {
      const got = await withCacheContext(() =>
        cache.getOrLoad(key, (k) => {
          loop.loads++;
          return userValue(k as number);
        }),
      );
      expect(got).toEqual(userValue(key));
    } catch {
      loop.failed++;
    }
  };
  const done = (async () => {
    for (let round = 0; running && round < max; round++) {
      await Promise.all([0, 1, 2, 3].map(() => one(Math.floor(Math.random() * KEYS))));
      await sleep(5);
    }
  })();
  return loop;
}

function reporting() {
  const events: string[] = [];
  return {
    events,
    onError: (_err: Error, info: { op: string }) => events.push(`error ${info.op}`),
    onRecover: () => events.push('recover'),
  };
}

/** After recovery: values loaded now are stored, and the next lookup is a Redis hit. */
async function hitsAgain(cache: SharedCache<unknown>): Promise<void> {
  let loads = 0;
  const load = () => {
    loads++;
    return 'after recovery';
  };
  expect(await cache.getOrLoad('after', load)).toBe('after recovery');
  const key = `app:{${encodeKey('test', 'after')}}`;
  await eventually(async () => (await admin.get(key)) !== null, 'the value reached Redis');
  const fresh = createSharedCache<unknown>({
    store: redisStore({ url: server.url }),
    ttl: 60_000,
    namespace: 'app',
  });
  expect(await fresh.getOrLoad('after', load)).toBe('after recovery');
  await fresh.close();
  expect(loads).toBe(1);
}

/**
 * The end of an outage test: wait for the recovery report, stop the load loop, check
 * hits come back, print the figures, and assert 0 failed requests, 0 unhandled
 * rejections, and exactly one error report then one recovery for the outage.
 */
async function recovered(
  label: string,
  report: ReturnType<typeof reporting>,
  cache: Parameters<typeof hitsAgain>[0],
  loop: ReturnType<typeof loadLoop>,
): Promise<void> {
  await eventually(() => report.events.includes('recover'), 'the store recovered', 400);
  await sleep(300);
  await loop.stop();
  await hitsAgain(cache);
  await cache.close();
  const figures = { requests: loop.requests, failed: loop.failed, unhandled: unhandled.length };
  console.info(`${label}: ${JSON.stringify({ ...figures, reports: report.events })}`);
  expect(loop.requests).toBeGreaterThan(50);
  expect(loop.failed).toBe(0);
  expect(unhandled).toEqual([]);
  expect(report.events.length).toBe(2);
  expect(report.events[0]).toMatch(/^error /);
  expect(report.events[1]).toBe('recover');
}

describe.each([
  { name: 'redisStore', tiered: false },
  { name: 'tieredStore', tiered: true },
])('$name under faults', ({ tiered }) => {
  const makeCache = (report: ReturnType<typeof reporting>) =>
    createSharedCache<unknown>({
      store: tiered
        ? tieredStore({
            l1: memoryStore({ max: 1000, ttl: 200 }),
            l2: redisStore({ url: server.url }),
          })
        : redisStore({ url: server.url }),
      ttl: 60_000,
      namespace: 'app',
      onError: report.onError,
      onRecover: report.onRecover,
    });

  it('survives redis-server killed (SIGKILL) and restarted', async () => {
    const report = reporting();
    const cache = makeCache(report);
    const loop = loadLoop(cache);
    await sleep(300);
    await server.kill();
    await sleep(800);
    await server.restart();
    await recovered('SIGKILL+restart', report, cache, loop);
  });

  it('survives redis-server paused (SIGSTOP) for longer than readTimeout', async () => {
    const report = reporting();
    const cache = makeCache(report);
    const loop = loadLoop(cache);
    await sleep(300);
    server.pause();
    await sleep(1200); // readTimeout is 250 ms
    server.resume();
    await recovered('SIGSTOP/SIGCONT', report, cache, loop);
  });

  it('reloads and rewrites a corrupt value written under a key', async () => {
    const report = reporting();
    const cache = makeCache(report);
    const loop = loadLoop(cache);
    await sleep(200);
    const key = `app:{${encodeKey('test', 3)}}`;
    const header = `cc1:${String(Date.now() * 1000).padStart(16, '0')}:`;
    await admin.set(key, `${header}{"cc":1,"v":{"id":3,"na`, 'PX', 60_000);
    await eventually(async () => {
      const raw = await admin.getBuffer(key);
      return raw !== null && raw[header.length] === 0xc1;
    }, 'the value was rewritten');
    expect(defaultSerializer.decode((await admin.getBuffer(key))!.subarray(header.length))).toEqual(
      {
        cc: 1,
        v: userValue(3),
      },
    );
    await sleep(100);
    await loop.stop();
    await cache.close();
    console.info(
      `corrupt value: ${JSON.stringify({ requests: loop.requests, failed: loop.failed, unhandled: unhandled.length, reports: report.events })}`,
    );
    expect(loop.failed).toBe(0);
    expect(unhandled).toEqual([]);
    expect(report.events).toEqual([]);
  });
});

describe('tieredStore subscriber', () => {
  it('clears L1 after the subscriber reconnects (invalidations sent meanwhile are lost)', async () => {
    const l1 = memoryStore({ max: 100, ttl: 60_000 });
    const store = tieredStore({ l1, l2: redisStore({ url: server.url }) });
    await store.ready();
    await admin.set('t:k', 'v', 'PX', 60_000);
    expect(String(await store.get('t:k'))).toBe('v');
    expect(String(store.peek('t:k'))).toBe('v'); // filled from Redis
    await server.kill();
    expect(String(store.peek('t:k'))).toBe('v'); // L1 still serves during the outage
    await server.restart();
    await eventually(
      () => store.peek('t:k') === undefined,
      'L1 was cleared after reconnecting',
      400,
    );
    expect(l1.size).toBe(0);
    await store.close();
  });
});

describe('fail fast during an outage', () => {
  const readTimeout = 2000; // large, so "not waiting on the store" has a wide margin

  /** A store over `inner` that counts the operations it was asked to send. */
  function counting(inner: RedisStore) {
    const sent = { count: 0 };
    const store: Store = {
      get(key) {
        sent.count++;
        return inner.get(key);
      },
      set(key, value, ttl, version) {
        sent.count++;
        return inner.set(key, value, ttl, version);
      },
      delete(key) {
        sent.count++;
        return inner.delete(key);
      },
      connection: () => inner.connection(),
      close: () => inner.close(),
    };
    return { store, sent };
  }

  const variants = [
    {
      name: 'a { url } store',
      make: () => ({ inner: redisStore({ url: server.url }), own: undefined }),
    },
    {
      name: 'a client made with ioredis defaults',
      make: () => {
        const own = new Redis(server.url);
        own.on('error', () => {});
        return { inner: redisStore({ client: own }), own };
      },
    },
  ];

  it.each(variants)(
    'with $name: misses go to the loader, writes reject with the client’s cause, hits come back on reconnect',
    async (variant) => {
      const { inner, own } = variant.make();
      const { store, sent } = counting(inner);
      const errors: Error[] = [];
      let recoveries = 0;
      const cache = createSharedCache<string>({
        store,
        ttl: 60_000,
        namespace: 'app',
        readTimeout,
        writeTimeout: readTimeout,
        onError: (err) => errors.push(err),
        onRecover: () => recoveries++,
      });
      // A group of its own per variant: each variant makes its own getter.
      const item = contextCached(`item (${variant.name})`, (id: number) => `item ${id}`, {
        shared: cache,
      });
      await cache.set('warm', 'up');
      const client = inner.client as unknown as Redis;
      let refused = false;
      client.on('error', (err: Error & { code?: string }) => {
        if (err.code === 'ECONNREFUSED') refused = true;
      });
      await server.kill();
      try {
        await eventually(() => refused, 'the client was refused a connection');
        await outage();
      } finally {
        await server.restart();
      }
      // The client reports itself connected again: the window ends, the next operation
      // is the probe, and it succeeds, long before the first window (1 s) could matter.
      await eventually(() => client.status === 'ready', 'the client reconnected');
      await cache.set('after', 'stored');
      expect(recoveries).toBe(1);
      expect(await cache.get('after')).toBe('stored');
      let reloads = 0;
      expect(await cache.getOrLoad('again', () => `loaded ${++reloads}`)).toBe('loaded 1');
      await eventually(async () => (await cache.get('again')) === 'loaded 1', 'stored again');
      expect(await cache.getOrLoad('again', () => `loaded ${++reloads}`)).toBe('loaded 1');
      expect(reloads).toBe(1);
      expect(errors).toHaveLength(1);
      expect(recoveries).toBe(1);
      expect(unhandled).toEqual([]);
      await cache.close();
      own?.disconnect();

      async function outage() {
        sent.count = 0;
        // A page of 10 sequential misses during the outage: the loaders answer, the store
        // is never asked.
        let loads = 0;
        const started = performance.now();
        for (let i = 0; i < 10; i++) {
          expect(await cache.getOrLoad(['page', i], () => `row ${++loads}`)).toBe(`row ${loads}`);
        }
        const page = performance.now() - started;
        expect(loads).toBe(10);
        expect(sent.count).toBe(0);
        expect(page).toBeLessThan(3 * readTimeout);
        // set and invalidate reject at once, with the client's own cause.
        const setError = await cache.set('k', 'v').catch((err: Error) => err);
        const began = performance.now();
        const invalidated = await withCacheContext(() => item.invalidate(1)).catch(
          (err: Error) => err,
        );
        expect(performance.now() - began).toBeLessThan(readTimeout);
        for (const err of [setError, invalidated]) {
          expect(err).toBeInstanceOf(Error);
          expect(((err as Error).cause as { code?: string }).code).toBe('ECONNREFUSED');
          expect((err as Error).message).toMatch(/client is not connected \(.*ECONNREFUSED/);
        }
        expect(sent.count).toBe(0);
        expect(errors).toHaveLength(1);
        expect(recoveries).toBe(0);
      }
    },
  );

  it('a paused server (connected but silent) still gives up at readTimeout, then is skipped', async () => {
    const { store, sent } = counting(redisStore({ url: server.url }));
    const errors: Error[] = [];
    const cache = createSharedCache<string>({
      store,
      ttl: 60_000,
      namespace: 'app',
      readTimeout: 300,
      onError: (err) => errors.push(err),
    });
    await cache.set('warm', 'up');
    server.pause();
    try {
      sent.count = 0;
      let loads = 0;
      for (let i = 0; i < 10; i++) await cache.getOrLoad(['paused', i], () => `row ${++loads}`);
      expect(loads).toBe(10);
      expect(sent.count).toBe(1); // the read that found the outage; the rest were skipped
      expect(errors.map((err) => err.message)).toEqual([
        `The shared store did not answer get "app:{a2:s6:pausedn0;}" within 300 ms.`,
      ]);
    } finally {
      server.resume();
    }
    await cache.close();
  });
});
