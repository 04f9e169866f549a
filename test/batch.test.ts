import { AsyncLocalStorage } from 'node:async_hooks';
import { tracingChannel } from 'node:diagnostics_channel';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type BatchMessage,
  contextBatched,
  contextCached,
  currentSignal,
  detach,
  diagnosticsChannels,
  getContextCache,
  getContextData,
  getWithContextCache,
  LoadTimeoutError,
  removeContextData,
  withCacheContext,
  withNoCacheContext,
} from '../src/index.js';
import { deferred, noUnhandledRejections } from './helpers/async.js';

noUnhandledRejections();

let groupCount = 0;
/** A fresh group per getter, so no test meets another's group-reuse warning. */
const fresh = (name: string) => `${name}-${++groupCount}`;

/** A batched identity getter that records each call's keys. */
function recorder<K extends string | number>(options?: { maxBatchSize?: number }) {
  const calls: K[][] = [];
  const getter = contextBatched(
    fresh('id'),
    async (keys: readonly K[]) => {
      calls.push([...keys]);
      return keys.map((key) => `v${key}`);
    },
    options,
  );
  return { calls, getter };
}

let warnings: unknown[][];
let emitWarning: typeof process.emitWarning;
beforeEach(() => {
  warnings = [];
  emitWarning = process.emitWarning;
  process.emitWarning = ((...args: unknown[]) => void warnings.push(args)) as never;
});
afterEach(() => {
  process.emitWarning = emitWarning;
});

describe('when a batch runs', () => {
  it('sends the keys asked for in one turn to one call, in first-asked order', async () => {
    const { calls, getter } = recorder<number>();
    await withCacheContext(async () => {
      const values = await Promise.all([getter(3), getter(1), getter(2)]);
      expect(values).toEqual(['v3', 'v1', 'v2']);
    });
    expect(calls).toEqual([[3, 1, 2]]);
  });

  it('includes keys asked for in .then chains and awaits queued by the same code', async () => {
    const { calls, getter } = recorder<string>();
    await withCacheContext(async () => {
      const later: Promise<string>[] = [];
      await Promise.all([
        getter('A'),
        Promise.resolve()
          .then(() => Promise.resolve())
          .then(() => {
            later.push(getter('B'));
            void Promise.resolve()
              .then(() => Promise.resolve())
              .then(() => {
                later.push(getter('C'));
              });
          }),
        (async () => {
          await null;
          await null;
          later.push(getter('D'));
        })(),
      ]);
      expect((await Promise.all(later)).sort()).toEqual(['vB', 'vC', 'vD']);
    });
    expect(calls).toHaveLength(1);
    expect(calls[0]?.[0]).toBe('A');
    expect([...(calls[0] ?? [])].sort()).toEqual(['A', 'B', 'C', 'D']);
  });

  it('starts a new batch for keys asked for after the previous one was dispatched', async () => {
    const { calls, getter } = recorder<number>();
    await withCacheContext(async () => {
      await getter(1);
      await getter(2);
    });
    expect(calls).toEqual([[1], [2]]);
  });

  it('queues a key asked for twice before dispatch once, and both callers get its value', async () => {
    await withNoCacheContext(async () => {
      const { calls, getter } = recorder<number>();
      const [a, b, c] = await Promise.all([getter(1), getter(2), getter(1)]);
      expect([a, b, c]).toEqual(['v1', 'v2', 'v1']);
      expect(calls).toEqual([[1, 2]]);
    });
  });

  it('splits a batch larger than maxBatchSize into calls that run concurrently', async () => {
    const calls: number[][] = [];
    const gates = [deferred(), deferred(), deferred()];
    const getter = contextBatched(
      fresh('sized'),
      async (keys: readonly number[]) => {
        const index = calls.push([...keys]) - 1;
        await gates[index]!.promise;
        return keys.map((key) => key * 10);
      },
      { maxBatchSize: 2 },
    );
    await withCacheContext(async () => {
      const all = Promise.all([1, 2, 3, 4, 5].map((key) => getter(key)));
      await new Promise((resolve) => setImmediate(resolve));
      // All three calls started before any of them finished.
      expect(calls).toEqual([[1, 2], [3, 4], [5]]);
      for (const gate of gates.reverse()) gate.resolve();
      expect(await all).toEqual([10, 20, 30, 40, 50]);
      expect(getContextCache()?.stats()).toMatchObject({ misses: 5, loads: 5, batches: 3 });
    });
  });

  it('counts unique keys against maxBatchSize', async () => {
    const { calls, getter } = recorder<number>({ maxBatchSize: 2 });
    await withCacheContext(async () => {
      await Promise.all([getter(1), getter(1), getter(2), getter(2), getter(3), getter(1)]);
    });
    expect(calls).toEqual([[1, 2], [3]]);
  });

  it('lets a batch function use another batched getter (a loader from a loader)', async () => {
    const deep = recorder<string>();
    const aCalls: string[][] = [];
    const bCalls: string[][] = [];
    const a = contextBatched(fresh('a'), (keys: readonly string[]) => {
      aCalls.push([...keys]);
      return deep.getter.many(keys);
    });
    const b = contextBatched(fresh('b'), (keys: readonly string[]) => {
      bCalls.push([...keys]);
      return deep.getter.many(keys);
    });
    await withCacheContext(async () => {
      expect(await Promise.all([a('A1'), b('B1'), a('A2'), b('B2')])).toEqual([
        'vA1',
        'vB1',
        'vA2',
        'vB2',
      ]);
    });
    expect(aCalls).toEqual([['A1', 'A2']]);
    expect(bCalls).toEqual([['B1', 'B2']]);
    expect(deep.calls).toEqual([['A1', 'A2', 'B1', 'B2']]);
  });
});

