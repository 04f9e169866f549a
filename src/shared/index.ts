/**
 * The shared tier: a process-wide or cross-process cache behind the request cache.
 *
 * `getOrLoad` never makes a caller wait on, or fail because of, the store: reads are
 * cut at `readTimeout` (a slow store is a miss), write-backs run detached with their
 * own `writeTimeout`, and a store fault is reported once per outage (`onError`, then
 * `onRecover`) instead of being thrown. During an outage the store is not waited on: a
 * client that reports itself disconnected is not asked at all, and after a failure the
 * store is skipped for a backoff window (1 s doubling to 30 s) but for one probe. Loads
 * of one key are shared by every request of this process (singleflight); a request that
 * goes away leaves the load to the others, and the load's signal aborts only when nobody
 * waits for it any more. Every write carries the time its load started, and the store
 * keeps the value of the load that started last.
 */

import { detach } from '../background.js';
import { now, RESOLUTION } from '../clock.js';
import { type CacheKey, checkGroup, checkLoader, encodeKey } from '../keys.js';
import { afterIo, utf8Length } from '../runtime.js';
import { currentSignal, outsideScope, runInScope, Scope } from '../scope.js';
import { checkOptionNames, describe, warn } from '../warnings.js';
import {
  defaultSerializer,
  NOT_SERIALIZABLE,
  NotSerializableError,
  type Serializer,
} from './serializer.js';
import {
  BATCH_FAILED,
  GROUP_VIEW,
  isBatchFailure,
  type SharedCache,
  type SharedGroupView,
  type SharedLoaderContext,
  type Store,
  type StoreValue,
} from './types.js';
import { frame, isTombstone, nextVersion, payloadOf, tombstone } from './version.js';

export type { Serializer } from './serializer.js';

function unwrap(value: unknown): unknown {
  if (isBatchFailure(value)) throw value[BATCH_FAILED];
  return value;
}

/** What `onError` learns about the failed operation that started an outage. */
export interface SharedErrorInfo {
  /** The store operation: `get`, `set`, `delete`, `lock` or `unlock`. */
  op: string;
  /** The full store key (namespace included). */
  key: string;
}

/** The cross-instance lock for cold keys. */
export interface SharedLockOptions {
  /** How long the lock is held at most, in ms (it expires if its holder dies). */
  ttl: number;
  /** How long another instance waits for the holder's value before loading itself, in ms. */
  wait: number;
}

/** Options of `createSharedCache`. */
export interface SharedCacheOptions {
  /** Where values live: `memoryStore()`, `redisStore()`, `tieredStore()` or your own. */
  store: Store;
  /** Default time to live of an entry, in ms. */
  ttl: number;
  /** Prefix of every key, used verbatim and followed by `:`. */
  namespace: string;
  /**
   * How values are encoded. It receives and returns the value envelope (an object that
   * holds the value). Default: MessagePack, which round-trips plain objects and arrays,
   * `Date`, `Map`, `Set`, `BigInt`, `undefined`, typed arrays and `Buffer`, and refuses
   * (throws for) anything else, such as a class instance.
   */
  serializer?: Serializer;
  /** A store read slower than this many ms is a miss (and a fault). Default 250. */
  readTimeout?: number;
  /** Limit of a write, a delete and a detached write-back, in ms. Default 1000. */
  writeTimeout?: number;
  /** Encoded values larger than this many bytes are not stored. Default 1 MiB. */
  maxValueBytes?: number;
  /** Let one instance load a cold key while the others wait for its value. Off by default. */
  lock?: SharedLockOptions;
  /**
   * Called once when an outage starts (the first failed or slow store operation).
   * Default: a `CONTEXT_CACHE_STORE_DOWN` process warning.
   */
  onError?: (err: Error, info: SharedErrorInfo) => void;
  /** Called once when an outage ends (the next store operation that succeeds). */
  onRecover?: () => void;
}

/** Default `readTimeout`: a store slower than this is treated as a miss. */
export const DEFAULT_READ_TIMEOUT = 250;
/** Default `writeTimeout` of writes, deletes and detached write-backs. */
export const DEFAULT_WRITE_TIMEOUT = 1000;
/**
 * The oldest a load may be when its value is written back, in ms, unless the cache's
 * `ttl` is longer: a delete's tombstone lives this long (plus `writeTimeout`), so a
 * write-back older than that could land after the tombstone of a delete it missed.
 * Five minutes, as a request cache's lifetime: a load that runs longer is not one.
 */
export const MAX_LOAD_AGE = 5 * 60 * 1000;
/** Default `maxValueBytes`: 1 MiB, far above any setting or user row. */
export const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;

/** What replaces a value that does not decode: a tombstone every write is newer than. */
const OLDEST_TOMBSTONE = tombstone(1);

/** Code of the default warning for the start of a store outage. */
export const STORE_DOWN = 'CONTEXT_CACHE_STORE_DOWN';
/** Code of the warning, once per cache, for a loaded value that could not be stored. */
export const NOT_STORED = 'CONTEXT_CACHE_NOT_STORED';

/** First backoff window of an outage, in ms: store operations are skipped but one probe. */
export const FIRST_BACKOFF = 1000;
/** The window doubles after each failed probe up to this, in ms. */
export const MAX_BACKOFF = 30_000;

/**
 * The error of a store operation that was not attempted: the store's client reports
 * itself disconnected, or an outage's backoff window is open. `cause` is the client's
 * own error (such as `ECONNREFUSED`) or the failure that started the outage.
 */
