/**
 * One table of store behaviour, run on every store: the memory store, Redis (with a
 * client we own and with one the store makes from a URL) and the tiered store.
 */

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createSharedCache, memoryStore, type SharedCache, type Store } from '../../src/index.js';
import { encodeKey } from '../../src/keys.js';
import { redisStore, tieredStore } from '../../src/shared/redis.js';
import { defaultSerializer } from '../../src/shared/serializer.js';
import { GROUP_VIEW } from '../../src/shared/types.js';
import { frame, isTombstone } from '../../src/shared/version.js';
import { deferred, eventually, noUnhandledRejections, sleep } from '../helpers/async.js';
import { type RedisServer, startRedis } from '../helpers/redis-server.js';

let server: RedisServer;
let admin: Redis;

beforeAll(async () => {
  server = await startRedis();
  admin = new Redis(server.url);
});

afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

beforeEach(async () => {
  await admin.flushall();
});

noUnhandledRejections();

/** The envelope inside a stored value, after its 21-byte version header. */
function envelopeIn(raw: Buffer): unknown {
  expect(raw.toString('latin1', 0, 21)).toMatch(/^cc1:\d{16}:$/);
  return defaultSerializer.decode(raw.subarray(21));
}

interface Kind {
  name: string;
  make(): Store;
}

const kinds: Kind[] = [
  { name: 'memoryStore', make: () => memoryStore({ max: 1000 }) },
  { name: 'redisStore({ client })', make: () => redisStore({ client: admin }) },
  { name: 'redisStore({ url })', make: () => redisStore({ url: server.url }) },
  {
    name: 'tieredStore',
    make: () =>
      tieredStore({
        l1: memoryStore({ max: 1000, ttl: 60_000 }),
        l2: redisStore({ url: server.url }),
      }),
  },
];

describe.each(kinds)('$name', (kind) => {
  let store: Store;
  let caches: SharedCache<unknown>[];
  const cache = (namespace = 'app', extra: { ttl?: number } = {}) => {
    const made = createSharedCache<unknown>({ store, ttl: extra.ttl ?? 60_000, namespace });
    caches.push(made);
    return made;
  };

  beforeEach(() => {
    store = kind.make();
    caches = [];
    return async () => {
      for (const made of caches) await made.close();
      await store.close();
    };
  });

  it('misses, then hits what was set', async () => {
    const c = cache();
    expect(await c.get('k')).toBeUndefined();
    await c.set('k', { id: 1, name: 'ada' });
    expect(await c.get('k')).toEqual({ id: 1, name: 'ada' });
  });

  it('round-trips undefined, null, 0, empty string and false as hits', async () => {
    const c = cache();
    const values = [undefined, null, 0, '', false, [], {}];
    for (const [i, value] of values.entries()) await c.set(['v', i], value);
    let loads = 0;
    for (const [i, value] of values.entries()) {
      const got = await c.getOrLoad(['v', i], () => {
        loads++;
        return 'loaded';
      });
      expect(got).toEqual(value);
    }
    expect(loads).toBe(0);
  });

  it('stores what getOrLoad loaded, for the next cache over the same store', async () => {
    const first = cache();
    let loads = 0;
    expect(await first.getOrLoad(7, () => ++loads)).toBe(1);
    await eventually(async () => (await cache().get(7)) === 1, 'the write-back landed');
    expect(await cache().getOrLoad(7, () => ++loads)).toBe(1);
    expect(loads).toBe(1);
  });

  it('expires entries after their ttl', async () => {
    const c = cache();
    await c.set('short', 'x', { ttl: 1000 });
    await c.set('long', 'y');
    expect(await c.get('short')).toBe('x');
    await eventually(
      async () => (await c.get('short')) === undefined,
      'the entry expired',
      100,
      50,
    );
    expect(await c.get('long')).toBe('y');
  });

  it('uses the cache ttl by default', async () => {
    const c = cache('app', { ttl: 1000 });
    await c.set('k', 1);
    expect(await c.get('k')).toBe(1);
    await eventually(async () => (await c.get('k')) === undefined, 'the entry expired', 100, 50);
  });

  it('deletes', async () => {
    const c = cache();
    await c.set('k', 1);
    await c.delete('k');
    expect(await c.get('k')).toBeUndefined();
    let loads = 0;
    expect(await c.getOrLoad('k', () => ++loads)).toBe(1);
  });

  it('keeps namespaces apart', async () => {
    const a = cache('a');
    const b = cache('b');
    await a.set('k', 'from a');
    expect(await b.get('k')).toBeUndefined();
    await b.set('k', 'from b');
    expect(await a.get('k')).toBe('from a');
    await a.delete('k');
    expect(await b.get('k')).toBe('from b');
  });

  it('treats a value that does not decode as a miss, replaces it and loads again', async () => {
    const c = cache();
    const full = `app:{${encodeKey('test', 'k')}}`;
    await store.set(full, 'not an envelope {', 60_000);
    let loads = 0;
    expect(await c.getOrLoad('k', () => ++loads)).toBe(1);
    await eventually(async () => (await cache().get('k')) === 1, 'the good value was written');
    expect(loads).toBe(1);
    await store.set(full, JSON.stringify('a foreign value'), 60_000);
    expect(await c.get('k')).toBeUndefined();
    await eventually(async () => {
      const raw = await store.get(full);
      return raw === undefined || isTombstone(raw);
    }, 'the bad value was replaced');
  });

  it('never drops a delete made while it replaces a value that does not decode', async () => {
    // A store whose writes can be held on their way, as by a slow network.
    let hold: Promise<void> | undefined;
    let held = 0;
    const slow = new Proxy(store, {
      get(target, prop) {
        const member = Reflect.get(target, prop) as unknown;
        if (typeof member !== 'function') return member;
        if (prop !== 'set' && prop !== 'delete') return member.bind(target);
        return async (...args: unknown[]) => {
          if (hold !== undefined) {
            held++;
            await hold;
          }
          return member.apply(target, args);
        };
      },
    });
    const c = createSharedCache<unknown>({ store: slow, ttl: 60_000, namespace: 'app' });
    caches.push(c);
    const full = `app:{${encodeKey('test', 'k')}}`;
    await store.set(full, 'not an envelope {', 60_000);
    const release = deferred();
    hold = release.promise;
    // The bad value is a miss; the write that clears it is sent and held.
    expect(await c.get('k')).toBeUndefined();
    await eventually(() => held > 0, 'the bad value is being cleared');
    hold = undefined;
    // Meanwhile the key is deleted: its tombstone lands first.
    await c.delete('k');
    release.resolve();
    await eventually(
      async () =>
        isTombstone((await store.get(full)) ?? '') || (await store.get(full)) === undefined,
      'the clearing write landed',
    );
    await sleep(20);
    // A load that started before the delete writes back late: the delete must refuse it.
    const before = (Date.now() - 60_000) * 1000;
    const stale = frame(before, defaultSerializer.encode({ cc: 1, v: 'stale' }));
    await store.set(full, stale, 60_000, before);
    expect(await c.get('k')).toBeUndefined();
  });
});