describe('entries are the request cache', () => {
  it('serves a key loaded once from the request cache: a hit never queues', async () => {
    const { calls, getter } = recorder<number>();
    await withCacheContext(async () => {
      await Promise.all([getter(1), getter(2)]);
      expect(await Promise.all([getter(1), getter(2), getter(3)])).toEqual(['v1', 'v2', 'v3']);
      expect(getContextCache()?.stats()).toEqual({
        hits: 2,
        joins: 0,
        misses: 3,
        loads: 3,
        errors: 0,
        evictions: 0,
        batches: 2,
      });
    });
    expect(calls).toEqual([[1, 2], [3]]);
  });

  it('joins a key already queued or in flight instead of loading it again', async () => {
    const gate = deferred();
    const calls: number[][] = [];
    const getter = contextBatched(fresh('join'), async (keys: readonly number[]) => {
      calls.push([...keys]);
      await gate.promise;
      return keys.map(String);
    });
    await withCacheContext(async () => {
      const first = getter(1);
      expect(getter(1)).toBe(first);
      await new Promise((resolve) => setImmediate(resolve));
      const joined = getter(1);
      await new Promise((resolve) => setImmediate(resolve));
      expect(calls).toEqual([[1]]);
      gate.resolve();
      expect(await joined).toBe('1');
      expect(getContextCache()?.stats()).toMatchObject({ joins: 2, misses: 1, batches: 1 });
    });
  });

  it('shares (group, key) with contextCached and getWithContextCache in both directions', async () => {
    const group = fresh('user');
    const batchCalls: number[][] = [];
    const batched = contextBatched(group, async (ids: readonly number[]) => {
      batchCalls.push([...ids]);
      return ids.map((id) => ({ id, by: 'batch' }));
    });
    let single = 0;
    const cached = contextCached(group, async (id: number) => {
      single++;
      return { id, by: 'single' };
    });
    await withCacheContext(async () => {
      await batched(1);
      expect(await cached(1)).toEqual({ id: 1, by: 'batch' });
      expect(await cached(2)).toEqual({ id: 2, by: 'single' });
      expect(await batched(2)).toEqual({ id: 2, by: 'single' });
      // In flight: a batched key pending is joined by the other getter, and back.
      const pendingBatched = batched(3);
      expect(await getWithContextCache(group, 3, () => ({ id: 3, by: 'never' }))).toEqual({
        id: 3,
        by: 'batch',
      });
      await pendingBatched;
      const pendingSingle = cached(4);
      expect(await batched(4)).toEqual({ id: 4, by: 'single' });
      await pendingSingle;
      expect(getContextData(group, 1)).toEqual({ id: 1, by: 'batch' });
    });
    expect(batchCalls).toEqual([[1], [3]]);
    expect(single).toBe(2);
  });

  it('prime stores a value that needs no batch; invalidate makes the next call load again', async () => {
    const { calls, getter } = recorder<number>();
    await withCacheContext(async () => {
      getter.prime(1, 'primed');
      expect(await getter(1)).toBe('primed');
      expect(calls).toEqual([]);
      await getter.invalidate(1);
      expect(await getter(1)).toBe('v1');
      expect(calls).toEqual([[1]]);
      getter.prime(1, 'again');
      expect(await getter(1)).toBe('again');
    });
  });

  it('queues a key once even when its entry was dropped while queued, and stores it again', async () => {
    const group = fresh('drop');
    const calls: number[][] = [];
    const getter = contextBatched(group, async (keys: readonly number[]) => {
      calls.push([...keys]);
      return keys.map((key) => `v${key}`);
    });
    await withCacheContext(async () => {
      const first = getter(7);
      removeContextData(group, 7);
      expect(getter(7)).toBe(first);
      expect(await first).toBe('v7');
      expect(getContextData(group, 7)).toBe('v7');
      // The second call joined the queued load: one miss, one load, one join.
      expect(getContextCache()?.stats()).toMatchObject({ misses: 1, loads: 1, joins: 1 });
    });
    expect(calls).toEqual([[7]]);
  });

  it('tells a composite key from the string its encoding equals, queued or cached', async () => {
    const group = fresh('composite');
    const calls: string[][] = [];
    const getter = contextBatched(group, async (keys: readonly (string | string[])[]) => {
      calls.push(keys.map((key) => JSON.stringify(key)));
      return keys.map((key) => `value of ${JSON.stringify(key)}`);
    });
    // Outside a scope, every key is looked up among the queued ones.
    const outside = await Promise.all([getter(['x']), getter('s1:x'), getter([]), getter('')]);
    expect(outside).toEqual(['value of ["x"]', 'value of "s1:x"', 'value of []', 'value of ""']);
    expect(calls).toEqual([['["x"]', '"s1:x"', '[]', '""']]);
    // In a request whose bound has dropped an entry since the batch opened.
    const inside = await withCacheContext(
      () => Promise.all([getter(['a']), getter(['b']), getter(['x']), getter('s1:x')]),
      { maxEntries: 2 },
    );
    expect(inside).toEqual([
      'value of ["a"]',
      'value of ["b"]',
      'value of ["x"]',
      'value of "s1:x"',
    ]);
    expect(calls[1]).toEqual(['["a"]', '["b"]', '["x"]', '"s1:x"']);
  });

  it('answers every caller even when the bound evicted its entry while the batch ran', async () => {
    const { calls, getter } = recorder<number>();
    await withCacheContext(
      async () => {
        expect(await getter.many([1, 2, 3, 4])).toEqual(['v1', 'v2', 'v3', 'v4']);
        expect(getContextCache()?.stats().evictions).toBe(2);
        expect(await getter(4)).toBe('v4');
      },
      { maxEntries: 2 },
    );
    expect(calls).toEqual([[1, 2, 3, 4]]);
  });
});