class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  readonly code = 'CONTEXT_CACHE_STORE_UNAVAILABLE';
}

/** The error of a store operation cut at its time limit. */
class StoreTimeoutError extends Error {
  override readonly name = 'StoreTimeoutError';
  readonly code = 'CONTEXT_CACHE_STORE_TIMEOUT';
}

/** The serializer could not encode a value (the default one refuses what would not round-trip). */
class SerializeError extends TypeError {
  override readonly name = 'TypeError';
  readonly code = NOT_SERIALIZABLE;
}

/** The error a shared load's signal aborts with when every caller waiting for it has gone. */
class AbandonedError extends Error {
  override readonly name = 'AbortError';
  readonly code = 'CONTEXT_CACHE_LOAD_ABANDONED';
}

/** Marks an envelope, so a foreign or damaged value never passes for one. */
const MARK = 'cc';

/** `undefined` gets an envelope without `v`, so it survives serializers that drop it. */
function envelope(value: unknown): Record<string, unknown> {
  return value === undefined ? { [MARK]: 1 } : { [MARK]: 1, v: value };
}

const MISS: unique symbol = Symbol('miss');

function byteLength(value: StoreValue): number {
  return typeof value === 'string' ? utf8Length(value) : value.byteLength;
}

function ignore(): void {}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

const NEVER_ABORTED = new AbortController().signal;

interface Flight<V> {
  readonly key: string;
  /** The `contextCached` group of the key, if any: warnings are once per group. */
  readonly group: string | undefined;
  /** When the load started: the version its value is stored with. */
  readonly version: number;
  readonly controller: AbortController;
  promise: Promise<V>;
  waiters: number;
  settled: boolean;
  /** A `set` or `delete` of the key came after the load started: do not write it back. */
  superseded: boolean;
  /** The write-back of the loaded value, while it runs. */
  writing: Promise<unknown> | undefined;
  /**
   * For the keys of one batch load, which share `controller`: how many of them still
   * have a caller. The load is told to stop only when none has.
   */
  batch?: { open: number };
}

function positive(
  options: Record<string, unknown>,
  name: string,
  example: string,
  zero = false,
): void {
  const value = options[name];
  if (value === undefined) return;
  if (typeof value === 'number' && (zero ? value >= 0 : value > 0) && Number.isFinite(value)) {
    return;
  }
  throw new TypeError(
    `createSharedCache(): options.${name} must be a ${zero ? 'non-negative' : 'positive'} ` +
      `number of ${name === 'maxValueBytes' ? 'bytes' : 'milliseconds'}, such as ${example}, ` +
      `got ${describe(value)}.`,
  );
}

function hasMethods(value: unknown, names: readonly string[]): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Record<string, unknown>;
  return names.every((name) => typeof record[name] === 'function');
}

const SHARED_OPTIONS = [
  'store',
  'ttl',
  'namespace',
  'serializer',
  'readTimeout',
  'writeTimeout',
  'maxValueBytes',
  'lock',
  'onError',
  'onRecover',
] as const;
const LOCK_OPTIONS = ['ttl', 'wait'] as const;
const SET_OPTIONS = ['ttl'] as const;

function checkOptions(options: unknown): asserts options is SharedCacheOptions {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      "createSharedCache(): options must be an object such as { store: memoryStore({ max: 10_000 }), ttl: 60_000, namespace: 'app' }, " +
        `got ${describe(options)}.`,
    );
  }
  checkOptionNames('createSharedCache', options, SHARED_OPTIONS);
  const o = options as Record<string, unknown>;
  if (!hasMethods(o.store, ['get', 'set', 'delete', 'close'])) {
    throw new TypeError(
      'createSharedCache(): options.store must be a store with get, set, delete and close, ' +
        'such as memoryStore({ max: 10_000 }) or redisStore({ url }), ' +
        `got ${describe(o.store)}.`,
    );
  }
  if (o.ttl === undefined) {
    throw new TypeError(
      'createSharedCache(): options.ttl is required: pass the default time to live of an entry in milliseconds, such as 60_000.',
    );
  }
  positive(o, 'ttl', '60_000');
  if (typeof o.namespace !== 'string' || o.namespace === '') {
    throw new TypeError(
      "createSharedCache(): options.namespace must be a non-empty string that prefixes every key, such as 'app', " +
        `got ${describe(o.namespace)}.`,
    );
  }
  if (o.serializer !== undefined && !hasMethods(o.serializer, ['encode', 'decode'])) {
    throw new TypeError(
      'createSharedCache(): options.serializer must be an object with encode(value) and decode(raw), ' +
        `such as { encode: JSON.stringify, decode: (raw) => JSON.parse(String(raw)) }, got ${describe(o.serializer)}.`,
    );
  }
  positive(o, 'readTimeout', '250');
  positive(o, 'writeTimeout', '1000');
  positive(o, 'maxValueBytes', '1_048_576');
  if (o.lock !== undefined) {
    const lock = o.lock as Record<string, unknown>;
    const valid =
      typeof lock === 'object' &&
      lock !== null &&
      typeof lock.ttl === 'number' &&
      lock.ttl > 0 &&
      Number.isFinite(lock.ttl) &&
      typeof lock.wait === 'number' &&
      lock.wait >= 0 &&
      Number.isFinite(lock.wait);
    if (!valid) {
      throw new TypeError(
        'createSharedCache(): options.lock must be { ttl, wait } in milliseconds, such as { ttl: 5000, wait: 2000 }, ' +
          `got ${describe(o.lock)}.`,
      );
    }
    checkOptionNames('createSharedCache', lock, LOCK_OPTIONS, 'options.lock');
    if (!hasMethods(o.store, ['lock', 'unlock'])) {
      throw new TypeError(
        'createSharedCache(): options.lock needs a store with lock() and unlock(), such as redisStore() or tieredStore(); ' +
          'the given store has none.',
      );
    }
  }
  for (const name of ['onError', 'onRecover']) {
    if (o[name] !== undefined && typeof o[name] !== 'function') {
      throw new TypeError(
        `createSharedCache(): options.${name} must be a function, got ${describe(o[name])}.`,
      );
    }
  }
}