describe.each(kinds)('$name keeps the newest load', (kind) => {
  let store: Store;
  beforeEach(() => {
    store = kind.make();
    return () => store.close();
  });

  it('reads a value from before versions (a bare JSON envelope) as a miss, and replaces it', async () => {
    const c = createSharedCache<unknown>({ store, ttl: 60_000, namespace: 'app' });
    const full = `app:{${encodeKey('test', 'old')}}`;
    await store.set(full, JSON.stringify({ cc: 1, v: 'written by the old format' }), 60_000);
    let loads = 0;
    expect(await c.getOrLoad('old', () => `loaded ${++loads}`)).toBe('loaded 1');
    await eventually(async () => (await c.get('old')) === 'loaded 1', 'the load replaced it');
    await c.close();
  });

  it('writes a value only over nothing or over one whose load started earlier', async () => {
    const older = 1_700_000_000_000_000;
    const newer = older + 1;
    const value = (version: number, text: string) =>
      `cc1:${String(version).padStart(16, '0')}:${text}`;
    expect(await store.set('k', value(newer, 'new'), 60_000, newer)).toBe(true);
    expect(await store.set('k', value(older, 'old'), 60_000, older)).toBe(false);
    expect(String(await store.get('k'))).toBe(value(newer, 'new'));
    // The same version is not newer: the first one stays.
    expect(await store.set('k', value(newer, 'again'), 60_000, newer)).toBe(false);
    expect(await store.set('k', value(newer + 1, 'newest'), 60_000, newer + 1)).toBe(true);
    expect(String(await store.get('k'))).toBe(value(newer + 1, 'newest'));
    // Without a version (a direct call), the write is unconditional.
    await store.set('k', 'plain', 60_000);
    expect(String(await store.get('k'))).toBe('plain');
    // A value without a header is older than any versioned one.
    expect(await store.set('k', value(older, 'old'), 60_000, older)).toBe(true);
  });
});

describe('keys', () => {
  it('never mixes two different (group, key) pairs', async () => {
    const store = memoryStore({ max: 1000 });
    const shared = createSharedCache<string>({ store, ttl: 60_000, namespace: 'ns' });
    // Pairs whose naive concatenation collides: "g" + ['a'] and "ga1:" + 'a', ...
    const pairs: [string, Parameters<SharedCache<string>['get']>[0]][] = [
      ['g', ['a']],
      ['ga1:', 'a'],
      ['g', 'a'],
      ['gs1:', 'a'],
      ['user', 1],
      ['user', '1'],
      ['user', [1]],
      ['user1', undefined],
      ['user', null],
      ['u', 'ser'],
      ['s4:user', 1],
    ];
    for (const [group, key] of pairs) {
      await shared[GROUP_VIEW](group).getOrLoad(key, () => `${group}|${String(key)}|${typeof key}`);
    }
    await eventually(() => store.size === pairs.length, 'every value was written back');
    const again = createSharedCache<string>({ store, ttl: 60_000, namespace: 'ns' });
    for (const [group, key] of pairs) {
      const got = await again[GROUP_VIEW](group).getOrLoad(key, () => 'missed');
      expect(got).toBe(`${group}|${String(key)}|${typeof key}`);
    }
    // a key used without a group never meets a grouped one
    expect(await again.get('a')).toBeUndefined();
    expect(await again.get(['a'])).toBeUndefined();
  });
});