describe('results', () => {
  it('rejects a key whose element is an Error alone, and loads it again next time', async () => {
    let fail = true;
    const calls: number[][] = [];
    const getter = contextBatched(fresh('err'), async (keys: readonly number[]) => {
      calls.push([...keys]);
      return keys.map((key) => (key === 2 && fail ? new Error(`no ${key}`) : key));
    });
    await withCacheContext(async () => {
      const results = await Promise.allSettled([getter(1), getter(2), getter(3)]);
      expect(results).toEqual([
        { status: 'fulfilled', value: 1 },
        { status: 'rejected', reason: new Error('no 2') },
        { status: 'fulfilled', value: 3 },
      ]);
      fail = false;
      expect(await Promise.all([getter(1), getter(2)])).toEqual([1, 2]);
      expect(getContextCache()?.stats()).toMatchObject({ errors: 1, hits: 1, batches: 2 });
    });
    expect(calls).toEqual([[1, 2, 3], [2]]);
  });

  it('rejects every key of a call whose batch function rejects or throws, and caches none', async () => {
    let mode: 'reject' | 'throw' | 'ok' = 'reject';
    const calls: number[][] = [];
    const getter = contextBatched(fresh('fail'), (keys: readonly number[]) => {
      calls.push([...keys]);
      if (mode === 'throw') throw new Error('thrown');
      if (mode === 'reject') return Promise.reject(new Error('rejected'));
      return Promise.resolve(keys.map((key) => -key));
    });
    await withCacheContext(async () => {
      await expect(getter.many([1, 2])).rejects.toThrow('rejected');
      mode = 'throw';
      const settled = await Promise.allSettled([getter(1), getter(2)]);
      expect(settled.map((r) => r.status === 'rejected' && (r.reason as Error).message)).toEqual([
        'thrown',
        'thrown',
      ]);
      mode = 'ok';
      expect(await getter.many([1, 2])).toEqual([-1, -2]);
      expect(getContextCache()?.stats()).toMatchObject({ errors: 4, batches: 3 });
    });
    expect(calls).toEqual([
      [1, 2],
      [1, 2],
      [1, 2],
    ]);
  });

  it('rejects every key of a call whose array has the wrong length, giving both lengths', async () => {
    const getter = contextBatched(fresh('short'), async (keys: readonly number[]) => keys.slice(1));
    await withCacheContext(async () => {
      const settled = await Promise.allSettled([getter(1), getter(2), getter(3)]);
      for (const result of settled) {
        expect(result.status).toBe('rejected');
        const reason = (result as PromiseRejectedResult).reason as Error;
        expect(reason).toBeInstanceOf(TypeError);
        expect(reason.message).toMatch(/returned 2 values for 3 keys/);
      }
      expect(getContextCache()?.size).toBe(0);
    });
  });

  it('rejects with a TypeError when the batch resolves to neither an array nor a Map', async () => {
    const getter = contextBatched(
      fresh('odd'),
      async () => ({ 1: 'one' }) as unknown as readonly string[],
    );
    await expect(withCacheContext(() => getter(1))).rejects.toThrow(
      /must resolve to an array with one value per key or to a Map from key to value, got an object/,
    );
  });

  it('reads a Map by key: a missing key resolves to undefined, an Error value rejects its key', async () => {
    const getter = contextBatched(
      fresh('map'),
      async (keys: readonly number[]) =>
        new Map<number, string | Error>(
          keys
            .filter((key) => key !== 2)
            .map((key) => [key, key === 3 ? new Error('3') : `m${key}`]),
        ) as ReadonlyMap<number, string>,
    );
    await withCacheContext(async () => {
      const settled = await Promise.allSettled([getter(1), getter(2), getter(3)]);
      expect(settled).toEqual([
        { status: 'fulfilled', value: 'm1' },
        { status: 'fulfilled', value: undefined },
        { status: 'rejected', reason: new Error('3') },
      ]);
    });
  });

  it('finds composite keys in a Map built with equal arrays, not only the ones passed in', async () => {
    const getter = contextBatched(
      fresh('pair'),
      async (keys: readonly (readonly [number, string])[]) =>
        new Map(keys.map(([a, b]) => [[a, b] as const, `${a}/${b}`])),
    );
    await withCacheContext(async () => {
      expect(
        await getter.many([
          [1, 'x'],
          [2, 'y'],
          [1, 'x'],
        ]),
      ).toEqual(['1/x', '2/y', '1/x']);
      expect(await getter([2, 'y'])).toBe('2/y');
      expect(getContextCache()?.stats()).toMatchObject({ misses: 2, joins: 1, hits: 1 });
    });
  });

  it('awaits an element that is a promise: its key takes the outcome, and a failure is not cached', async () => {
    const group = fresh('promised');
    let round = 0;
    const getter = contextBatched(group, async (keys: readonly number[]) => {
      round++;
      // The slip this guards against: an async map returned without Promise.all.
      return keys.map(async (key) => {
        if (key === 2 && round === 1) throw new Error('no 2');
        return `v${key}`;
      });
    });
    await withCacheContext(async () => {
      const first = await Promise.allSettled([getter(1), getter(2)]);
      expect(first).toEqual([
        { status: 'fulfilled', value: 'v1' },
        { status: 'rejected', reason: new Error('no 2') },
      ]);
      expect(getContextData(group, 1)).toBe('v1');
      expect(getContextData(group, 2)).toBeUndefined();
      expect(await getter(2)).toBe('v2');
      expect(getContextCache()?.stats()).toMatchObject({ errors: 1, loads: 3, batches: 2 });
    });
    // Nobody awaits a rejected element: no unhandled rejection (checked after each test).
    round = 0;
    await withCacheContext(async () => {
      void getter(2);
      await new Promise((resolve) => setImmediate(resolve));
    });
  });

  it('gives the batch function an array of its own: sorting it in place moves no value', async () => {
    const group = fresh('sorting');
    const getter = contextBatched(group, async (keys: readonly number[]) => {
      (keys as number[]).sort((a, b) => a - b);
      return new Map(keys.map((key) => [key, `user ${key}`]));
    });
    await withCacheContext(async () => {
      expect(await Promise.all([getter(3), getter(1), getter(2)])).toEqual([
        'user 3',
        'user 1',
        'user 2',
      ]);
      expect(getContextData(group, 3)).toBe('user 3');
    });
  });

  it('accepts a batch function that returns its array without a promise', async () => {
    const getter = contextBatched(fresh('sync'), ((keys: readonly number[]) =>
      keys.map((key) => key + 1)) as never);
    expect(await withCacheContext(() => getter(1))).toBe(2);
  });
});

