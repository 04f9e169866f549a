/**
 * The default serializer: what round-trips through every store (memory and a real
 * Redis), what is refused (returned, not stored, one warning per group), and entries
 * written by earlier releases' JSON envelope, which read as a miss and are loaded again.
 */

import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  contextBatched,
  contextCached,
  createSharedCache,
  memoryStore,
  type SharedCache,
  type Store,
  withCacheContext,
} from '../../src/index.js';
import { encodeKey } from '../../src/keys.js';
import { redisStore, tieredStore } from '../../src/shared/redis.js';
import {
  assertSerializable,
  defaultSerializer,
  NotSerializableError,
} from '../../src/shared/serializer.js';
import { frame, HEADER_BYTES } from '../../src/shared/version.js';
import { eventually, noUnhandledRejections } from '../helpers/async.js';
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

/** Collects warnings in order, as `[message, type, code]`. */
function warnings(): unknown[][] {
  const seen: unknown[][] = [];
  const original = process.emitWarning;
  beforeEach(() => {
    seen.length = 0;
    process.emitWarning = ((...args: unknown[]) => void seen.push(args.slice(0, 3))) as never;
  });
  afterEach(() => {
    process.emitWarning = original;
  });
  return seen;
}

class User {
  constructor(
    readonly id: number,
    readonly name: string,
  ) {}
}

const cyclic: Record<string, unknown> = { name: 'loop' };
cyclic.self = cyclic;

/** Every kind of value the default serializer keeps, and a value of it. */
const roundTrips: [string, unknown][] = [
  ['undefined', undefined],
  ['null', null],
  ['a number', 3.25],
  ['NaN and Infinity', [Number.NaN, Number.POSITIVE_INFINITY]],
  ['a string', 'héllo 😀'],
  ['a boolean', false],
  ['a BigInt', 123n],
  ['a BigInt beyond 64 bits', -(2n ** 90n) - 7n],
  ['a plain object', { id: 1, name: 'ada', tags: ['a', 'b'], nested: { deep: true } }],
  ['an object with an undefined property', { id: 1, deletedAt: undefined }],
  ['an array with undefined', [1, undefined, 3]],
  ['a Date', new Date(Date.UTC(2026, 11, 7, 1, 2, 3, 456))],
  ['a user row with Dates', { id: 7, createdAt: new Date(0), lastLogin: null }],
  [
    'a Map (object keys, nested Map)',
    new Map<unknown, unknown>([
      [{ id: 1 }, 'one'],
      ['two', new Map([[2, new Date(2)]])],
    ]),
  ],
  ['a Set', new Set(['a', 1, 2n, null])],
  ['a Uint8Array', new Uint8Array([0, 1, 255])],
  ['an Int32Array', new Int32Array([-1, 2 ** 31 - 1])],
  ['a Float64Array', new Float64Array([1.5, -0.25])],
  ['a BigInt64Array', new BigInt64Array([-(2n ** 63n)])],
  ['a BigUint64Array', new BigUint64Array([2n ** 64n - 1n])],
  ['a Buffer', Buffer.from('raw bytes')],
  ['a list of rows', Array.from({ length: 50 }, (_, i) => ({ id: i, at: new Date(i) }))],
  ['a cycle', cyclic],
];

interface Kind {
  name: string;
  make(): Store;
}

