/**
 * getOrLoad's promises: singleflight across requests, reference-counted cancellation,
 * detached write-backs, reads cut at readTimeout, fail-open with one report per outage.
 * Outages here come from a store that can be switched to hang or fail; the same faults
 * against a real redis-server are in faults.test.ts.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { setClock } from '../../src/clock.js';
import {
  contextBatched,
  contextCached,
  createSharedCache,
  currentSignal,
  getContextCache,
  memoryStore,
  type SharedCacheOptions,
  type Store,
  type StoreValue,
  withCacheContext,
} from '../../src/index.js';
import { deferred, eventually, noUnhandledRejections, sleep } from '../helpers/async.js';

noUnhandledRejections();

type Mode = 'ok' | 'hang' | 'fail';

/** A memory store that can be told to hang (never answer) or fail (reject). */
function switchable() {
  const inner = memoryStore({ max: 1000 });
  const state = { mode: 'ok' as Mode, sets: 0, attempts: 0 };
  const gate = <T>(run: () => Promise<T>): Promise<T> => {
    state.attempts++;
    if (state.mode === 'hang') return new Promise<T>(() => {});
    if (state.mode === 'fail') return Promise.reject(new Error('connection refused'));
    return run();
  };
  const store: Store & { state: typeof state; raw: typeof inner } = {
    state,
    raw: inner,
    get: (key) => gate(() => inner.get(key)),
    set: (key, value: StoreValue, ttl, version) =>
      gate(() => {
        state.sets++;
        return inner.set(key, value, ttl, version);
      }),
    delete: (key) => gate(() => inner.delete(key)),
    lock: (key, token, ttl) => gate(() => inner.lock(key, token, ttl)),
    unlock: (key, token) => gate(() => inner.unlock(key, token)),
    close: () => inner.close(),
  };
  return store;
}

function make(store: Store, extra: Partial<SharedCacheOptions> = {}) {
  const events: string[] = [];
  const cache = createSharedCache<unknown>({
    store,
    ttl: 60_000,
    namespace: 'app',
    readTimeout: 50,
    writeTimeout: 100,
    onError: (err, info) => events.push(`error ${info.op}: ${err.message}`),
    onRecover: () => events.push('recover'),
    ...extra,
  });
  return { cache, events };
}

/** Run `fn` as a request with its own signal. */
function request<T>(fn: () => Promise<T>) {
  const controller = new AbortController();
  const result = withCacheContext(fn, { signal: controller.signal });
  result.catch(() => {});
  return { result, abort: (reason: unknown) => controller.abort(reason) };
}

describe('singleflight', () => {
  it('shares one load of a key between concurrent requests', async () => {
    const { cache } = make(memoryStore({ max: 10 }));
    const load = deferred<string>();
    let loads = 0;
    const loader = () => {
      loads++;
      return load.promise;
    };
    const a = request(() => cache.getOrLoad('k', loader));
    const b = request(() => cache.getOrLoad('k', loader));
    await sleep(5);
    load.resolve('v');
    expect(await a.result).toBe('v');
    expect(await b.result).toBe('v');
    expect(loads).toBe(1);
  });

  it("gives the loader's error to every joined caller, stores nothing, loads again next time", async () => {
    const store = memoryStore({ max: 10 });
    const { cache } = make(store);
    const load = deferred<string>();
    let loads = 0;
    const a = request(() =>
      cache.getOrLoad('k', () => {
        loads++;
        return load.promise;
      }),
    );
    const b = request(() =>
      cache.getOrLoad('k', () => {
        loads++;
        return load.promise;
      }),
    );
    await sleep(5);
    load.reject(new Error('db down'));
    await expect(a.result).rejects.toThrow('db down');
    await expect(b.result).rejects.toThrow('db down');
    expect(store.size).toBe(0);
    expect(
      await cache.getOrLoad('k', () => {
        loads++;
        return 'fresh';
      }),
    ).toBe('fresh');
    expect(loads).toBe(2);
  });

  it('keeps nothing in process after a store hit: the next call reads the store again', async () => {
    const store = memoryStore({ max: 10 });
    const { cache: one } = make(store);
    const { cache: two } = make(store);
    await two.set('k', 'v1');
    expect(await one.getOrLoad('k', () => 'loaded')).toBe('v1');
    await two.set('k', 'v2');
    expect(await one.getOrLoad('k', () => 'loaded')).toBe('v2');
  });

  it('runs the loader outside any request cache, with the shared signal as currentSignal()', async () => {
    const { cache } = make(memoryStore({ max: 10 }));
    let seen: { cache: unknown; signal: AbortSignal | undefined; own: AbortSignal } | undefined;
    await withCacheContext(() =>
      cache.getOrLoad('k', (_key, { signal }) => {
        seen = { cache: getContextCache(), signal: currentSignal(), own: signal };
        return 1;
      }),
    );
    expect(seen?.cache).toBeUndefined();
    expect(seen?.signal).toBe(seen?.own);
  });
});