describe('no unhandled rejection', () => {
  it('from a failed key or a failed batch that nobody awaits, in or out of a request', async () => {
    const perKey = contextBatched(fresh('unawaited'), async (keys: readonly number[]) =>
      keys.map((key) => new Error(`no ${key}`)),
    );
    const whole = contextBatched(fresh('unawaited-all'), async (): Promise<number[]> => {
      throw new Error('down');
    });
    await withCacheContext(async () => {
      void perKey(1);
      void whole(1);
      void perKey.many([4, 5]);
      await new Promise((resolve) => setImmediate(resolve));
    });
    void perKey(2);
    void whole(2);
    void perKey.many([6]);
    await new Promise((resolve) => setImmediate(resolve));
    // The afterEach of noUnhandledRejections() fails the test if any was reported; an
    // awaiting caller still gets the error:
    await expect(perKey(3)).rejects.toThrow('no 3');
  });
});

describe('many()', () => {
  it('resolves the values in the keys order through one batch plus hits', async () => {
    const { calls, getter } = recorder<number>();
    await withCacheContext(async () => {
      await getter(2);
      expect(await getter.many([3, 2, 1, 3])).toEqual(['v3', 'v2', 'v1', 'v3']);
    });
    expect(calls).toEqual([[2], [3, 1]]);
  });

  it('rejects with the first failing key error, like Promise.all', async () => {
    const getter = contextBatched(fresh('many-err'), async (keys: readonly number[]) =>
      keys.map((key) => (key > 1 ? new Error(`bad ${key}`) : key)),
    );
    await expect(withCacheContext(() => getter.many([1, 2, 3]))).rejects.toThrow('bad 2');
  });

  it('resolves an empty list without calling the batch function', async () => {
    const { calls, getter } = recorder<number>();
    expect(await withCacheContext(() => getter.many([]))).toEqual([]);
    expect(calls).toEqual([]);
  });

  it('throws a TypeError for something other than an array', () => {
    const { getter } = recorder<number>();
    expect(() => getter.many(1 as never)).toThrow(
      /many\(\): keys must be an array of keys, such as \[1, 2, 3\], got a number \(1\)/,
    );
  });
});