function checkSetOptions(fn: string, options: unknown): number | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `${fn}(): options must be an object such as { ttl: 60_000 }, got ${describe(options)}.`,
    );
  }
  checkOptionNames(fn, options, SET_OPTIONS);
  const { ttl } = options as Record<string, unknown>;
  if (ttl === undefined) return undefined;
  if (typeof ttl === 'number' && ttl > 0 && Number.isFinite(ttl)) return ttl;
  throw new TypeError(
    `${fn}(): options.ttl must be a positive number of milliseconds, such as 60_000, got ${describe(ttl)}.`,
  );
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return outsideScope(
    () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(done, ms);
        function done(): void {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          resolve();
        }
        signal.addEventListener('abort', done);
      }),
  );
}

/**
 * A shared cache over `store`: the tier behind the request cache that outlives a
 * request (in this process with `memoryStore()`, across instances with `redisStore()`
 * or `tieredStore()`). Store faults never fail a caller: reads turn into misses, loads
 * still run, and `onError` hears of each outage once.
 *
 * @example
 * ```ts
 * import { contextCached, createSharedCache, memoryStore } from 'context-cache';
 *
 * const settings = createSharedCache<string | null>({
 *   store: memoryStore({ max: 10_000 }),
 *   ttl: 60_000,
 *   namespace: 'app',
 * });
 * // request tier, then the shared tier, then the database
 * export const getSetting = contextCached('setting', (name: string) => db.findSetting(name), {
 *   shared: settings,
 * });
 * ```
 */