describe('cancellation', () => {
  it('rejects an aborted waiter at once; the load goes on for the others', async () => {
    const { cache } = make(memoryStore({ max: 10 }));
    const load = deferred<string>();
    let signal: AbortSignal | undefined;
    const loader = (_: unknown, ctx: { signal: AbortSignal }) => {
      signal = ctx.signal;
      return load.promise;
    };
    const a = request(() => cache.getOrLoad('k', loader));
    const b = request(() => cache.getOrLoad('k', loader));
    await sleep(5);
    const reason = new Error('client closed the connection');
    a.abort(reason);
    await expect(a.result).rejects.toBe(reason);
    expect(signal?.aborted).toBe(false);
    load.resolve('v');
    expect(await b.result).toBe('v');
  });

  it('aborts the shared load when every waiter has gone; the next call starts afresh', async () => {
    const store = memoryStore({ max: 10 });
    const { cache } = make(store);
    const first = deferred<string>();
    const signals: AbortSignal[] = [];
    let loads = 0;
    const a = request(() =>
      cache.getOrLoad('k', (_, { signal }) => {
        loads++;
        signals.push(signal);
        return first.promise;
      }),
    );
    const b = request(() => cache.getOrLoad('k', () => 'unused'));
    await sleep(5);
    a.abort(new Error('a left'));
    b.abort(new Error('b left'));
    await expect(a.result).rejects.toThrow('a left');
    await expect(b.result).rejects.toThrow('b left');
    expect(signals[0]?.aborted).toBe(true);
    expect((signals[0]!.reason as Error).message).toBe(
      'Every caller waiting for this shared load has given up.',
    );
    expect(
      await cache.getOrLoad('k', () => {
        loads++;
        return 'second';
      }),
    ).toBe('second');
    expect(loads).toBe(2);
  });

  it('writes back an abandoned load that still finishes', async () => {
    const store = memoryStore({ max: 10 });
    const { cache } = make(store);
    const load = deferred<string>();
    const a = request(() => cache.getOrLoad('k', () => load.promise));
    await sleep(5);
    a.abort(new Error('gone'));
    await expect(a.result).rejects.toThrow('gone');
    load.resolve('late');
    await eventually(async () => (await cache.get('k')) === 'late', 'the late value was stored');
  });

  it('rejects a caller whose signal is already aborted, without loading', async () => {
    const { cache } = make(memoryStore({ max: 10 }));
    const controller = new AbortController();
    const reason = new Error('already gone');
    controller.abort(reason);
    let loads = 0;
    const result = withCacheContext(() => cache.getOrLoad('k', () => ++loads), {
      signal: controller.signal,
    });
    await expect(result).rejects.toBe(reason);
    expect(loads).toBe(0);
  });
});