describe('a batch never mixes scopes', () => {
  it('runs two interleaved requests as two batches, each in its own context and signal', async () => {
    const user = new AsyncLocalStorage<string>();
    const calls: { user: string | undefined; keys: number[]; signal: AbortSignal | undefined }[] =
      [];
    const getter = contextBatched(fresh('acl'), async (keys: readonly number[], { signal }) => {
      calls.push({ user: user.getStore(), keys: [...keys], signal });
      await new Promise((resolve) => setImmediate(resolve));
      // The batch may check access with the current user of its own request.
      return keys.map((key) => `${user.getStore()}:${key}`);
    });
    const latch = { alice: deferred(), bob: deferred() };
    const request = (name: 'alice' | 'bob', other: 'alice' | 'bob', signal: AbortSignal) =>
      user.run(name, () =>
        withCacheContext(
          async () => {
            const first = getter(1);
            latch[other].resolve();
            await latch[name].promise;
            const rest = await getter.many([2, name === 'alice' ? 3 : 4]);
            return [await first, ...rest];
          },
          { signal },
        ),
      );
    const alice = new AbortController();
    const bob = new AbortController();
    const [a, b] = await Promise.all([
      request('alice', 'bob', alice.signal),
      request('bob', 'alice', bob.signal),
    ]);
    expect(a).toEqual(['alice:1', 'alice:2', 'alice:3']);
    expect(b).toEqual(['bob:1', 'bob:2', 'bob:4']);
    // Both requests asked in the same turn, interleaved: one batch each, never mixed.
    expect(calls.map(({ user, keys }) => ({ user, keys }))).toEqual([
      { user: 'alice', keys: [1, 2, 3] },
      { user: 'bob', keys: [1, 2, 4] },
    ]);
    for (const call of calls) {
      expect(call.signal).toBe(call.user === 'alice' ? alice.signal : bob.signal);
    }
  });

  it('keeps one batch per scope when three requests take turns asking in one turn', async () => {
    const user = new AsyncLocalStorage<string>();
    const calls: { user: string | undefined; keys: number[] }[] = [];
    const getter = contextBatched(fresh('turns'), async (keys: readonly number[]) => {
      calls.push({ user: user.getStore(), keys: [...keys] });
      return keys.map((key) => `${user.getStore()}:${key}`);
    });
    const request = (name: string, base: number) =>
      user.run(name, () =>
        withCacheContext(async () => {
          const got: Promise<string>[] = [];
          for (let i = 0; i < 3; i++) {
            got.push(getter(base + i));
            await null; // the next request asks before this one asks again
          }
          return Promise.all(got);
        }),
      );
    expect(await Promise.all([request('a', 10), request('b', 20), request('c', 30)])).toEqual([
      ['a:10', 'a:11', 'a:12'],
      ['b:20', 'b:21', 'b:22'],
      ['c:30', 'c:31', 'c:32'],
    ]);
    expect(calls).toEqual([
      { user: 'a', keys: [10, 11, 12] },
      { user: 'b', keys: [20, 21, 22] },
      { user: 'c', keys: [30, 31, 32] },
    ]);
  });

  it('batches calls of one turn outside any scope and caches nothing', async () => {
    const { calls, getter } = recorder<number>();
    expect(await Promise.all([getter(1), getter(2), getter(1)])).toEqual(['v1', 'v2', 'v1']);
    expect(await getter(1)).toBe('v1');
    expect(calls).toEqual([[1, 2], [1]]);
  });

  it('batches per scope and caches nothing inside withNoCacheContext, leaving the request cache alone', async () => {
    const { calls, getter } = recorder<number>();
    await withCacheContext(async () => {
      const signal = currentSignal();
      await withNoCacheContext(async () => {
        expect(await getter.many([1, 2])).toEqual(['v1', 'v2']);
        expect(await getter(1)).toBe('v1');
        expect(currentSignal()).toBe(signal);
      });
      expect(getContextCache()?.size).toBe(0);
      const outer = getter(1);
      const inner = withNoCacheContext(() => getter(1));
      expect(inner).not.toBe(outer);
      await Promise.all([outer, inner]);
    });
    expect(calls).toEqual([[1, 2], [1], [1], [1]]);
  });

  it('batches inside detach with the detached signal and caches nothing', async () => {
    const signals: (AbortSignal | undefined)[] = [];
    const calls: number[][] = [];
    const getter = contextBatched(fresh('bg'), async (keys: readonly number[], ctx) => {
      calls.push([...keys]);
      signals.push(ctx.signal);
      return keys;
    });
    const request = new AbortController();
    await withCacheContext(
      async () => {
        await detach(async () => {
          expect(await Promise.all([getter(1), getter(2)])).toEqual([1, 2]);
          expect(await getter(1)).toBe(1);
          expect(signals[0]).toBe(currentSignal());
        });
        expect(getContextCache()?.size).toBe(0);
      },
      { signal: request.signal },
    );
    expect(calls).toEqual([[1, 2], [1]]);
    expect(signals[0]).not.toBe(request.signal);
    expect(signals[0]).toBeInstanceOf(AbortSignal);
  });

  it('passes through after the request ended: batches, stores nothing, warns once', async () => {
    const { calls, getter } = recorder<number>();
    await withCacheContext(async () => {
      getContextCache()?.end();
      expect(await getter.many([1, 2])).toEqual(['v1', 'v2']);
      expect(await getter(1)).toBe('v1');
    });
    expect(calls).toEqual([[1, 2], [1]]);
    expect(warnings.map((w) => w[2])).toEqual(['CONTEXT_CACHE_ENDED']);
    expect(String(warnings[0]?.[0])).toMatch(
      /^the getter of contextBatched\('[^']+'\) ran after its request had ended/,
    );
  });
});