describe('redisStore', () => {
  it('writes the namespace verbatim and expires in Redis', async () => {
    const c = createSharedCache<number>({
      store: redisStore({ client: admin }),
      ttl: 60_000,
      namespace: 'my app',
    });
    await c.set('k', 1, { ttl: 5000 });
    const key = `my app:{${encodeKey('test', 'k')}}`;
    expect(envelopeIn((await admin.getBuffer(key))!)).toEqual({ cc: 1, v: 1 });
    const pttl = await admin.pttl(key);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(5000);
    await c.close();
  });

  it('closes only the client it created', async () => {
    const given = new Redis(server.url);
    const mine = createSharedCache<number>({
      store: redisStore({ client: given }),
      ttl: 60_000,
      namespace: 'app',
    });
    await mine.set('k', 1);
    await mine.close();
    expect(await given.ping()).toBe('PONG');
    given.disconnect();

    const own = redisStore({ url: server.url });
    const theirs = createSharedCache<number>({ store: own, ttl: 60_000, namespace: 'app' });
    await theirs.set('k', 1);
    await theirs.close();
    await eventually(() => (own.client as unknown as Redis).status === 'end', 'the client ended');
  });

  it('waits in close() for pending write-backs', async () => {
    const c = createSharedCache<string>({
      store: redisStore({ url: server.url }),
      ttl: 60_000,
      namespace: 'app',
    });
    await c.getOrLoad('k', () => 'loaded');
    await c.close();
    expect(envelopeIn((await admin.getBuffer(`app:{${encodeKey('test', 'k')}}`))!)).toEqual({
      cc: 1,
      v: 'loaded',
    });
  });

  it('rejects bad options with a TypeError that says what to pass', () => {
    expect(() => redisStore({} as never)).toThrow(
      new TypeError(
        "redisStore(): pass { client } (an ioredis client) or { url } (such as 'redis://127.0.0.1:6379'), got an object.",
      ),
    );
    expect(() => redisStore({ client: 'redis://x' } as never)).toThrow(TypeError);
    for (const url of [
      'localhost:6379',
      '127.0.0.1:6379',
      'http://127.0.0.1:6379',
      '/run/redis.sock',
    ]) {
      expect(() => redisStore({ url })).toThrow(
        new TypeError(
          "redisStore(): options.url must be a redis://, rediss:// or unix: URL, such as 'redis://127.0.0.1:6379' " +
            `or 'unix:///run/redis.sock', got a string (${JSON.stringify(url)}).`,
        ),
      );
    }
    expect(() =>
      tieredStore({ l1: memoryStore({ max: 10 }), l2: redisStore({ client: admin }) }),
    ).toThrow(/options\.l1 must be memoryStore\(\{ max, ttl \}\) with a ttl/);
  });
});

describe('redisStore({ url }) over a unix socket', () => {
  it('connects through a unix: URL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'context-cache-unix-'));
    const socket = join(dir, 'redis.sock');
    const child = spawn(
      'redis-server',
      ['--port', '0', '--unixsocket', socket, '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore' },
    );
    try {
      await eventually(() => existsSync(socket), 'redis-server listens on its socket');
      const c = createSharedCache<string>({
        store: redisStore({ url: `unix://${socket}` }),
        ttl: 60_000,
        namespace: 'app',
      });
      await c.set('k', 'over a socket');
      expect(await c.get('k')).toBe('over a socket');
      await c.close();
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('size limit', () => {
  it('set rejects an oversize value with a RangeError; getOrLoad returns it unstored', async () => {
    const store = memoryStore({ max: 10 });
    const c = createSharedCache<string>({
      store,
      ttl: 60_000,
      namespace: 'app',
      maxValueBytes: 64,
    });
    await expect(c.set('big', 'x'.repeat(100))).rejects.toThrow(RangeError);
    await expect(c.set('big', 'x'.repeat(100))).rejects.toThrow(/over maxValueBytes \(64\)/);
    await c.set('small', 'x'.repeat(10));
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(String(w.code));
    process.on('warning', onWarning);
    expect(await c.getOrLoad('big', () => 'y'.repeat(100))).toBe('y'.repeat(100));
    expect(await c.getOrLoad('big2', () => 'y'.repeat(100))).toBe('y'.repeat(100));
    await sleep(10);
    process.off('warning', onWarning);
    expect(store.size).toBe(1);
    await c.close();
    expect(warnings).toEqual(['CONTEXT_CACHE_NOT_STORED']);
  });
});