describe('faults', () => {
  // The clock the backoff windows are measured on, moved by hand.
  let time = 1_000_000;
  beforeEach(() => {
    time = 1_000_000;
    setClock(() => time);
  });
  afterEach(() => setClock(undefined));

  it('treats a read slower than readTimeout as a miss, reporting the outage once', async () => {
    const store = switchable();
    const { cache, events } = make(store);
    store.state.mode = 'hang';
    for (let i = 0; i < 5; i++) expect(await cache.getOrLoad(['k', i], () => i)).toBe(i);
    expect(await cache.get('k')).toBeUndefined();
    expect(events).toEqual([
      'error get: The shared store did not answer get "app:{a2:s1:kn0;}" within 50 ms.',
    ]);
    // Only the first read waited on the hanging store; the others were not attempted.
    expect(store.state.attempts).toBe(1);
    store.state.mode = 'ok';
    time += 1000; // the first backoff window is over: the next operation probes
    expect(await cache.getOrLoad('fresh', () => 'v')).toBe('v');
    await eventually(() => events.length === 2, 'the recovery was reported');
    expect(events[1]).toBe('recover');
    await eventually(async () => (await cache.get('fresh')) === 'v', 'values are stored again');
    expect(events).toHaveLength(2);
  });

  it('never makes the caller wait on or fail because of the write-back', async () => {
    const store = switchable();
    const { cache, events } = make(store, { readTimeout: 1000 });
    const hangingSets = { ...store, get: store.raw.get, set: () => new Promise<void>(() => {}) };
    const { cache: slowWrites, events: slowEvents } = make(hangingSets, { readTimeout: 1000 });
    expect(await slowWrites.getOrLoad('k', () => 'v')).toBe('v');
    expect(slowEvents).toEqual([]);
    await eventually(() => slowEvents.length === 1, 'the write-back timed out');
    expect(slowEvents[0]).toMatch(/^error set: .* within 100 ms\.$/);
    store.state.mode = 'fail';
    expect(await cache.getOrLoad('k', () => 'w')).toBe('w');
    expect(events).toEqual(['error get: connection refused']);
  });

  it('rejects set and delete while the store is down; get resolves undefined', async () => {
    const store = switchable();
    const { cache, events } = make(store);
    await cache.set('k', 1);
    store.state.mode = 'fail';
    await expect(cache.set('k', 2)).rejects.toThrow('connection refused');
    // Within the backoff window: rejected at once, with the failure that started it.
    const skipped = await cache.delete('k').catch((err: Error) => err);
    expect(skipped).toBeInstanceOf(Error);
    expect((skipped as Error & { code: string }).code).toBe('CONTEXT_CACHE_STORE_UNAVAILABLE');
    expect((skipped as Error).message).toBe(
      'The shared store is down (connection refused); delete "app:{s1:k}" was not attempted.',
    );
    expect(((skipped as Error).cause as Error).message).toBe('connection refused');
    expect(await cache.get('k')).toBeUndefined();
    expect(store.state.attempts).toBe(2); // the first set, the failing set
    store.state.mode = 'hang';
    time += 1000;
    await expect(cache.delete('k')).rejects.toThrow('within 100 ms'); // the probe
    expect(events).toEqual(['error set: connection refused']);
    store.state.mode = 'ok';
    time += 1000; // the failed probe doubled the window: 1 s is not enough
    expect(await cache.get('k')).toBeUndefined();
    expect(store.state.attempts).toBe(3);
    time += 1000;
    expect(await cache.get('k')).toBe(1);
    expect(events).toEqual(['error set: connection refused', 'recover']);
  });

  it('skips the store during an outage but for one probe per window, doubling to 30 s', async () => {
    const store = switchable();
    const { cache, events } = make(store);
    store.state.mode = 'fail';
    let loads = 0;
    const page = async () => {
      for (let i = 0; i < 10; i++) await cache.getOrLoad(['page', i], () => ++loads);
    };
    await page();
    expect(loads).toBe(10); // every miss went to its loader
    expect(store.state.attempts).toBe(1); // only the read that found the outage reached the store
    const windows: number[] = [];
    for (let probe = 0; probe < 7; probe++) {
      // Move through the window in 100 ms steps until the store is tried again.
      const before = store.state.attempts;
      let waited = 0;
      while (store.state.attempts === before) {
        time += 100;
        waited += 100;
        await page();
      }
      expect(store.state.attempts).toBe(before + 1); // one probe, the rest skipped
      windows.push(waited);
    }
    expect(windows).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    expect(events).toEqual(['error get: connection refused']);
    store.state.mode = 'ok';
    time += 30_000;
    await page();
    expect(events).toEqual(['error get: connection refused', 'recover']);
    // Hits again: the page's values are stored and read back.
    await eventually(async () => (await cache.get(['page', 9])) !== undefined, 'values are stored');
  });

  it('does not wait on a client that reports itself disconnected, and probes when it reconnects', async () => {
    const store = switchable();
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), {
      code: 'ECONNREFUSED',
    });
    const client = { connected: true, readies: 1 };
    const reporting: Store = {
      ...store,
      connection: () => (client.connected ? client.readies : refused),
    };
    const { cache, events } = make(reporting, { readTimeout: 60_000, writeTimeout: 60_000 });
    await cache.set('k', 'before');
    client.connected = false;
    store.state.mode = 'hang'; // were it asked, it would never answer
    let loads = 0;
    for (let i = 0; i < 10; i++) expect(await cache.getOrLoad(['m', i], () => ++loads)).toBe(i + 1);
    const err = await cache.set('k', 'during').catch((e: Error) => e);
    expect((err as Error).message).toBe(
      'The shared store\'s client is not connected (connect ECONNREFUSED 127.0.0.1:6379); set "app:{s1:k}" was not sent.',
    );
    expect((err as Error).cause).toBe(refused);
    expect(store.state.attempts).toBe(1); // the first set only
    expect(events).toEqual([
      'error get: The shared store\'s client is not connected (connect ECONNREFUSED 127.0.0.1:6379); get "app:{a2:s1:mn0;}" was not sent.',
    ]);
    // Reconnected within the window: the next operation is the probe.
    store.state.mode = 'ok';
    client.connected = true;
    client.readies = 2;
    expect(await cache.get('k')).toBe('before');
    expect(events[1]).toBe('recover');
  });

  it('reports through a process warning when there is no onError', async () => {
    const store = switchable();
    const cache = createSharedCache<number>({
      store,
      ttl: 1000,
      namespace: 'app',
      readTimeout: 20,
    });
    const codes: string[] = [];
    const onWarning = (w: Error & { code?: string }) => codes.push(String(w.code));
    process.on('warning', onWarning);
    store.state.mode = 'fail';
    await cache.getOrLoad(1, () => 1);
    await cache.getOrLoad(2, () => 2);
    await sleep(10);
    process.off('warning', onWarning);
    expect(codes).toEqual(['CONTEXT_CACHE_STORE_DOWN']);
  });

  it('lets a set or delete win over a load that started before it', async () => {
    const store = memoryStore({ max: 10 });
    const { cache } = make(store);
    const load = deferred<string>();
    const pending = cache.getOrLoad('k', () => load.promise);
    await sleep(5);
    await cache.delete('k');
    load.resolve('old');
    expect(await pending).toBe('old');
    await cache.close();
    expect(store.size).toBe(0);
  });
});