describe('timeout', () => {
  it('rejects the keys of a call that outlives it, naming group, keys and limit, and drops them', async () => {
    let hang = true;
    const calls: number[][] = [];
    const group = fresh('slow');
    const getter = contextBatched(
      group,
      (keys: readonly number[]) => {
        calls.push([...keys]);
        return hang ? new Promise<number[]>(() => {}) : Promise.resolve([...keys]);
      },
      { timeout: 20 },
    );
    await withCacheContext(async () => {
      const settled = await Promise.allSettled([getter(1), getter(2)]);
      expect(settled.map((result) => (result as PromiseRejectedResult).reason)).toEqual([
        expect.objectContaining({ code: 'CONTEXT_CACHE_LOAD_TIMEOUT', group, key: 1, timeout: 20 }),
        expect.objectContaining({ code: 'CONTEXT_CACHE_LOAD_TIMEOUT', group, key: 2, timeout: 20 }),
      ]);
      const reason = (settled[0] as PromiseRejectedResult).reason as LoadTimeoutError;
      expect(reason).toBeInstanceOf(LoadTimeoutError);
      expect(reason.message).toBe(
        `contextBatched('${group}'): the load of key 1 did not settle within its timeout of 20 ms. ` +
          'Its callers were rejected and the entry dropped, so the next call loads again.',
      );
      expect(getContextCache()?.size).toBe(0);
      hang = false;
      expect(await getter.many([1, 2])).toEqual([1, 2]);
    });
    expect(calls).toEqual([
      [1, 2],
      [1, 2],
    ]);
  });

  it('bounds the elements that are promises too, whatever returns them', async () => {
    const never = () => new Promise<string>(() => {});
    const shapes: [string, (keys: readonly number[]) => unknown][] = [
      ['an async function', async (keys) => keys.map(never)],
      ['a function that returns its array at once', (keys) => keys.map(never)],
      ['a map of promises', async (keys) => new Map(keys.map((key) => [key, never()]))],
    ];
    for (const [name, batch] of shapes) {
      const group = fresh('slow-elements');
      const getter = contextBatched(group, batch as never, { timeout: 20 });
      const settled = await withCacheContext(() => Promise.allSettled([getter(1)]));
      expect(settled[0], name).toMatchObject({
        status: 'rejected',
        reason: expect.objectContaining({ code: 'CONTEXT_CACHE_LOAD_TIMEOUT', group, key: 1 }),
      });
    }
  });
});