const kinds: Kind[] = [
  { name: 'memoryStore', make: () => memoryStore({ max: 1000 }) },
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

describe.each(kinds)('round-trips through $name', (kind) => {
  let cache: SharedCache<unknown>;
  let reader: SharedCache<unknown>;

  beforeEach(() => {
    cache = createSharedCache<unknown>({ store: kind.make(), ttl: 60_000, namespace: 'app' });
    // A second cache over a store of its own: on Redis it reads what the first wrote.
    reader = createSharedCache<unknown>({ store: kind.make(), ttl: 60_000, namespace: 'app' });
    return async () => {
      await cache.close();
      await reader.close();
    };
  });

  it.each(roundTrips)('%s', async (_name, value) => {
    await cache.set('k', value);
    const back = await cache.get('k');
    expect(back).toStrictEqual(value);
    if (typeof value === 'object' && value !== null) expect(back).not.toBe(value);
    // getOrLoad's write-back, read by a fresh cache (from Redis where there is one).
    expect(await cache.getOrLoad('loaded', () => value)).toBe(value);
    await cache.close();
    if (kind.name === 'memoryStore') return;
    // A hit, whatever the value (undefined included): the loader here is never called.
    const stored = () =>
      reader.getOrLoad('loaded', () => {
        throw new Error('not in the store');
      });
    await eventually(
      () =>
        stored().then(
          () => true,
          () => false,
        ),
      'written back',
    );
    expect(await stored()).toStrictEqual(value);
  });

  it('gives each caller its own copy: changing what one got never changes the stored value', async () => {
    const value = { bytes: Buffer.from('abc'), list: [1], at: new Date(5) };
    await cache.set('k', value);
    const first = (await cache.get('k')) as typeof value;
    first.bytes[0] = 0;
    first.list.push(2);
    first.at.setTime(0);
    expect(await cache.get('k')).toStrictEqual(value);
  });
});

describe('refused values', () => {
  const seen = warnings();

  it('returns a class instance unstored, with one warning per group naming the type and the serializer option', async () => {
    const store = memoryStore({ max: 100 });
    const shared = createSharedCache<unknown>({ store, ttl: 60_000, namespace: 'app' });
    let loads = 0;
    const getUser = contextCached(
      'user',
      (id: number) => {
        loads++;
        return new User(id, 'ada');
      },
      { shared },
    );
    const getProfile = contextCached(
      'profile',
      (id: number) => ({ id, owner: new User(id, 'bob') }),
      {
        shared,
      },
    );
    const first = await withCacheContext(() => getUser(1));
    expect(first).toBeInstanceOf(User);
    expect(first).toEqual(new User(1, 'ada'));
    // Not stored: the next request loads again, and the group is not reported again.
    const second = await withCacheContext(() => getUser(1));
    expect(second).toBeInstanceOf(User);
    await withCacheContext(() => getUser(2));
    expect(loads).toBe(3);
    const profile = await withCacheContext(() => getProfile(1));
    expect((profile as { owner: unknown }).owner).toBeInstanceOf(User);
    await withCacheContext(() => getProfile(2));
    await shared.close();
    expect(store.size).toBe(0);
    expect(seen).toEqual([
      [
        `A value loaded for group "user" was not stored in the shared cache ("app:{${encodeKey('t', 'user')}${encodeKey('t', 1)}}"): ` +
          'the default serializer cannot round-trip the value itself (User instance). It was returned all the same, ' +
          'and is loaded again on every miss. Return plain data (objects, arrays, Date, Map, Set, BigInt, typed arrays, Buffer), ' +
          'or pass createSharedCache() a serializer option that handles it. Later values of this group are not reported.',
        'ContextCacheWarning',
        'CONTEXT_CACHE_NOT_SERIALIZABLE',
      ],
      [
        expect.stringMatching(
          /^A value loaded for group "profile" was not stored .*: the default serializer cannot round-trip the User instance at \.owner\./,
        ),
        'ContextCacheWarning',
        'CONTEXT_CACHE_NOT_SERIALIZABLE',
      ],
    ]);
  });

  it('contextBatched: refused values of a batch are returned unstored, one warning per group', async () => {
    const store = memoryStore({ max: 100 });
    const shared = createSharedCache<unknown>({ store, ttl: 60_000, namespace: 'app' });
    let batches = 0;
    const getUsers = contextBatched(
      'batched-user',
      async (ids: readonly number[]) => {
        batches++;
        return ids.map((id) => (id % 2 === 0 ? new User(id, 'even') : { id, plain: true }));
      },
      { shared },
    );
    const first = await withCacheContext(() => getUsers.many([1, 2, 3, 4]));
    expect(first[1]).toBeInstanceOf(User);
    expect(first[0]).toEqual({ id: 1, plain: true });
    await eventually(async () => store.size === 2, 'the plain values stored');
    // The next request: plain values from the store, instances loaded again.
    const second = await withCacheContext(() => getUsers.many([1, 2, 3, 4]));
    expect(second[3]).toBeInstanceOf(User);
    expect(batches).toBe(2);
    await shared.close();
    expect(seen).toEqual([
      [
        expect.stringMatching(
          /^A value loaded for group "batched-user" was not stored .*: the default serializer cannot round-trip the value itself \(User instance\)\./,
        ),
        'ContextCacheWarning',
        'CONTEXT_CACHE_NOT_SERIALIZABLE',
      ],
    ]);
  });

  it('getOrLoad outside any group warns once for all such keys; a plain value still stores', async () => {
    const store = memoryStore({ max: 100 });
    const cache = createSharedCache<unknown>({ store, ttl: 60_000, namespace: 'app' });
    const fn = (): number => 1;
    expect(await cache.getOrLoad('a', () => fn)).toBe(fn);
    const sym = Symbol('s');
    expect(await cache.getOrLoad('b', () => ({ sym }))).toEqual({ sym });
    expect(await cache.getOrLoad('c', () => ({ ok: true }))).toEqual({ ok: true });
    await cache.close();
    expect(seen).toHaveLength(1);
    expect(seen[0]?.[0]).toMatch(
      /^A loaded value was not stored .*: the default serializer cannot round-trip the value itself \(function\)\./,
    );
    expect(seen[0]?.[0]).toMatch(/Later values of keys outside any group are not reported\.$/);
  });

  it('set() rejects a refused value with a TypeError that names the type and where it sits', async () => {
    const store = memoryStore({ max: 100 });
    const cache = createSharedCache<unknown>({ store, ttl: 60_000, namespace: 'app' });
    const value = { rows: [{ at: new Date(0) }, { owner: new User(1, 'a') }] };
    await expect(cache.set('k', value)).rejects.toThrow(TypeError);
    await expect(cache.set('k', value)).rejects.toThrow(
      `set(): the default serializer cannot round-trip the User instance at .rows[1].owner ("app:{${encodeKey('t', 'k')}}").`,
    );
    expect(store.size).toBe(0);
    expect(seen).toEqual([]);
    await cache.close();
  });

  it('reports what a serializer option threw, once per group, and returns the value', async () => {
    const store = memoryStore({ max: 100 });
    const cache = createSharedCache<unknown>({
      store,
      ttl: 60_000,
      namespace: 'app',
      serializer: { encode: (v) => JSON.stringify(v), decode: (raw) => JSON.parse(String(raw)) },
    });
    expect(await cache.getOrLoad('a', () => ({ n: 1n }))).toEqual({ n: 1n });
    expect(await cache.getOrLoad('b', () => ({ n: 2n }))).toEqual({ n: 2n });
    expect(await cache.getOrLoad('c', () => ({ n: 3 }))).toEqual({ n: 3 });
    await cache.close();
    expect(seen).toHaveLength(1);
    expect(seen[0]?.[0]).toMatch(
      /^A loaded value was not stored .*: the serializer option's encode\(\) threw: Do not know how to serialize a BigInt\. /,
    );
  });

  it.each([
    ['a class instance', new User(1, 'a'), 'User instance', ''],
    ['a function in a Map', new Map([['k', () => 1]]), 'function', '<Map entry 0>'],
    ['a symbol in a Set', new Set([Symbol('s')]), 'symbol', '<Set item 0>'],
    ['an Error', { error: new Error('x') }, 'Error instance', '.error'],
    ['a Promise', [Promise.resolve(1)], 'Promise instance', '[0]'],
    ['a RegExp', { 'odd key': /x/ }, 'RegExp instance', '["odd key"]'],
    ['a boxed string', { s: new String('x') }, 'String instance', '.s'],
    ['a WeakMap', new WeakMap(), 'WeakMap instance', ''],
  ])('refuses %s', (_name, value, type, path) => {
    let thrown: unknown;
    try {
      assertSerializable(value);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(NotSerializableError);
    expect(thrown).toBeInstanceOf(TypeError);
    expect(thrown).toMatchObject({ type, path, code: 'CONTEXT_CACHE_NOT_SERIALIZABLE' });
    expect(() => defaultSerializer.encode(value)).toThrow(NotSerializableError);
  });

  it('refuses what msgpackr would store changed: an own __proto__ key, a lone surrogate', () => {
    // JSON.parse of user input makes an own __proto__ key, which msgpackr renames.
    const parsed = JSON.parse('{"profile": {"__proto__": {"admin": true}}}') as unknown;
    expect(() => defaultSerializer.encode(parsed)).toThrow(
      expect.objectContaining({ type: 'property named "__proto__"', path: '.profile.__proto__' }),
    );
    // Text cut in the middle of an emoji's surrogate pair, as a value and as a key.
    const cut = 'great talk 😀'.slice(0, -1);
    for (const value of [{ bio: cut }, [cut], new Map([[cut, 1]]), { [cut]: 1 }]) {
      expect(() => defaultSerializer.encode(value)).toThrow(
        expect.objectContaining({ type: 'string with a lone surrogate' }),
      );
    }
    // A real replacement character, and a whole emoji, round-trip.
    const fine = { a: 'bad byte: \uFFFD', b: 'great talk 😀', '\uFFFD': 'key' };
    expect(defaultSerializer.decode(defaultSerializer.encode(fine))).toEqual(fine);
  });

  it('accepts objects without a prototype (they come back as plain objects) and deep cycles', () => {
    const bare = Object.assign(Object.create(null) as object, { a: 1 });
    expect(defaultSerializer.decode(defaultSerializer.encode(bare))).toEqual({ a: 1 });
    const head: Record<string, unknown> = {};
    let node = head;
    for (let i = 0; i < 200; i++) {
      const next: Record<string, unknown> = { i };
      node.next = next;
      node = next;
    }
    node.back = head;
    const back = defaultSerializer.decode(defaultSerializer.encode(head)) as Record<
      string,
      unknown
    >;
    let walk = back;
    for (let i = 0; i < 200; i++) walk = walk.next as Record<string, unknown>;
    expect(walk.back).toBe(back);
    // A refused value deep inside a cycle is still found.
    node.bad = new User(1, 'x');
    expect(() => assertSerializable(head)).toThrow(/User instance at (\.next){200}\.bad/);
  });
});

describe('entries written by the JSON envelope of earlier releases', () => {
  /** The bytes an earlier release stored: `JSON.stringify({ cc: 1, v: value })`. */
  const oldBytes = (value: unknown) => JSON.stringify({ cc: 1, v: value });

  it.each([
    ['redisStore({ url })', () => redisStore({ url: server.url })],
    [
      'tieredStore',
      () =>
        tieredStore({
          l1: memoryStore({ max: 100, ttl: 60_000 }),
          l2: redisStore({ url: server.url }),
        }),
    ],
  ])('read as a miss through %s, are loaded again and rewritten', async (_name, make) => {
    const cache = createSharedCache<{ id: number; createdAt: Date }>({
      store: make(),
      ttl: 60_000,
      namespace: 'app',
    });
    const key = `app:{${encodeKey('t', 'user:1')}}`;
    // What a running instance of an earlier release wrote under live traffic.
    await admin.set(key, oldBytes({ id: 1, createdAt: '2026-01-01T00:00:00.000Z' }), 'PX', 60_000);
    await admin.set(`app:{${encodeKey('t', 'user:2')}}`, oldBytes(null), 'PX', 60_000);
    expect(await cache.get('user:2')).toBeUndefined();
    let loads = 0;
    const fresh = { id: 1, createdAt: new Date(Date.UTC(2026, 0, 1)) };
    const value = await cache.getOrLoad('user:1', () => {
      loads++;
      return fresh;
    });
    expect(value).toBe(fresh);
    expect(loads).toBe(1);
    await eventually(async () => {
      const raw = await admin.getBuffer(key);
      return raw !== null && raw[HEADER_BYTES] === 0xc1;
    }, 'the value was rewritten in the new format');
    expect(
      defaultSerializer.decode((await admin.getBuffer(key))!.subarray(HEADER_BYTES)),
    ).toStrictEqual({
      cc: 1,
      v: fresh,
    });
    const again = await cache.getOrLoad('user:1', () => {
      loads++;
      return fresh;
    });
    expect(again.createdAt).toBeInstanceOf(Date);
    expect(again).toStrictEqual(fresh);
    expect(loads).toBe(1);
    await cache.close();
  });

  it('a value of another format version, or cut short, is a miss and is loaded again', async () => {
    const store = memoryStore({ max: 10 });
    const cache = createSharedCache<number>({ store, ttl: 60_000, namespace: 'app' });
    const good = defaultSerializer.encode({ cc: 1, v: 1 }) as Buffer;
    const later = Buffer.from(good);
    later[1] = 2; // a format this release does not know
    await store.set(`app:{${encodeKey('t', 'later')}}`, frame(1, later), 60_000);
    await store.set(
      `app:{${encodeKey('t', 'cut')}}`,
      frame(1, good.subarray(0, good.length - 1)),
      60_000,
    );
    expect(() => defaultSerializer.decode(later)).toThrow(/another version \(2\)/);
    expect(await cache.getOrLoad('later', () => 2)).toBe(2);
    expect(await cache.getOrLoad('cut', () => 3)).toBe(3);
    await cache.close();
  });

  it('are a miss through memoryStore too (a custom store that kept strings)', async () => {
    const store = memoryStore({ max: 10 });
    const cache = createSharedCache<number>({ store, ttl: 60_000, namespace: 'app' });
    await store.set(`app:{${encodeKey('t', 'k')}}`, oldBytes(1), 60_000);
    await store.set(`app:{${encodeKey('t', 'b')}}`, Buffer.from(oldBytes(1)), 60_000);
    expect(await cache.getOrLoad('k', () => 2)).toBe(2);
    expect(await cache.getOrLoad('b', () => 3)).toBe(3);
    await eventually(
      async () => (await cache.get('k')) === 2 && (await cache.get('b')) === 3,
      'stored',
    );
    await cache.close();
  });
});