describe('lock', () => {
  it('lets one cache load a cold key while another over the same store waits for its value', async () => {
    const store = memoryStore({ max: 10 });
    const one = make(store, { lock: { ttl: 5000, wait: 5000 } }).cache;
    const two = make(store, { lock: { ttl: 5000, wait: 5000 } }).cache;
    const load = deferred<string>();
    let loads = 0;
    const a = one.getOrLoad('k', () => {
      loads++;
      return load.promise;
    });
    await sleep(5);
    const b = two.getOrLoad('k', () => {
      loads++;
      return 'second loader';
    });
    await sleep(30);
    load.resolve('first');
    expect(await a).toBe('first');
    expect(await b).toBe('first');
    expect(loads).toBe(1);
  });

  it('loads anyway once the wait is over', async () => {
    const store = memoryStore({ max: 10 });
    const one = make(store, { lock: { ttl: 5000, wait: 30 } }).cache;
    const two = make(store, { lock: { ttl: 5000, wait: 30 } }).cache;
    const load = deferred<string>();
    const a = one.getOrLoad('k', () => load.promise);
    await sleep(5);
    expect(await two.getOrLoad('k', () => 'impatient')).toBe('impatient');
    load.resolve('first');
    expect(await a).toBe('first');
  });
});

describe('close', () => {
  it('waits for pending write-backs, then closes the store', async () => {
    const store = switchable();
    const { cache } = make(store);
    expect(await cache.getOrLoad('k', () => 'v')).toBe('v');
    await cache.close();
    expect(store.state.sets).toBe(1);
    await expect(cache.set('k', 1)).rejects.toThrow('set(): the shared cache is closed.');
    expect(await cache.getOrLoad('k', () => 'loader still answers')).toBe('loader still answers');
  });

  it('answers loads still running at close() without sending them to the closed store', async () => {
    const store = switchable();
    const { cache, events } = make(store);
    const slow = deferred<string>();
    const slowBatch = deferred<string[]>();
    const getMany = contextBatched('closing', (_keys: readonly string[]) => slowBatch.promise, {
      shared: cache,
    });
    const loading = cache.getOrLoad('k', () => slow.promise);
    const batched = withCacheContext(() => Promise.all([getMany('a'), getMany('b')]));
    await eventually(() => store.state.attempts >= 3, 'the store was read for every key');
    await cache.close();
    // A closed client fails whatever is sent to it.
    store.state.mode = 'fail';
    const attempts = store.state.attempts;
    slow.resolve('v');
    slowBatch.resolve(['va', 'vb']);
    expect(await loading).toBe('v');
    expect(await batched).toEqual(['va', 'vb']);
    await sleep(150);
    expect(store.state.attempts).toBe(attempts);
    expect(events).toEqual([]);
  });
});