describe('misuse', () => {
  it('checks group, batch function, keys and options with TypeErrors that say what to pass', () => {
    const ok = async (keys: readonly number[]) => keys;
    expect(() => contextBatched('', ok)).toThrow(
      "contextBatched(): group must be a non-empty string naming what is cached, such as 'user', got an empty string.",
    );
    expect(() => contextBatched(fresh('x'), 'nope' as never)).toThrow(
      'contextBatched(): batch must be a function that loads many keys at once, such as (ids) => db.users.findMany(ids), got a string ("nope").',
    );
    expect(() => contextBatched(fresh('x'), ok, { maxBatchsize: 5 } as never)).toThrow(
      "contextBatched(): unknown option options.maxBatchsize (did you mean 'maxBatchSize'?). The known options are 'maxBatchSize', 'shared' or 'timeout'.",
    );
    for (const bad of [0, 1.5, '2', -1, Number.NaN]) {
      expect(() => contextBatched(fresh('x'), ok, { maxBatchSize: bad as number })).toThrow(
        /^contextBatched\(\): options\.maxBatchSize must be a positive integer or Infinity, such as 100, got /,
      );
    }
    expect(() => contextBatched(fresh('x'), ok, { maxBatchSize: Infinity })).not.toThrow();
    expect(() => contextBatched(fresh('x'), ok, { timeout: 0 })).toThrow(
      /^contextBatched\(\): options\.timeout must be a positive number of milliseconds such as 5000 .*got a number \(0\)\.$/,
    );
    expect(() => contextBatched(fresh('x'), ok, { shared: {} as never })).toThrow(
      'contextBatched(): options.shared must be a cache made by createSharedCache(), got an object.',
    );
    expect(() => contextBatched(fresh('x'), ok, 5 as never)).toThrow(
      'contextBatched(): options must be an object such as { maxBatchSize: 100 }, got a number (5).',
    );
    const group = fresh('x');
    const getter = contextBatched(group, ok);
    for (const run of [withCacheContext, withNoCacheContext, (fn: () => unknown) => fn()]) {
      run(() => {
        expect(() => getter({ id: 1 } as never)).toThrow(
          `the getter of contextBatched('${group}'): key must be a string, number, bigint, boolean, null, undefined or an array of those, got an object.`,
        );
        expect(() => getter.invalidate(Symbol('s') as never)).toThrow(
          `contextBatched('${group}').invalidate(): key must be`,
        );
        expect(() => getter.prime([[1]] as never, 1)).toThrow(
          `contextBatched('${group}').prime(): key[0] must be`,
        );
      });
    }
  });

  it('warns once when two getters of one group have different batch functions', () => {
    const group = fresh('reused');
    const batch = async (keys: readonly number[]) => keys;
    contextBatched(group, batch);
    contextBatched(group, batch);
    contextCached(group, async (key: number) => key);
    expect(warnings).toEqual([]);
    contextBatched(group, async (keys: readonly number[]) => keys);
    contextBatched(group, async (keys: readonly number[]) => keys);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.slice(1, 3)).toEqual(['ContextCacheWarning', 'CONTEXT_CACHE_GROUP_REUSED']);
    expect(String(warnings[0]?.[0])).toMatch(
      new RegExp(`^contextBatched\\('${group}'\\) was called again with a different loader\\.`),
    );
  });
});

