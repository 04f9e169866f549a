/**
 * The Redis stores (`context-cache/redis`): `redisStore()` shares values between
 * instances, `tieredStore()` puts an in-process L1 in front of it and keeps every
 * instance's L1 honest through Redis pub/sub. Built on ioredis, an optional peer
 * dependency loaded by this subpath alone; any ioredis-compatible client works (no
 * `instanceof` checks), a Redis Cluster client included: keys carry a hash tag, and
 * invalidations go through sharded pub/sub where the servers have it.
 */

import { createHash, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { checkOptionNames, describe } from '../warnings.js';
import type { MemoryStore } from './memory.js';
import type { Store, StoreEntry, StoreValue } from './types.js';
import { isTombstone, SET_IF_NEWER_SCRIPT, versionOf } from './version.js';

/** The commands a Redis client must offer: a subset of ioredis's `Redis`. */
export interface RedisClient {
  get(key: string): Promise<string | null>;
  /** Used when present, so binary serializers round-trip. */
  getBuffer?(key: string): Promise<Buffer | null>;
  set(key: string, value: string | Buffer, px: 'PX', ttl: number): Promise<unknown>;
  set(key: string, value: string | Buffer, px: 'PX', ttl: number, nx: 'NX'): Promise<unknown>;
  del(key: string): Promise<number>;
  /** Used when present (with `mgetBuffer`) for a batched getter's one-round-trip read. */
  mget?(...keys: string[]): Promise<(string | null)[]>;
  mgetBuffer?(...keys: string[]): Promise<(Buffer | null)[]>;
  /** Used when present for a batched getter's one-round-trip write-back. */
  pipeline?(): RedisPipeline;
  /**
   * ioredis's `Cluster` says so: its keys live in many slots, so no `MGET` across them,
   * and `tieredStore` uses sharded pub/sub where the servers have it.
   */
  readonly isCluster?: boolean;
  /** Used when present, so `tieredStore()` never keeps a value in L1 past its Redis ttl. */
  pttl?(key: string): Promise<number>;
  /**
   * Used when present to write only over older values (compare and set) and to release
   * a lock atomically (compare and delete). Without it writes are unconditional.
   */
  eval?(script: string, numkeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** Used when present to send the compare-and-set script by its digest. */
  evalsha?(sha: string, numkeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  publish(channel: string, message: string): Promise<number>;
  subscribe(...channels: string[]): Promise<unknown>;
  /** Sharded publish (Redis 7): used on a Redis Cluster whose servers have it. */
  spublish?(channel: string, message: string): Promise<unknown>;
  /** Sharded subscribe (Redis 7): used on a Redis Cluster whose servers have it. */
  ssubscribe?(...channels: string[]): Promise<unknown>;
  /** Any command: used when present to ask the server whether it has sharded pub/sub. */
  call?(command: string, ...args: (string | number)[]): Promise<unknown>;
  /**
   * A copy of the client, for the invalidation subscriber. A Redis client takes
   * `(options)`; an ioredis `Cluster` (`isCluster: true`) takes `(startupNodes, options)`.
   */
  duplicate(
    overrideOrNodes?: Record<string, unknown> | readonly unknown[],
    options?: Record<string, unknown>,
  ): RedisClient;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Used when present to remove the store's listeners from a client it was given. */
  removeListener?(event: string, listener: () => void): unknown;
  /** Used when present to count the client's own `error` listeners. */
  listenerCount?(event: string): number;
  /**
   * ioredis's connection state (`'ready'` when connected). Used when present: a client
   * that was ready once and is not now is not waited on.
   */
  readonly status?: string;
  /** ioredis's options; the store turns the offline queue off on clients it made. */
  readonly options?: { enableOfflineQueue?: boolean | undefined };
  quit(): Promise<unknown>;
  disconnect(): void;
}

/** The part of an ioredis pipeline a batched write-back uses. */
export interface RedisPipeline {
  evalsha(sha: string, numkeys: number, ...args: (string | number | Buffer)[]): unknown;
  eval(script: string, numkeys: number, ...args: (string | number | Buffer)[]): unknown;
  exec(): Promise<[Error | null, unknown][] | null>;
}

/** Options of `redisStore`: a client you own, or a URL for a client the store owns. */
export type RedisStoreOptions = { client: RedisClient } | { url: string };

/** A store in Redis, made by `redisStore()`. */
export interface RedisStore extends Store {
  /** Resolves `false` when a value with a larger `version` is kept instead. */
  set(key: string, value: StoreValue, ttl: number, version?: number): Promise<boolean>;
  connection(): number | Error;
  lock(key: string, token: string, ttl: number): Promise<boolean>;
  unlock(key: string, token: string): Promise<void>;
  /** The client the store talks through (yours, or the one it made from `url`). */
  readonly client: RedisClient;
  /** The value and its remaining ttl in ms (`undefined` when unknown or endless). */
  getWithTtl(key: string): Promise<[StoreValue | undefined, number | undefined]>;
}

/** Options of `tieredStore`. */
export interface TieredStoreOptions {
  /** The in-process tier: `memoryStore({ max, ttl })`; its `ttl` bounds staleness. */
  l1: MemoryStore;
  /** The shared tier: `redisStore(...)`. */
  l2: RedisStore;
  /** The pub/sub channel of invalidations. Default `context-cache:invalidate`. */
  channel?: string;
}

/** A two-tier store, made by `tieredStore()`. */
export interface TieredStore extends Store {
  peek(key: string): StoreValue | undefined;
  /** Resolves `false` when a value with a larger `version` is kept instead. */
  set(key: string, value: StoreValue, ttl: number, version?: number): Promise<boolean>;
  /** L1 first, then the keys it lacks from Redis in one `MGET`. */
  getMany(keys: readonly string[]): Promise<(StoreValue | undefined)[]>;
  /** Redis in one pipeline, then L1 and the invalidation messages of what landed. */
  setMany(entries: readonly StoreEntry[]): Promise<boolean[]>;
  connection(): number | Error;
  /** This instance's id, sent with its invalidations so it can ignore its own. */
  readonly instanceId: string;
  lock(key: string, token: string, ttl: number): Promise<boolean>;
  unlock(key: string, token: string): Promise<void>;
  /** Resolves once the invalidation subscriber is listening. */
  ready(): Promise<void>;
  /** Hears the keys of other instances' invalidation messages; returns how to stop. */
  onInvalidate(listener: (key: string) => void): () => void;
}

/** Default pub/sub channel of `tieredStore()`. */
const DEFAULT_CHANNEL = 'context-cache:invalidate';

/** How long `close()` lets a client it made finish its replies before cutting it. */
const QUIT_TIMEOUT = 1000;

/** Delete the lock only while it still holds our token. */
const UNLOCK_SCRIPT =
  "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

const SET_IF_NEWER_SHA = createHash('sha1').update(SET_IF_NEWER_SCRIPT).digest('hex');

const CLIENT_METHODS = ['get', 'set', 'del'] as const;

/** URLs `redisStore({ url })` accepts. */
const URL_SCHEMES = /^(rediss?:\/\/|unix:)/i;

/** An invalidation message: the sender's id (a UUID, 36 chars), a space, the key. */
const ID_LENGTH = 36;

/** Options of every client this package makes: a command cut by a disconnection is not sent again later. */
const OWN_CLIENT_OPTIONS = { autoResendUnfulfilledCommands: false } as const;

/**
 * A client this package made queues commands only until its first connection; once it
 * has been connected, a command sent while it is away fails at once instead of waiting
 * in the offline queue and landing, stale, after the store gave up on it.
 */
function queueUntilFirstReady(client: RedisClient): void {
  client.on('ready', () => {
    const options = client.options as { enableOfflineQueue?: boolean } | undefined;
    if (options !== undefined) options.enableOfflineQueue = false;
  });
}

/** The Redis client for `{ url }`; `unix:` URLs become ioredis's socket path. */
function clientFor(url: string): RedisClient {
  if (/^unix:/i.test(url)) {
    const parsed = new URL(url);
    return new Redis(decodeURIComponent(parsed.pathname) + parsed.search, {
      ...OWN_CLIENT_OPTIONS,
    }) as unknown as RedisClient;
  }
  return new Redis(url, { ...OWN_CLIENT_OPTIONS }) as unknown as RedisClient;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isClient(value: unknown): value is RedisClient {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Record<string, unknown>;
  return CLIENT_METHODS.every((name) => typeof record[name] === 'function');
}

/** Quit a client this package created; cut it if it cannot say goodbye in time. */
async function shutdown(client: RedisClient): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      client.quit(),
      new Promise((resolve) => {
        timer = setTimeout(resolve, QUIT_TIMEOUT);
      }),
    ]);
  } catch {
    // The server is gone already: nothing to say goodbye to.
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}

function ignore(): void {}

/**
 * A store in Redis, shared by every instance that uses the same server and namespace.
 * Pass your own client (`{ client }`, any ioredis-compatible client; you close it) or a
 * URL (`{ url }`: a `redis://`, `rediss://` or `unix:` URL; the store makes the client,
 * which queues no command once it has lost its connection, and closes it in `close()`).
 * Entries expire in Redis (`PX ttl`); a write lands only over nothing or over a value
 * whose load started earlier, compared and set in one script; the lock is `SET … NX PX`.
 * An ioredis `Cluster` works as a client: an entry and its lock share a hash slot.
 *
 * @example
 * ```ts
 * import { createSharedCache } from 'context-cache';
 * import { redisStore } from 'context-cache/redis';
 *
 * const users = createSharedCache<User | null>({
 *   store: redisStore({ url: process.env.REDIS_URL! }),
 *   ttl: 60_000,
 *   namespace: 'app',
 * });
 * // or over a Redis Cluster: redisStore({ client: new Cluster([{ host, port }]) })
 * ```
 */
export function redisStore(options: RedisStoreOptions): RedisStore {
  if (typeof options === 'object' && options !== null) {
    checkOptionNames('redisStore', options, ['client', 'url']);
  }
  const given = (options as { client?: unknown } | undefined)?.client;
  const url = (options as { url?: unknown } | undefined)?.url;
  let client: RedisClient;
  let owned = false;
  if (given !== undefined) {
    if (!isClient(given)) {
      throw new TypeError(
        'redisStore(): options.client must be an ioredis client (or one with the same get, set and del), ' +
          `such as new Redis(process.env.REDIS_URL), got ${describe(given)}.`,
      );
    }
    client = given;
  } else if (typeof url === 'string' && URL_SCHEMES.test(url)) {
    client = clientFor(url);
    owned = true;
    queueUntilFirstReady(client);
  } else if (typeof url === 'string') {
    throw new TypeError(
      "redisStore(): options.url must be a redis://, rediss:// or unix: URL, such as 'redis://127.0.0.1:6379' " +
        `or 'unix:///run/redis.sock', got ${describe(url)}.`,
    );
  } else {
    throw new TypeError(
      "redisStore(): pass { client } (an ioredis client) or { url } (such as 'redis://127.0.0.1:6379'), " +
        `got ${describe(options)}${url !== undefined ? ` with url ${describe(url)}` : ''}.`,
    );
  }
  const read =
    typeof client.getBuffer === 'function'
      ? (key: string) => client.getBuffer!(key)
      : (key: string) => client.get(key);

  // What the client says of its connection: how often it became ready, and the error
  // that cut it (its own cause, such as ECONNREFUSED) while it is away.
  let readies = client.status === 'ready' ? 1 : 0;
  let lastError: Error | undefined;
  const onReady = (): void => {
    readies++;
    lastError = undefined;
  };
  const onClientError = (err: Error): void => {
    lastError = err;
    // A client you gave us keeps ioredis's own report when nothing else listens.
    if (!owned && client.listenerCount?.('error') === 1) {
      console.error('[ioredis] Unhandled error event:', err.stack ?? err);
    }
  };
  client.on('ready', onReady);
  client.on('error', onClientError as (...args: unknown[]) => void);

  async function setIfNewer(key: string, value: StoreValue, px: number, version: number) {
    const args = [key, value, px, String(version)];
    if (typeof client.evalsha === 'function') {
      try {
        return (await client.evalsha(SET_IF_NEWER_SHA, 1, ...args)) === 1;
      } catch (err) {
        // The server has not seen the script (first use, or a restart): send it whole.
        if (!errorMessage(err).startsWith('NOSCRIPT')) throw err;
      }
    }
    return (await client.eval!(SET_IF_NEWER_SCRIPT, 1, ...args)) === 1;
  }

  // One MGET, and one pipeline of compare-and-set scripts: on a single Redis server. On a
  // Cluster each entry has a slot of its own, so entries are read and written one by one.
  const batchable =
    client.isCluster !== true &&
    (typeof client.mgetBuffer === 'function' || typeof client.mget === 'function') &&
    typeof client.pipeline === 'function' &&
    typeof client.eval === 'function';

  async function getMany(keys: readonly string[]): Promise<(StoreValue | undefined)[]> {
    const values =
      typeof client.mgetBuffer === 'function'
        ? await client.mgetBuffer(...keys)
        : await client.mget!(...keys);
    return values.map((value) => value ?? undefined);
  }

  /** Each entry by the compare-and-set script, all in one pipeline; resolves which landed. */
  async function setMany(entries: readonly StoreEntry[]): Promise<boolean[]> {
    const argsOf = (e: StoreEntry) => [
      e.key,
      e.value,
      Math.max(1, Math.ceil(e.ttl)),
      String(e.version),
    ];
    const send = async (byDigest: boolean, list: readonly StoreEntry[]) => {
      const pipeline = client.pipeline!();
      for (const e of list) {
        if (byDigest) pipeline.evalsha(SET_IF_NEWER_SHA, 1, ...argsOf(e));
        else pipeline.eval(SET_IF_NEWER_SCRIPT, 1, ...argsOf(e));
      }
      const replies = await pipeline.exec();
      if (replies === null) throw new Error('The Redis pipeline was discarded.');
      return replies;
    };
    const replies = await send(true, entries);
    // A server that has not seen the script yet: send those again with the script itself.
    const unknown = replies
      .map((reply, i) =>
        reply[0] !== null && errorMessage(reply[0]).startsWith('NOSCRIPT') ? i : -1,
      )
      .filter((i) => i >= 0);
    if (unknown.length > 0) {
      const again = await send(
        false,
        unknown.map((i) => entries[i] as StoreEntry),
      );
      unknown.forEach((i, j) => {
        replies[i] = again[j] as [Error | null, unknown];
      });
    }
    return replies.map(([err, value]) => {
      if (err !== null) throw err;
      return value === 1;
    });
  }

  let closing: Promise<void> | undefined;
  return {
    client,
    async get(key) {
      return (await read(key)) ?? undefined;
    },
    async set(key, value, ttl, version) {
      const px = Math.max(1, Math.ceil(ttl));
      if (version !== undefined && typeof client.eval === 'function') {
        return setIfNewer(key, value, px, version);
      }
      await client.set(key, value, 'PX', px);
      return true;
    },
    connection() {
      const status = client.status;
      if (status === undefined || status === 'ready' || readies === 0) return readies;
      return lastError ?? new Error(`The Redis client is not connected (status ${status}).`);
    },
    ...(batchable ? { getMany, setMany } : {}),
    async delete(key) {
      await client.del(key);
    },
    async getWithTtl(key) {
      if (typeof client.pttl !== 'function') return [(await read(key)) ?? undefined, undefined];
      // Sent back to back on one connection: no extra round trip.
      const [value, ttl] = await Promise.all([read(key), client.pttl(key)]);
      return [value ?? undefined, ttl > 0 ? ttl : undefined];
    },
    async lock(key, token, ttl) {
      return (await client.set(key, token, 'PX', Math.max(1, Math.ceil(ttl)), 'NX')) === 'OK';
    },
    async unlock(key, token) {
      if (typeof client.eval === 'function') {
        await client.eval(UNLOCK_SCRIPT, 1, key, token);
      } else if ((await client.get(key)) === token) {
        await client.del(key);
      }
    },
    close() {
      closing ??= (async () => {
        if (owned) {
          await shutdown(client);
          return;
        }
        client.removeListener?.('ready', onReady);
        client.removeListener?.('error', onClientError as () => void);
      })();
      return closing;
    },
  };
}

/**
 * Whether invalidations should go through sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`):
 * on a Redis Cluster whose servers have it (Redis 7+). A sharded message travels only
 * within the shard that owns the channel's slot, where a classic one is copied to
 * every node of the cluster.
 */
async function hasShardedPubSub(client: RedisClient, subscriber: RedisClient): Promise<boolean> {
  if (
    client.isCluster !== true ||
    typeof client.call !== 'function' ||
    typeof client.spublish !== 'function' ||
    typeof subscriber.ssubscribe !== 'function'
  ) {
    return false;
  }
  // `[null]` from a server without the command, its description from one with it.
  const info = await client.call('COMMAND', 'INFO', 'SPUBLISH');
  return Array.isArray(info) && Array.isArray(info[0]);
}

function isMemoryStore(value: unknown): value is MemoryStore {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Record<string, unknown>;
  return ['peek', 'get', 'set', 'delete', 'clear'].every(
    (name) => typeof record[name] === 'function',
  );
}

/**
 * An in-process L1 (`memoryStore`) in front of Redis (`redisStore`). Reads try L1, then
 * L2, and fill L1 from L2 for L1's own `ttl`, which bounds how stale an instance can be
 * even if an invalidation is lost. A write lands in Redis only over an older value
 * (see `redisStore`), then fills this instance's L1 (the writer keeps its value) and
 * publishes the key with this instance's id on `channel`; every other instance listens
 * through a duplicate of its L2 client and drops the key from its L1, and clears its
 * whole L1 after that subscriber reconnects (messages sent while it was away are lost).
 * Outages are those of L2: an L1 hit is no sign that Redis is back. Over a Redis
 * Cluster whose servers have sharded pub/sub (Redis 7), messages go by `SPUBLISH` to
 * subscribers made with `SSUBSCRIBE` (only the shard that owns the channel carries them).
 *
 * @example
 * ```ts
 * import { createSharedCache, memoryStore } from 'context-cache';
 * import { redisStore, tieredStore } from 'context-cache/redis';
 *
 * const settings = createSharedCache<string | null>({
 *   store: tieredStore({
 *     l1: memoryStore({ max: 10_000, ttl: 5_000 }),
 *     l2: redisStore({ url: process.env.REDIS_URL! }),
 *   }),
 *   ttl: 60_000,
 *   namespace: 'app',
 * });
 * ```
 */
export function tieredStore(options: TieredStoreOptions): TieredStore {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      'tieredStore(): options must be an object such as { l1: memoryStore({ max: 10_000, ttl: 5_000 }), l2: redisStore({ url }) }, ' +
        `got ${describe(options)}.`,
    );
  }
  checkOptionNames('tieredStore', options, ['l1', 'l2', 'channel']);
  const { l1, l2 } = options;
  const channel = options.channel ?? DEFAULT_CHANNEL;
  if (!isMemoryStore(l1) || !(typeof l1.ttl === 'number' && l1.ttl > 0)) {
    throw new TypeError(
      'tieredStore(): options.l1 must be memoryStore({ max, ttl }) with a ttl, which bounds how stale an instance can be, ' +
        `such as memoryStore({ max: 10_000, ttl: 5_000 }), got ${isMemoryStore(l1) ? 'a memoryStore without ttl' : describe(l1)}.`,
    );
  }
  const client = (l2 as Partial<RedisStore> | undefined)?.client;
  if (
    typeof l2 !== 'object' ||
    l2 === null ||
    typeof l2.getWithTtl !== 'function' ||
    !isClient(client) ||
    typeof client.duplicate !== 'function' ||
    typeof client.publish !== 'function'
  ) {
    throw new TypeError(
      'tieredStore(): options.l2 must be redisStore({ client }) or redisStore({ url }) over a client with duplicate() and publish(), ' +
        `got ${describe(l2)}.`,
    );
  }
  if (typeof channel !== 'string' || channel === '') {
    throw new TypeError(
      `tieredStore(): options.channel must be a non-empty string such as 'app:invalidate', got ${describe(channel)}.`,
    );
  }
  const l1ttl = l1.ttl;

  // Bumped by every invalidation received (and every reconnect): an L2 read that
  // started before one must not fill L1 with what may be the old value.
  let generation = 0;
  let connectedOnce = false;
  const instanceId = randomUUID();
  const message = (key: string): string => `${instanceId} ${key}`;
  // A client made here: it may wait for its first connection (even when L2's client
  // no longer queues), never after. A Cluster's copy gets a subscriber per shard, so a
  // sharded subscription is made on the node that owns the channel's slot.
  const subscriber =
    client.isCluster === true
      ? client.duplicate([], { enableOfflineQueue: true, shardedSubscribers: true })
      : client.duplicate({ enableOfflineQueue: true, ...OWN_CLIENT_OPTIONS });
  queueUntilFirstReady(subscriber);
  subscriber.on('error', ignore);

  // Decided once, by asking the server (again after a failed attempt): every instance on
  // one cluster asks the same servers, so publishers and subscribers agree.
  let shardedMode: Promise<boolean> | undefined;
  const sharded = (): Promise<boolean> => {
    shardedMode ??= hasShardedPubSub(client, subscriber).catch((err: unknown) => {
      shardedMode = undefined;
      throw err;
    });
    return shardedMode;
  };
  const listen = async (): Promise<unknown> =>
    (await sharded()) ? subscriber.ssubscribe!(channel) : subscriber.subscribe(channel);
  const publish = async (key: string): Promise<unknown> =>
    (await sharded())
      ? client.spublish!(channel, message(key))
      : client.publish(channel, message(key));

  const invalidated: ((key: string) => void)[] = [];
  const onMessage = ((from: string, text: string) => {
    if (from !== channel) return;
    let key = text;
    if (text.length > ID_LENGTH && text.charCodeAt(ID_LENGTH) === 32) {
      // Our own write: L1 already holds what we wrote.
      if (text.startsWith(instanceId)) return;
      key = text.slice(ID_LENGTH + 1);
    }
    // (A message without an id comes from an older version of this package: the key.)
    generation++;
    void l1.delete(key);
    for (const listener of invalidated) listener(key);
  }) as (...args: unknown[]) => void;
  subscriber.on('message', onMessage);
  subscriber.on('smessage', onMessage);
  const forgetAll = (): void => {
    generation++;
    l1.clear();
  };
  subscriber.on('ready', () => {
    if (connectedOnce) {
      forgetAll();
      // Subscribe again and clear once more when Redis confirms: invalidations sent
      // between the reconnection and the confirmation were not heard either.
      listen().then(forgetAll, ignore);
    }
    connectedOnce = true;
  });
  subscriber.on('close', () => {
    generation++;
  });
  // A Cluster's copy replaces the subscriber of a shard whose connection failed (or whose
  // slots moved) and subscribes it again by itself: messages sent in between were lost,
  // so L1 is cleared once its subscribers are back.
  subscriber.on('-subscriber', () => {
    generation++;
  });
  subscriber.on('subscribersReady', () => {
    if (connectedOnce) forgetAll();
  });
  /**
   * After a delete (or its tombstone) landed in Redis: drop the key from L1 once more. A
   * write or read of this instance sent before it may have filled L1 with the old value
   * while the delete was on its way (its reply came first, on the same connection).
   */
  const dropLanded = async (key: string): Promise<void> => {
    generation++;
    await l1.delete(key);
  };
  const subscribed = listen().then(ignore);
  subscribed.catch(ignore);
  let closing: Promise<void> | undefined;

  return {
    peek: (key) => l1.peek(key),
    async get(key) {
      const local = l1.peek(key);
      if (local !== undefined) return local;
      const seen = generation;
      const [value, left] = await l2.getWithTtl(key);
      // A delete's tombstone stays in Redis only (it is there to refuse older writes).
      if (value !== undefined && seen === generation && !isTombstone(value)) {
        // By the version rule too: never over a newer value this instance just wrote.
        await l1.set(key, value, Math.min(l1ttl, left ?? l1ttl), versionOf(value));
      }
      return value;
    },
    async getMany(keys) {
      const values: (StoreValue | undefined)[] = keys.map((key) => l1.peek(key));
      const missed: number[] = [];
      for (let i = 0; i < values.length; i++) if (values[i] === undefined) missed.push(i);
      if (missed.length === 0) return values;
      const seen = generation;
      const missedKeys = missed.map((i) => keys[i] as string);
      // With each value its remaining ttl in Redis, asked back to back with the MGET (one
      // round trip), so L1 never keeps a value past it, as `get` does.
      const pttl = client.pttl?.bind(client);
      const [found, lefts] =
        l2.getMany !== undefined
          ? await Promise.all([
              l2.getMany(missedKeys),
              pttl === undefined ? [] : Promise.all(missedKeys.map((key) => pttl(key))),
            ])
          : transpose(await Promise.all(missedKeys.map((key) => l2.getWithTtl(key))));
      for (let m = 0; m < missed.length; m++) {
        const value = found[m];
        const i = missed[m] as number;
        values[i] = value;
        if (value !== undefined && seen === generation && !isTombstone(value)) {
          const left = lefts[m];
          const life = left !== undefined && left > 0 ? Math.min(l1ttl, left) : l1ttl;
          await l1.set(keys[i] as string, value, life, versionOf(value));
        }
      }
      return values;
    },
    async setMany(entries) {
      const seen = ++generation;
      for (const { key } of entries) await l1.delete(key);
      const landed =
        l2.setMany !== undefined
          ? ((await l2.setMany(entries)) as boolean[])
          : await Promise.all(entries.map((e) => l2.set(e.key, e.value, e.ttl, e.version)));
      // As in `set`: nothing heard meanwhile, or L1 is left for the next read to fill.
      const quiet = seen === generation;
      const published: Promise<unknown>[] = [];
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i] as StoreEntry;
        // A newer value is in Redis: its writer has told everyone already.
        if (landed[i] === false) continue;
        if (isTombstone(e.value)) await dropLanded(e.key);
        else if (quiet) await l1.set(e.key, e.value, Math.min(l1ttl, e.ttl), e.version);
        published.push(publish(e.key));
      }
      await Promise.all(published);
      return landed;
    },
    async set(key, value, ttl, version) {
      const seen = ++generation;
      await l1.delete(key);
      const landed = await l2.set(key, value, ttl, version);
      // A newer value is in Redis: its writer has told everyone already.
      if (landed === false) return false;
      // The writer keeps its value (write-through); others drop the key on the message,
      // which this instance ignores. A delete's tombstone stays in Redis only. If anything
      // was heard while the write was on its way (another instance's newer write of this
      // key, whose message came before this reply), L1 is left for the next read to fill.
      if (isTombstone(value)) await dropLanded(key);
      else if (seen === generation) await l1.set(key, value, Math.min(l1ttl, ttl), version);
      await publish(key);
      return true;
    },
    async delete(key) {
      generation++;
      await l1.delete(key);
      await l2.delete(key);
      await dropLanded(key);
      await publish(key);
    },
    connection: () => l2.connection(),
    instanceId,
    lock: (key, token, ttl) => l2.lock(key, token, ttl),
    unlock: (key, token) => l2.unlock(key, token),
    ready: () => subscribed,
    onInvalidate(listener) {
      invalidated.push(listener);
      return () => {
        const at = invalidated.indexOf(listener);
        if (at >= 0) invalidated.splice(at, 1);
      };
    },
    close() {
      closing ??= (async () => {
        await shutdown(subscriber);
        await l1.close();
        await l2.close();
      })();
      return closing;
    },
  };
}

/** `[value, ttl]` pairs as a list of values and a list of ttls. */
function transpose(
  pairs: readonly [StoreValue | undefined, number | undefined][],
): [(StoreValue | undefined)[], (number | undefined)[]] {
  return [pairs.map((pair) => pair[0]), pairs.map((pair) => pair[1])];
}