describe('argument checks', () => {
  const store = memoryStore({ max: 10 });
  it.each([
    [
      undefined,
      "createSharedCache(): options must be an object such as { store: memoryStore({ max: 10_000 }), ttl: 60_000, namespace: 'app' }, got undefined.",
    ],
    [
      { store: {}, ttl: 1, namespace: 'a' },
      'createSharedCache(): options.store must be a store with get, set, delete and close, such as memoryStore({ max: 10_000 }) or redisStore({ url }), got an object.',
    ],
    [
      { store, namespace: 'a' },
      'createSharedCache(): options.ttl is required: pass the default time to live of an entry in milliseconds, such as 60_000.',
    ],
    [
      { store, ttl: -1, namespace: 'a' },
      'createSharedCache(): options.ttl must be a positive number of milliseconds, such as 60_000, got a number (-1).',
    ],
    [
      { store, ttl: 1, namespace: '' },
      "createSharedCache(): options.namespace must be a non-empty string that prefixes every key, such as 'app', got an empty string.",
    ],
    [
      { store, ttl: 1, namespace: 'a', readTimeout: '250' },
      'createSharedCache(): options.readTimeout must be a positive number of milliseconds, such as 250, got a string ("250").',
    ],
    [
      {
        store: { get() {}, set() {}, delete() {}, close() {} },
        ttl: 1,
        namespace: 'a',
        lock: { ttl: 1, wait: 1 },
      },
      'createSharedCache(): options.lock needs a store with lock() and unlock(), such as redisStore() or tieredStore(); the given store has none.',
    ],
  ])('createSharedCache(%o)', (options, message) => {
    expect(() => createSharedCache(options as never)).toThrow(new TypeError(message));
  });

  it('checks keys, loaders and ttls', () => {
    const cache = createSharedCache<number>({ store, ttl: 1, namespace: 'a' });
    expect(() => cache.getOrLoad({} as never, () => 1)).toThrow(
      new TypeError(
        'getOrLoad(): key must be a string, number, bigint, boolean, null, undefined or an array of those, got an object. Pass the id (user.id) or a composite key ([repo.id, user.id]) instead.',
      ),
    );
    expect(() => cache.getOrLoad(1, 'x' as never)).toThrow(
      /^getOrLoad\(\): loader must be a function/,
    );
    expect(() => cache.set(1, 1, { ttl: 0 })).toThrow(
      new TypeError(
        'set(): options.ttl must be a positive number of milliseconds, such as 60_000, got a number (0).',
      ),
    );
    expect(() => memoryStore({ max: 0 })).toThrow(
      new TypeError(
        'memoryStore(): options.max must be a positive integer (the most entries to keep, such as 10_000), got a number (0).',
      ),
    );
  });
});

describe('contextCached with a shared tier', () => {
  it('reads the request tier, then the shared tier, then the loader', async () => {
    const store = memoryStore({ max: 100 });
    const shared = createSharedCache<string>({ store, ttl: 60_000, namespace: 'app' });
    let loads = 0;
    const getUser = contextCached('user', (id: number) => `user ${id} #${++loads}`, { shared });
    await withCacheContext(async () => {
      expect(await getUser(1)).toBe('user 1 #1');
      expect(await getUser(1)).toBe('user 1 #1');
      expect(getContextCache()?.stats()).toMatchObject({ hits: 1, misses: 1, loads: 1 });
    });
    await eventually(() => store.size === 1, 'the shared tier holds the user');
    await withCacheContext(async () => {
      // a new request: its request tier is empty, the shared tier answers
      expect(await getUser(1)).toBe('user 1 #1');
    });
    expect(loads).toBe(1);
  });

  it('invalidate() clears every tier, so the request reads its own write', async () => {
    const store = memoryStore({ max: 100 });
    const shared = createSharedCache<string>({ store, ttl: 60_000, namespace: 'app' });
    const db = new Map([[1, 'ada']]);
    const getName = contextCached('name', (id: number) => db.get(id) ?? 'nobody', { shared });
    await withCacheContext(async () => {
      expect(await getName(1)).toBe('ada');
      await eventually(() => store.size === 1, 'the shared tier holds the name');
      db.set(1, 'grace');
      await getName.invalidate(1);
      expect(await getName(1)).toBe('grace');
    });
    await withCacheContext(async () => {
      expect(await getName(1)).toBe('grace');
    });
  });

  it('invalidate() rejects when the shared store cannot be reached', async () => {
    const store = switchable();
    const shared = createSharedCache<string>({
      store,
      ttl: 60_000,
      namespace: 'app',
      onError() {},
    });
    const getName = contextCached('name (store failing)', () => 'ada', { shared });
    store.state.mode = 'fail';
    await withCacheContext(async () => {
      expect(await getName(1)).toBe('ada');
      await expect(getName.invalidate(1)).rejects.toThrow('connection refused');
    });
  });
});