export function createSharedCache<V>(options: SharedCacheOptions): SharedCache<V> {
  checkOptions(options);
  const store = options.store;
  const prefix = `${options.namespace}:`;
  const defaultTtl = options.ttl;
  const serializer = options.serializer ?? defaultSerializer;
  const readTimeout = options.readTimeout ?? DEFAULT_READ_TIMEOUT;
  const writeTimeout = options.writeTimeout ?? DEFAULT_WRITE_TIMEOUT;
  const maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
  /** How old a load may be at its write-back (see `MAX_LOAD_AGE`), in ms. */
  const maxLoadAge = Math.max(defaultTtl, MAX_LOAD_AGE);
  /**
   * How long a delete's tombstone lives: a write-back issued in time (by a clock at most
   * `RESOLUTION` stale) lands before it ends.
   */
  const tombstoneTtl = maxLoadAge + writeTimeout + RESOLUTION;
  const lock = options.lock;
  const onError = options.onError;
  const onRecover = options.onRecover;

  const flights = new Map<string, Flight<V>>();
  /** Loads every caller left, still running or writing back (see `orphan`). */
  const orphans = new Map<string, Set<Flight<V>>>();
  const pending = new Set<Promise<unknown>>();
  const views = new Map<string, SharedGroupView<V>>();
  let down = false;
  let opCount = 0;
  /** Operations numbered up to this one started before the last recovery. */
  let recoveredAt = 0;
  // The circuit breaker: during an outage, operations are skipped until `windowEnd`,
  // then one probe is sent; a failed probe doubles the window (up to MAX_BACKOFF).
  let backoff = FIRST_BACKOFF;
  let windowEnd = 0;
  let probing = false;
  /** What failed first in this outage: the cause of the operations skipped meanwhile. */
  let outageCause: Error | undefined;
  /** The store's connection count when last seen connected: a larger one is a reconnection. */
  let connections = 0;
  let warnedNotStored = false;
  /** Groups (`''` for keys outside any group) already warned of a value that cannot be encoded. */
  const warnedGroups = new Set<string>();
  let closing: Promise<void> | undefined;
  /**
   * Set when `close()` closes the store: a load still running then answers its callers
   * but is not written back, and nothing more is sent to the store.
   */
  let storeClosed = false;

  // --- outages -------------------------------------------------------------------

  function failed(err: Error, op: string, key: string, seq: number, probe = false): void {
    // An operation cut short by `close()` closing the store is not an outage.
    if (storeClosed) return;
    if (probe) {
      probing = false;
      if (down) {
        backoff = Math.min(backoff * 2, MAX_BACKOFF);
        windowEnd = now() + backoff;
        return;
      }
    }
    // An operation that started before the last recovery belongs to the outage that
    // already ended: its late failure does not open a new one.
    if (down || seq <= recoveredAt) return;
    down = true;
    outageCause = err;
    backoff = FIRST_BACKOFF;
    windowEnd = now() + backoff;
    try {
      if (onError !== undefined) onError(err, { op, key });
      else {
        warn(
          `The shared store failed (${op} "${key}": ${err.message}); the cache serves from its loaders until the store recovers.`,
          STORE_DOWN,
          createSharedCache,
        );
      }
    } catch (thrown) {
      console.error('context-cache: onError threw', thrown);
    }
  }

  function succeeded(probe = false): void {
    if (probe) probing = false;
    if (!down) return;
    down = false;
    outageCause = undefined;
    recoveredAt = opCount;
    try {
      onRecover?.();
    } catch (thrown) {
      console.error('context-cache: onRecover threw', thrown);
    }
  }

  /**
   * Run one store operation, cut at `limit` ms, and account for the outage. Runs
   * outside the request scope: a store stuck past the limit holds no request's cache.
   */
  function op<T>(name: string, key: string, limit: number, run: () => Promise<T>): Promise<T> {
    if (storeClosed) return Promise.reject(closedError(name));
    const seq = ++opCount;
    // A client that says it is not connected is not waited on (nor its offline queue
    // fed): the operation fails at once with the client's own cause.
    let health: number | Error | undefined;
    try {
      health = store.connection?.();
    } catch (err) {
      health = err instanceof Error ? err : new Error(String(err));
    }
    if (health instanceof Error) {
      const err = new StoreUnavailableError(
        `The shared store's client is not connected (${health.message}); ${name} "${key}" was not sent.`,
        { cause: health },
      );
      failed(err, name, key, seq);
      return Promise.reject(err);
    }
    let probe = false;
    if (down) {
      const reconnected = health !== undefined && health > connections;
      if (!reconnected && (probing || now() < windowEnd)) {
        return Promise.reject(
          new StoreUnavailableError(
            `The shared store is down (${outageCause?.message ?? 'unknown cause'}); ${name} "${key}" was not attempted.`,
            { cause: outageCause },
          ),
        );
      }
      // The window is over, or the client is connected again: this operation probes.
      probe = true;
      probing = true;
    }
    if (health !== undefined) connections = health;
    return outsideScope(
      () =>
        new Promise<T>((resolve, reject) => {
          let settled = false;
          const expire = (): void => {
            if (settled) return;
            settled = true;
            const err = new StoreTimeoutError(
              `The shared store did not answer ${name} "${key}" within ${limit} ms.`,
            );
            failed(err, name, key, seq, probe);
            reject(err);
          };
          // Timers run before I/O in each turn of the event loop: after the process was
          // starved of CPU, a reply may be waiting unread when the timer fires. Decide
          // after the I/O phase (setImmediate where the runtime has it), so a busy
          // process does not report a healthy store as down.
          const timer = setTimeout(() => afterIo(expire), limit);
          let result: Promise<T>;
          try {
            result = Promise.resolve(run());
          } catch (err) {
            result = Promise.reject(err);
          }
          result.then(
            (value) => {
              if (settled) return;
              settled = true;
              clearTimeout(timer);
              succeeded(probe);
              resolve(value);
            },
            (err: unknown) => {
              if (settled) return;
              settled = true;
              clearTimeout(timer);
              const error = toError(err);
              failed(error, name, key, seq, probe);
              reject(error);
            },
          );
        }),
    );
  }

  function track(task: Promise<unknown>): void {
    const settled: Promise<unknown> = task.then(
      () => pending.delete(settled),
      () => pending.delete(settled),
    );
    pending.add(settled);
  }

  // --- values --------------------------------------------------------------------

  /** The value in `raw`, or `MISS` when it has no version header or does not decode. */
  function decode(raw: StoreValue): unknown {
    // A value without a header was written before versions (or by someone else).
    const payload = payloadOf(raw);
    if (payload === undefined) return MISS;
    let data: unknown;
    try {
      data = serializer.decode(payload);
    } catch {
      return MISS;
    }
    if (
      typeof data !== 'object' ||
      data === null ||
      (data as Record<string, unknown>)[MARK] !== 1
    ) {
      return MISS;
    }
    return (data as Record<string, unknown>).v;
  }

  /**
   * A value that does not decode is a miss: replace it so it is loaded and stored again.
   * Not by a `DEL`, which could land after a delete's tombstone written since and drop
   * it (an older write-back would then land): by the oldest possible tombstone, through
   * the version rule, which lands over a value without a version header and never over
   * a tombstone or a value written since. A value with a header and a payload that does
   * not decode stays until the next load's write-back, which is newer, replaces it.
   */
  function dropCorrupt(key: string): void {
    track(
      detach(
        () =>
          op('delete', key, writeTimeout, () => store.set(key, OLDEST_TOMBSTONE, tombstoneTtl, 1)),
        {
          timeout: writeTimeout,
          name: 'context-cache drop corrupt value',
        },
      ),
    );
  }

  function peek(key: string): unknown {
    if (store.peek === undefined) return MISS;
    let raw: StoreValue | undefined;
    try {
      raw = store.peek(key);
    } catch {
      return MISS;
    }
    return decodeOrDrop(key, raw);
  }

  /**
   * The value in `raw`, or `MISS` when there is none, it is a delete's tombstone, or it
   * does not decode (then dropped: a tombstone stays, to refuse older write-backs).
   */
  function decodeOrDrop(key: string, raw: StoreValue | undefined): unknown {
    if (raw === undefined) return MISS;
    const value = decode(raw);
    if (value === MISS && !isTombstone(raw)) dropCorrupt(key);
    return value;
  }

  /** The stored value, or `MISS` (also when the store is down or slower than `readTimeout`). */
  async function read(key: string): Promise<unknown> {
    const local = peek(key);
    if (local !== MISS) return local;
    let raw: StoreValue | undefined;
    try {
      raw = await op('get', key, readTimeout, () => store.get(key));
    } catch {
      return MISS;
    }
    return decodeOrDrop(key, raw);
  }

  function notStored(key: string, why: string): void {
    if (warnedNotStored) return;
    warnedNotStored = true;
    warn(
      `A loaded value was not stored in the shared cache ("${key}": ${why}); it was returned all the same. ` +
        'Later values that cannot be stored are not reported.',
      NOT_STORED,
      createSharedCache,
    );
  }

  /** Once per group: a loaded value the serializer refused was returned, not stored. */
  function notSerializable(key: string, group: string | undefined, err: SerializeError): void {
    if (warnedGroups.has(group ?? '')) return;
    warnedGroups.add(group ?? '');
    const which = group === undefined ? 'A loaded value' : `A value loaded for group "${group}"`;
    warn(
      `${which} was not stored in the shared cache ("${key}"): ${err.message}. It was returned ` +
        'all the same, and is loaded again on every miss. Return plain data (objects, arrays, ' +
        'Date, Map, Set, BigInt, typed arrays, Buffer), or pass createSharedCache() a serializer ' +
        `option that handles it. Later values of ${group === undefined ? 'keys outside any group' : 'this group'} are not reported.`,
      NOT_SERIALIZABLE,
      createSharedCache,
    );
  }

  /**
   * Encode for storage, behind the header of `version` (when the value's load started):
   * the stored bytes, or the reason the value cannot be stored.
   */
  function encode(value: unknown, version: number): StoreValue | Error {
    let encoded: StoreValue;
    try {
      encoded = serializer.encode(envelope(value));
    } catch (err) {
      return new SerializeError(
        err instanceof NotSerializableError
          ? // Where it sits in the value, not in the envelope around it (`.v`).
            new NotSerializableError(err.type, err.path.replace(/^\.v/, '')).message
          : serializer === defaultSerializer
            ? toError(err).message
            : `the serializer option's encode() threw: ${toError(err).message}`,
        { cause: err },
      );
    }
    if (typeof encoded !== 'string' && !(encoded instanceof Uint8Array)) {
      return new TypeError(
        `the serializer's encode() must return a string or a Buffer, got ${describe(encoded)}`,
      );
    }
    const size = byteLength(encoded);
    if (size > maxValueBytes) {
      return new RangeError(
        `the encoded value is ${size} bytes, over maxValueBytes (${maxValueBytes}); raise maxValueBytes or cache less`,
      );
    }
    return frame(version, encoded);
  }

  // --- loads ---------------------------------------------------------------------

  function lockKey(key: string): string {
    // The entry's key plus a suffix: the same `{...}` hash tag, so the same Redis Cluster
    // slot. Entry keys end with '}', so no entry is ever named like a lock.
    return `${key}:lock`;
  }

  /**
   * With `lock`: take the key's lock, or wait for the holder's value. Resolves the
   * token when this instance holds the lock, the value when another instance stored it
   * meanwhile, or `undefined` when the wait is over (or the store failed): load anyway.
   */
  async function acquire(
    key: string,
    wait: number,
    ttl: number,
    signal: AbortSignal,
  ): Promise<{ token: string } | { value: unknown } | undefined> {
    const name = lockKey(key);
    const token = crypto.randomUUID();
    const deadline = Date.now() + wait;
    let delay = 5;
    for (;;) {
      let taken: boolean;
      try {
        taken = await op('lock', name, readTimeout, () => store.lock!(name, token, ttl));
      } catch {
        return undefined;
      }
      if (taken) {
        // The holder before us may have stored the value between our read and our lock.
        const value = await read(key);
        if (value === MISS) return { token };
        release(name, token);
        return { value };
      }
      const left = deadline - Date.now();
      if (left <= 0 || signal.aborted) return undefined;
      await sleep(Math.min(delay, left), signal);
      delay = Math.min(delay * 2, 100);
      const value = await read(key);
      if (value !== MISS) return { value };
    }
  }

  function release(name: string, token: string): void {
    track(
      detach(() => op('unlock', name, writeTimeout, () => store.unlock!(name, token)), {
        timeout: writeTimeout,
        name: 'context-cache unlock',
      }),
    );
  }

  /**
   * Whether a load is young enough to write back: a delete made while an older load ran
   * may have left a tombstone that has expired by now, and nothing else would refuse
   * the row that load read before it.
   */
  function fresh(flight: Flight<V>): boolean {
    return now() - flight.version / 1000 < maxLoadAge;
  }

  function writeBack(
    flight: Flight<V>,
    value: V,
    ttl: number,
    lockName?: string,
    token?: string,
  ): Promise<unknown> | undefined {
    const encoded = encode(value, flight.version);
    if (encoded instanceof SerializeError) {
      notSerializable(flight.key, flight.group, encoded);
      if (lockName !== undefined && token !== undefined) release(lockName, token);
      return undefined;
    }
    if (encoded instanceof Error) {
      notStored(flight.key, encoded.message);
      if (lockName !== undefined && token !== undefined) release(lockName, token);
      return undefined;
    }
    const task = detach(
      async () => {
        try {
          // A set or delete of this key after the load started wins over the load.
          if (!flight.superseded && fresh(flight)) {
            // The store writes it only over nothing or an older load's value.
            await op('set', flight.key, writeTimeout, () =>
              store.set(flight.key, encoded, ttl, flight.version),
            );
          }
        } finally {
          if (lockName !== undefined && token !== undefined) release(lockName, token);
        }
      },
      { timeout: writeTimeout, name: 'context-cache write-back' },
    );
    track(task);
    return task;
  }

  async function runFlight(
    flight: Flight<V>,
    key: CacheKey,
    loader: (key: never, ctx: SharedLoaderContext) => V | PromiseLike<V>,
    ttl: number,
  ): Promise<V> {
    const found = await read(flight.key);
    if (found !== MISS) return found as V;
    const { signal } = flight.controller;
    let lockName: string | undefined;
    let token: string | undefined;
    if (lock !== undefined) {
      const got = await acquire(flight.key, lock.wait, lock.ttl, signal);
      if (got !== undefined && 'value' in got) return got.value as V;
      if (got !== undefined) {
        lockName = lockKey(flight.key);
        token = got.token;
      }
    }
    let value: V;
    try {
      value = await loader(key as never, { signal });
    } catch (err) {
      if (lockName !== undefined && token !== undefined) release(lockName, token);
      throw err;
    }
    flight.writing = writeBack(flight, value, ttl, lockName, token);
    return value;
  }

  function forget(flight: Flight<V>): void {
    if (flights.get(flight.key) === flight) flights.delete(flight.key);
  }

  function start(
    fullKey: string,
    group: string | undefined,
    key: CacheKey,
    loader: (key: never, ctx: SharedLoaderContext) => V | PromiseLike<V>,
    ttl: number,
  ): Flight<V> {
    const controller = new AbortController();
    const flight: Flight<V> = {
      key: fullKey,
      group,
      version: nextVersion(),
      controller,
      promise: undefined as never,
      waiters: 0,
      settled: false,
      superseded: false,
      writing: undefined,
    };
    flights.set(fullKey, flight);
    const done = (): void => forget(flight);
    // The load belongs to every request that joins it, so it runs in a scope of its own:
    // no request cache (it must not keep the first request's cache alive), and the
    // shared load's signal as `currentSignal()`.
    flight.promise = runInScope(new Scope(undefined, controller.signal), () =>
      runFlight(flight, key, loader, ttl),
    );
    flight.promise.then(
      () => {
        flight.settled = true;
        // Keep a loaded value's flight while it is written back, so callers in between
        // share it rather than miss in the store and load again.
        if (flight.writing === undefined) forget(flight);
        else flight.writing.then(done, done);
      },
      () => {
        flight.settled = true;
        forget(flight);
      },
    );
    return flight;
  }

  function leave(flight: Flight<V>, reason: unknown): void {
    flight.waiters--;
    if (flight.waiters > 0 || flight.settled) return;
    // Every caller has gone: the next call starts afresh, and the load is told to stop.
    // If it finishes all the same, its value is still written back.
    forget(flight);
    orphan(flight);
    // A batch load stops only when every one of its keys has lost its callers.
    if (flight.batch !== undefined && --flight.batch.open > 0) return;
    abandon(flight.controller, reason);
  }

  function abandon(controller: AbortController, reason: unknown): void {
    controller.abort(
      new AbandonedError('Every caller waiting for this shared load has given up.', {
        cause: reason,
      }),
    );
  }

  function join(flight: Flight<V>, signal: AbortSignal | undefined): Promise<V> {
    if (flight.settled || signal === undefined) {
      // A caller without a signal never gives up: the load is never abandoned under it.
      flight.waiters++;
      return flight.promise;
    }
    flight.waiters++;
    return new Promise<V>((resolve, reject) => {
      function onAbort(): void {
        signal!.removeEventListener('abort', onAbort);
        reject(signal!.reason);
        leave(flight, signal!.reason);
      }
      signal.addEventListener('abort', onAbort);
      flight.promise.then(
        (value) => {
          signal.removeEventListener('abort', onAbort);
          resolve(value);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(err);
        },
      );
    });
  }

  function getOrLoad(
    fullKey: string,
    group: string | undefined,
    key: CacheKey,
    loader: (key: never, ctx: SharedLoaderContext) => V | PromiseLike<V>,
    ttl: number,
  ): Promise<V> {
    const signal = currentSignal();
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (closing !== undefined) {
      // Closed: the store is gone, the loader still answers.
      try {
        return Promise.resolve(loader(key as never, { signal: signal ?? NEVER_ABORTED }));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const local = peek(fullKey);
    if (local !== MISS) return Promise.resolve(local as V);
    return join(flights.get(fullKey) ?? start(fullKey, group, key, loader, ttl), signal);
  }

  // --- batches -------------------------------------------------------------------

  /** Read `keys` in one round trip when the store can (else one by one): values or `MISS`. */
  async function readMany(keys: readonly string[]): Promise<unknown[]> {
    if (store.getMany === undefined || keys.length === 1) return Promise.all(keys.map(read));
    let raws: (StoreValue | undefined)[];
    try {
      raws = await op('getMany', keys[0] as string, readTimeout, () => store.getMany!(keys));
    } catch {
      return keys.map(() => MISS);
    }
    // A store that breaks its contract is a store that did not answer.
    if (!Array.isArray(raws) || raws.length !== keys.length) return keys.map(() => MISS);
    return keys.map((key, i) => decodeOrDrop(key, raws[i] ?? undefined));
  }

  /** Write back what a batch loaded, detached, in one round trip when the store can. */
  function writeBackMany(flights: readonly Flight<V>[], values: readonly unknown[], ttl: number) {
    const entries: { key: string; value: StoreValue; ttl: number; version: number }[] = [];
    const written: Flight<V>[] = [];
    for (let i = 0; i < flights.length; i++) {
      const flight = flights[i] as Flight<V>;
      const encoded = encode(values[i], flight.version);
      if (encoded instanceof SerializeError) {
        notSerializable(flight.key, flight.group, encoded);
        continue;
      }
      if (encoded instanceof Error) {
        notStored(flight.key, encoded.message);
        continue;
      }
      entries.push({ key: flight.key, value: encoded, ttl, version: flight.version });
      written.push(flight);
    }
    if (entries.length === 0) return undefined;
    const task = detach(
      async () => {
        // A set or delete of a key after the load started wins over the load.
        const live = entries.filter((_, i) => {
          const flight = written[i] as Flight<V>;
          return !flight.superseded && fresh(flight);
        });
        if (live.length === 0) return;
        if (store.setMany !== undefined && live.length > 1) {
          await op('setMany', (live[0] as { key: string }).key, writeTimeout, () =>
            store.setMany!(live),
          );
          return;
        }
        await Promise.all(
          live.map((e) =>
            op('set', e.key, writeTimeout, () => store.set(e.key, e.value, e.ttl, e.version)),
          ),
        );
      },
      { timeout: writeTimeout, name: 'context-cache batch write-back' },
    );
    track(task);
    for (const flight of written) flight.writing = task;
    return task;
  }

  function loadMany(
    fullKeys: readonly string[],
    group: string,
    keys: readonly CacheKey[],
    load: (
      missed: readonly CacheKey[],
      ctx: SharedLoaderContext,
    ) => PromiseLike<readonly unknown[]>,
  ): Promise<unknown>[] {
    const n = keys.length;
    const out = new Array<Promise<unknown>>(n);
    const signal = currentSignal();
    if (signal?.aborted) {
      const aborted = Promise.reject(signal.reason);
      aborted.then(undefined, ignore);
      out.fill(aborted);
      return out;
    }
    if (closing !== undefined) {
      // Closed: the store is gone, the batch function still answers.
      const all = Promise.resolve().then(() => load(keys, { signal: signal ?? NEVER_ABORTED }));
      for (let i = 0; i < n; i++) out[i] = all.then((values) => unwrap(values[i]));
      return out;
    }
    const mine: Flight<V>[] = [];
    const mineKeys: CacheKey[] = [];
    const settlers: [(value: V) => void, (err: unknown) => void][] = [];
    const controller = new AbortController();
    const batch = { open: 0 };
    const version = nextVersion();
    for (let i = 0; i < n; i++) {
      const fullKey = fullKeys[i] as string;
      const local = peek(fullKey);
      if (local !== MISS) {
        out[i] = Promise.resolve(local);
        continue;
      }
      let flight = flights.get(fullKey);
      if (flight === undefined) {
        // This batch loads the key: other requests asking for it meanwhile join it.
        let settle!: [(value: V) => void, (err: unknown) => void];
        const promise = new Promise<V>((resolve, reject) => {
          settle = [resolve, reject];
        });
        promise.then(undefined, ignore);
        flight = {
          key: fullKey,
          group,
          version,
          controller,
          promise,
          waiters: 0,
          settled: false,
          superseded: false,
          writing: undefined,
          batch,
        };
        flights.set(fullKey, flight);
        batch.open++;
        mine.push(flight);
        mineKeys.push(keys[i]);
        settlers.push(settle);
      }
      out[i] = join(flight, signal);
    }
    if (mine.length === 0) return out;
    const fail = (j: number, err: unknown): void => {
      const flight = mine[j] as Flight<V>;
      flight.settled = true;
      forget(flight);
      (settlers[j] as [unknown, (err: unknown) => void])[1](err);
    };
    // Like a shared load, the batch belongs to every request that joins one of its keys:
    // it runs in a scope of its own, with the batch's signal.
    runInScope(new Scope(undefined, controller.signal), async () => {
      const found = await readMany(mine.map((flight) => flight.key));
      const missed: number[] = [];
      for (let j = 0; j < mine.length; j++) {
        if (found[j] === MISS) missed.push(j);
        else {
          const flight = mine[j] as Flight<V>;
          flight.settled = true;
          forget(flight);
          // A key the store answered needs no load: it no longer counts among the keys
          // whose callers keep the batch going (one that lost them was counted out then).
          if (flight.waiters > 0) batch.open--;
          (settlers[j] as [(value: V) => void, unknown])[0](found[j] as V);
        }
      }
      if (missed.length === 0) return;
      // Every key left to load has lost its callers: the load is told to stop, as when
      // the last of them left.
      if (batch.open === 0) abandon(controller, undefined);
      let values: readonly unknown[];
      try {
        values = await load(
          missed.map((j) => mineKeys[j] as CacheKey),
          { signal: controller.signal },
        );
      } catch (err) {
        for (const j of missed) fail(j, err);
        return;
      }
      const loaded: Flight<V>[] = [];
      const loadedValues: unknown[] = [];
      for (let m = 0; m < missed.length; m++) {
        const j = missed[m] as number;
        const value = values[m];
        if (isBatchFailure(value)) {
          fail(j, value[BATCH_FAILED]);
          continue;
        }
        loaded.push(mine[j] as Flight<V>);
        loadedValues.push(value);
      }
      const writing = writeBackMany(loaded, loadedValues, defaultTtl);
      for (let m = 0, l = 0; m < missed.length; m++) {
        const j = missed[m] as number;
        const flight = mine[j] as Flight<V>;
        if (flight !== loaded[l]) continue;
        flight.settled = true;
        // Keep a loaded key's flight while it is written back, as getOrLoad does.
        if (writing === undefined) forget(flight);
        else
          writing.then(
            () => forget(flight),
            () => forget(flight),
          );
        (settlers[j] as [(value: V) => void, unknown])[0](loadedValues[l++] as V);
      }
    }).then(undefined, (err: unknown) => {
      for (let j = 0; j < mine.length; j++) {
        if (!(mine[j] as Flight<V>).settled) fail(j, err);
      }
    });
    return out;
  }

  // --- writes --------------------------------------------------------------------

  function supersede(fullKey: string): void {
    const flight = flights.get(fullKey);
    if (flight !== undefined) {
      flight.superseded = true;
      forget(flight);
    }
    const left = orphans.get(fullKey);
    if (left !== undefined) for (const orphaned of left) orphaned.superseded = true;
  }

  /**
   * Keep a load every caller left where a later set or delete of its key still finds it,
   * until it has settled and written back: its write-back is then skipped, whether or
   * not the store still holds the delete's tombstone (a memoryStore past its `max`, or
   * a Redis under `maxmemory`, may have evicted it).
   */
  function orphan(flight: Flight<V>): void {
    let left = orphans.get(flight.key);
    if (left === undefined) {
      left = new Set();
      orphans.set(flight.key, left);
    }
    left.add(flight);
    const done = (): void => {
      left.delete(flight);
      if (left.size === 0 && orphans.get(flight.key) === left) orphans.delete(flight.key);
    };
    flight.promise.then(
      () => (flight.writing === undefined ? done() : flight.writing.then(done, done)),
      done,
    );
  }

  function closedError(fn: string): Error {
    return new Error(`${fn}(): the shared cache is closed.`);
  }

  function set(fn: string, fullKey: string, value: V, ttl: number): Promise<void> {
    if (closing !== undefined) return Promise.reject(closedError(fn));
    // A set counts as a load that started now.
    const version = nextVersion();
    const encoded = encode(value, version);
    if (encoded instanceof Error) {
      encoded.message = `${fn}(): ${encoded.message} ("${fullKey}").`;
      return Promise.reject(encoded);
    }
    supersede(fullKey);
    return op('set', fullKey, writeTimeout, () => store.set(fullKey, encoded, ttl, version)).then(
      ignore,
    );
  }

  /**
   * Delete by writing a tombstone (see version.ts): a miss for every reader, and,
   * through the version rule, a refusal for the write-back of any load that started
   * before the delete, in this instance or another. It lives as long as the oldest load
   * that may still write back (`maxLoadAge`, see `fresh`) plus `writeTimeout`. Through
   * `tieredStore` it is a `set`, so other instances drop the key from their L1.
   */
  function remove(fn: string, fullKey: string): Promise<void> {
    if (closing !== undefined) return Promise.reject(closedError(fn));
    supersede(fullKey);
    const version = nextVersion();
    return op('delete', fullKey, writeTimeout, () =>
      store.set(fullKey, tombstone(version), tombstoneTtl, version),
    ).then(ignore);
  }

  // --- the cache -----------------------------------------------------------------

  /**
   * The store key of an entry: the namespace, then the encoded (group and) key inside a
   * `{...}` hash tag, so on Redis Cluster the entry and its lock share one slot.
   */
  function entryKey(encoded: string): string {
    return `${prefix}{${encoded}}`;
  }

  function view(group: string): SharedGroupView<V> {
    checkGroup('contextCached', group);
    let found = views.get(group);
    if (found !== undefined) return found;
    const groupPrefix = encodeKey('contextCached', group);
    found = {
      getOrLoad(key, loader, opts) {
        const fullKey = entryKey(groupPrefix + encodeKey('contextCached', key));
        checkLoader('contextCached', loader);
        const ttl = checkSetOptions('contextCached', opts) ?? defaultTtl;
        return getOrLoad(fullKey, group, key, loader, ttl);
      },
      delete(key) {
        return remove('invalidate', entryKey(groupPrefix + encodeKey('invalidate', key)));
      },
      loadMany(keys, load) {
        const fullKeys = keys.map((key) =>
          entryKey(groupPrefix + encodeKey('contextBatched', key)),
        );
        return loadMany(fullKeys, group, keys, load);
      },
    };
    views.set(group, found);
    return found;
  }

  // Another instance wrote or deleted a key: a load of it this instance started before
  // takes no new callers and is not written back, as after a local set or delete.
  const stopHearing = store.onInvalidate?.(supersede);

  return {
    getOrLoad(key, loader, opts) {
      const fullKey = entryKey(encodeKey('getOrLoad', key));
      checkLoader('getOrLoad', loader);
      const ttl = checkSetOptions('getOrLoad', opts) ?? defaultTtl;
      return getOrLoad(fullKey, undefined, key, loader as never, ttl);
    },
    get(key) {
      const fullKey = entryKey(encodeKey('get', key));
      if (closing !== undefined) return Promise.resolve(undefined);
      return read(fullKey).then((value) => (value === MISS ? undefined : (value as V)));
    },
    set(key, value, opts) {
      const fullKey = entryKey(encodeKey('set', key));
      const ttl = checkSetOptions('set', opts) ?? defaultTtl;
      return set('set', fullKey, value, ttl);
    },
    delete(key) {
      return remove('delete', entryKey(encodeKey('delete', key)));
    },
    close() {
      closing ??= (async () => {
        stopHearing?.();
        if (pending.size > 0) {
          const stop = new AbortController();
          await Promise.race([Promise.allSettled([...pending]), sleep(writeTimeout, stop.signal)]);
          stop.abort();
        }
        storeClosed = true;
        await store.close();
      })();
      return closing;
    },
    [GROUP_VIEW]: view,
  };
}