describe('observability', () => {
  it('traces each batch call on context-cache:batch with its group and number of keys', async () => {
    const events: [string, BatchMessage][] = [];
    const handlers = {
      start: (m: BatchMessage) => void events.push(['start', { ...m }]),
      end: (m: BatchMessage) => void events.push(['end', { ...m }]),
      asyncStart: (m: BatchMessage) => void events.push(['asyncStart', { ...m }]),
      asyncEnd: (m: BatchMessage) => void events.push(['asyncEnd', { ...m }]),
      error: (m: BatchMessage) => void events.push(['error', { ...m }]),
    };
    const channel = tracingChannel<unknown, BatchMessage>(diagnosticsChannels.batch);
    channel.subscribe(handlers);
    const group = fresh('traced');
    try {
      const getter = contextBatched(group, async (keys: readonly number[]) =>
        keys.map((key) => (key === 3 ? new Error('x') : key)),
      );
      await withCacheContext(async () => {
        await getter.many([1, 2]);
        await getter(3).catch(() => {});
      });
      const bad = contextBatched(fresh('traced-bad'), async () => {
        throw new Error('down');
      });
      await bad(1).catch(() => {});
    } finally {
      channel.unsubscribe(handlers);
    }
    expect(
      events.map(([name, m]) => [name, m.group.replace(/-\d+$/, ''), m.count, m.failed]),
    ).toEqual([
      ['start', 'traced', 2, undefined],
      ['end', 'traced', 2, undefined],
      ['asyncStart', 'traced', 2, false],
      ['asyncEnd', 'traced', 2, false],
      // A key that resolves to an Error leaves the call itself successful.
      ['start', 'traced', 1, undefined],
      ['end', 'traced', 1, undefined],
      ['asyncStart', 'traced', 1, false],
      ['asyncEnd', 'traced', 1, false],
      ['start', 'traced-bad', 1, undefined],
      ['end', 'traced-bad', 1, undefined],
      ['error', 'traced-bad', 1, true],
      ['asyncStart', 'traced-bad', 1, true],
      ['asyncEnd', 'traced-bad', 1, true],
    ]);
  });
});
