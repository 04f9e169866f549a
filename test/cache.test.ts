import { describe, expect, it, vi } from 'vitest';
import {
  contextBatched,
  contextCached,
  currentSignal,
  getContextCache,
  getContextData,
  getWithContextCache,
  getWithContextCacheSync,
  hasContextData,
  removeContextData,
  setContextData,
  withCacheContext,
  withNoCacheContext,
} from '../src/index.js';
import { deferred, noUnhandledRejections } from './helpers/async.js';

noUnhandledRejections();

describe('no scope, no caching', () => {
  it('calls the loader every time outside a cache context', async () => {
    const loader = vi.fn(async (id: number) => ({ id }));
    expect(await getWithContextCache('user', 1, loader)).toEqual({ id: 1 });
    expect(await getWithContextCache('user', 1, loader)).toEqual({ id: 1 });
    expect(getWithContextCacheSync('user', 1, (id) => id + 1)).toBe(2);
    expect(loader).toHaveBeenCalledTimes(2);
    expect(getContextCache()).toBeUndefined();
  });

  it('makes setContextData a no-op and reads nothing', () => {
    setContextData('setting', 'theme', 'dark');
    expect(getContextData('setting', 'theme')).toBeUndefined();
    expect(hasContextData('setting', 'theme')).toBe(false);
    removeContextData('setting', 'theme');
  });
});

/** A loader per group that records `group key` in `loads` and returns the same text. */
function recordingLoader(loads: string[]) {
  return (group: string) => (key: number) => {
    loads.push(`${group} ${key}`);
    return `${group} ${key}`;
  };
}

describe('in-flight dedup', () => {
  it('hands every concurrent caller the same pending promise and runs the loader once', async () => {
    await withCacheContext(async () => {
      const d = deferred<string>();
      const loader = vi.fn(() => d.promise);
      const calls = Array.from({ length: 100 }, () => getWithContextCache('user', 7, loader));
      expect(new Set(calls).size).toBe(1);
      expect(loader).toHaveBeenCalledTimes(1);
      d.resolve('ada');
      expect(await Promise.all(calls)).toEqual(Array(100).fill('ada'));
      // Later calls are hits on the same stored promise.
      expect(getWithContextCache('user', 7, loader)).toBe(calls[0]);
      expect(loader).toHaveBeenCalledTimes(1);
      expect(getContextCache()?.stats()).toEqual({
        hits: 1,
        joins: 99,
        misses: 1,
        loads: 1,
        errors: 0,
        evictions: 0,
        batches: 0,
      });
    });
  });

  it('passes the key and the request signal to the loader', async () => {
    const controller = new AbortController();
    await withCacheContext(
      async () => {
        const loader = vi.fn(async (key: number, ctx: { signal?: AbortSignal }) => {
          expect(ctx.signal).toBe(controller.signal);
          return key * 2;
        });
        expect(await getWithContextCache('double', 21, loader)).toBe(42);
        expect(loader).toHaveBeenCalledWith(21, { signal: controller.signal });
        expect(currentSignal()).toBe(controller.signal);
      },
      { signal: controller.signal },
    );
  });

  it('keeps groups apart', async () => {
    await withCacheContext(async () => {
      expect(await getWithContextCache('user', 1, async () => 'user 1')).toBe('user 1');
      expect(await getWithContextCache('repo', 1, async () => 'repo 1')).toBe('repo 1');
      expect(await getWithContextCache('user', 1, async () => 'other')).toBe('user 1');
    });
  });

  it('keeps every group as lookups move between groups, sync and async alike', async () => {
    await withCacheContext(async () => {
      const loads: string[] = [];
      const load = recordingLoader(loads);
      // The first group, a second one, back to the first, then a third, twice over.
      for (let round = 0; round < 2; round++) {
        for (const group of ['user', 'repo', 'user', 'org']) {
          expect(await getWithContextCache(group, 1, load(group))).toBe(`${group} 1`);
          expect(getWithContextCacheSync(group, 2, load(group))).toBe(`${group} 2`);
          expect(await getWithContextCache(group, 2, load(group))).toBe(`${group} 2`);
          expect(getWithContextCacheSync(group, 1, load(group))).toBe(`${group} 1`);
        }
      }
      expect(loads).toEqual(['user 1', 'user 2', 'repo 1', 'repo 2', 'org 1', 'org 2']);
      expect(getContextCache()?.stats()).toMatchObject({ misses: 6, loads: 6, hits: 26 });
      expect(getContextCache()?.size).toBe(6);
      // A hit still checks what the caller passed.
      expect(() => getWithContextCache('org', 1, 'not a loader' as never)).toThrow(
        /loader must be a function/,
      );
      expect(() => getWithContextCacheSync('org', 1, 5 as never)).toThrow(
        /loader must be a function/,
      );
      expect(() => getWithContextCache('org', Symbol('k') as never, load('org'))).toThrow(
        /key must be/,
      );
    });
  });

  it('keeps every group apart when getters of two or three groups are called in turn', async () => {
    await withCacheContext(async () => {
      const loads: string[] = [];
      const load = recordingLoader(loads);
      const byBatch = contextBatched('turns-team', async (keys: readonly number[]) => {
        loads.push(`turns-team ${keys.join(',')}`);
        return keys.map((key) => `turns-team ${key}`);
      });
      // Two groups in turn, call by call, then three in turn, then the batched one too.
      const orders = [
        ['turns-user', 'turns-repo'],
        ['turns-user', 'turns-repo', 'turns-org'],
        ['turns-repo', 'turns-team', 'turns-user', 'turns-team'],
      ];
      for (const order of orders) {
        for (let i = 0; i < 6; i++) {
          for (const group of order) {
            const key = 1 + (i % 2);
            const want = `${group} ${key}`;
            if (group === 'turns-team') expect(await byBatch(key)).toBe(want);
            else if (i % 3 === 0)
              expect(getWithContextCacheSync(group, key, load(group))).toBe(want);
            else expect(await getWithContextCache(group, key, load(group))).toBe(want);
          }
        }
      }
      expect([...loads].sort()).toEqual(
        [
          'turns-org 1',
          'turns-org 2',
          'turns-repo 1',
          'turns-repo 2',
          'turns-team 1',
          'turns-team 2',
          'turns-user 1',
          'turns-user 2',
        ].sort(),
      );
      // 12 + 18 + 24 lookups, 8 of them the first of their key.
      expect(getContextCache()?.stats()).toMatchObject({ misses: 8, loads: 8, hits: 46 });
      // With two groups in the slots, a wrong group or loader is still an error.
      expect(() => getWithContextCacheSync('', 1, load(''))).toThrow(/group/);
      expect(() => getWithContextCache('turns-user', 1, 5 as never)).toThrow(
        /loader must be a function/,
      );
    });
  });

  it('caches a loader that returns a plain value or a thenable', async () => {
    await withCacheContext(async () => {
      const plain = vi.fn(() => 5);
      expect(await getWithContextCache('n', 1, plain)).toBe(5);
      expect(await getWithContextCache('n', 1, plain)).toBe(5);
      expect(plain).toHaveBeenCalledTimes(1);
      const thenable = vi.fn(
        () =>
          ({
            // biome-ignore lint/suspicious/noThenProperty: a PromiseLike on purpose
            then: (resolve: (v: number) => void) => resolve(6),
          }) as unknown as PromiseLike<number>,
      );
      expect(await getWithContextCache('n', 2, thenable)).toBe(6);
      expect(await getWithContextCache('n', 2, thenable)).toBe(6);
      expect(thenable).toHaveBeenCalledTimes(1);
    });
  });
});

describe('errors are not cached', () => {
  it('rejects every waiter with the loader error, removes the entry, loads again next time', async () => {
    await withCacheContext(async () => {
      const d = deferred<string>();
      const boom = new Error('db down');
      let calls = 0;
      const loader = () => (++calls === 1 ? d.promise : Promise.resolve('recovered'));
      const waiters = Array.from({ length: 5 }, () => getWithContextCache('user', 1, loader));
      d.reject(boom);
      const results = await Promise.allSettled(waiters);
      for (const r of results) expect(r).toEqual({ status: 'rejected', reason: boom });
      expect(hasContextData('user', 1)).toBe(false);
      expect(await getWithContextCache('user', 1, loader)).toBe('recovered');
      expect(calls).toBe(2);
      expect(getContextCache()?.stats()).toMatchObject({ errors: 1, loads: 2, joins: 4 });
    });
  });

  it('turns a loader that throws synchronously into a rejected promise', async () => {
    await withCacheContext(async () => {
      const boom = new Error('sync');
      let result: Promise<unknown> | undefined;
      expect(() => {
        result = getWithContextCache('user', 1, () => {
          throw boom;
        });
      }).not.toThrow();
      await expect(result).rejects.toBe(boom);
      expect(await getWithContextCache('user', 1, () => 'ok')).toBe('ok');
    });
    // Also outside any scope.
    await expect(
      getWithContextCache('user', 1, () => {
        throw new Error('outside');
      }),
    ).rejects.toThrow('outside');
  });

  it('produces no unhandled rejection when nobody awaits a failed shared load', async () => {
    await withCacheContext(async () => {
      const d = deferred<never>();
      const first = getWithContextCache('user', 1, () => d.promise);
      const second = getWithContextCache('user', 1, () => d.promise);
      d.reject(new Error('nobody listens here'));
      await Promise.allSettled([first, second]);
    });
    // afterEach asserts no unhandledRejection was seen.
  });

  it('rethrows a sync loader error and stores nothing', () => {
    withCacheContext(() => {
      expect(() =>
        getWithContextCacheSync('user', 1, () => {
          throw new Error('sync boom');
        }),
      ).toThrow('sync boom');
      expect(hasContextData('user', 1)).toBe(false);
      expect(getContextCache()?.stats()).toMatchObject({ errors: 1, misses: 1, loads: 1 });
    });
  });
});

describe('values', () => {
  it('caches undefined and null: hits are decided by presence', async () => {
    await withCacheContext(async () => {
      const loader = vi.fn(async (key: string) => (key === 'u' ? undefined : null));
      expect(await getWithContextCache('v', 'u', loader)).toBeUndefined();
      expect(await getWithContextCache('v', 'u', loader)).toBeUndefined();
      expect(await getWithContextCache('v', 'n', loader)).toBeNull();
      expect(await getWithContextCache('v', 'n', loader)).toBeNull();
      expect(loader).toHaveBeenCalledTimes(2);
      expect(hasContextData('v', 'u')).toBe(true);
      const sync = vi.fn(() => undefined);
      getWithContextCacheSync('s', 1, sync);
      getWithContextCacheSync('s', 1, sync);
      expect(sync).toHaveBeenCalledTimes(1);
    });
  });
});

describe('sync and async share entries', () => {
  it('a value loaded by either variant is seen by the other once settled', async () => {
    await withCacheContext(async () => {
      expect(getWithContextCacheSync('user', 1, () => 'from sync')).toBe('from sync');
      expect(await getWithContextCache('user', 1, async () => 'from async')).toBe('from sync');
      expect(await getWithContextCache('user', 2, async () => 'from async')).toBe('from async');
      expect(getWithContextCacheSync('user', 2, () => 'from sync')).toBe('from async');
      setContextData('user', 3, 'set');
      expect(await getWithContextCache('user', 3, async () => 'x')).toBe('set');
      expect(getWithContextCacheSync('user', 3, () => 'x')).toBe('set');
    });
  });

  it('a sync call that meets a pending load runs its own loader (a miss and a load)', async () => {
    await withCacheContext(async () => {
      const d = deferred<string>();
      const pending = getWithContextCache('user', 1, () => d.promise);
      expect(getWithContextCacheSync('user', 1, () => 'sync value')).toBe('sync value');
      expect(getContextCache()?.stats()).toMatchObject({ misses: 2, loads: 2 });
      d.resolve('async value');
      // The pending callers still get their load's value…
      expect(await pending).toBe('async value');
      // …and the sync result, stored later, is what the cache holds.
      expect(getContextData('user', 1)).toBe('sync value');
    });
  });
});

describe('get/has/set/removeContextData', () => {
  it('reads, writes and removes values in the request cache', async () => {
    await withCacheContext(async () => {
      expect(hasContextData('setting', 'theme')).toBe(false);
      setContextData('setting', 'theme', 'dark');
      expect(hasContextData('setting', 'theme')).toBe(true);
      expect(getContextData('setting', 'theme')).toBe('dark');
      setContextData('setting', 'theme', 'light');
      expect(getContextData('setting', 'theme')).toBe('light');
      removeContextData('setting', 'theme');
      expect(hasContextData('setting', 'theme')).toBe(false);
      expect(getContextData('setting', 'theme')).toBeUndefined();
      // Data calls do not count in stats.
      expect(getContextCache()?.stats()).toMatchObject({ hits: 0, misses: 0 });
    });
  });

  it('a pending load has no value yet; removing it lets the next call load again', async () => {
    await withCacheContext(async () => {
      const d = deferred<string>();
      const first = getWithContextCache('user', 1, () => d.promise);
      expect(hasContextData('user', 1)).toBe(false);
      expect(getContextData('user', 1)).toBeUndefined();
      removeContextData('user', 1);
      const second = getWithContextCache('user', 1, async () => 'fresh');
      expect(second).not.toBe(first);
      d.resolve('stale');
      expect(await first).toBe('stale');
      expect(await second).toBe('fresh');
      expect(getContextData('user', 1)).toBe('fresh');
    });
  });
});

describe('contextCached', () => {
  it('wraps a getter: one load per key per request, typed by its loader', async () => {
    let loads = 0;
    const getUser = contextCached('user', async (id: number) => {
      loads++;
      return { id, name: `user${id}` };
    });
    await withCacheContext(async () => {
      const [a, b] = await Promise.all([getUser(1), getUser(1)]);
      expect(a).toBe(b);
      expect((await getUser(1)).name).toBe('user1');
      expect(loads).toBe(1);
    });
    await withCacheContext(async () => {
      await getUser(1);
      expect(loads).toBe(2);
    });
  });

  it('invalidate(key) drops the key so the same request reads its own write', async () => {
    const names = new Map([[1, 'old']]);
    const getUser = contextCached('user name', async (id: number) => names.get(id));
    await withCacheContext(async () => {
      expect(await getUser(1)).toBe('old');
      names.set(1, 'new');
      expect(await getUser(1)).toBe('old');
      await expect(getUser.invalidate(1)).resolves.toBeUndefined();
      expect(await getUser(1)).toBe('new');
    });
  });

  it('prime(key, value) stores a value, replacing one already there', async () => {
    const loader = vi.fn(async (id: number) => `loaded ${id}`);
    const getUser = contextCached('user primed', loader);
    await withCacheContext(async () => {
      getUser.prime(1, 'primed');
      expect(await getUser(1)).toBe('primed');
      expect(await getUser(2)).toBe('loaded 2');
      getUser.prime(2, 'replaced');
      expect(await getUser(2)).toBe('replaced');
      expect(loader).toHaveBeenCalledTimes(1);
    });
    // Outside a scope prime is a no-op, invalidate resolves.
    getUser.prime(1, 'nowhere');
    await getUser.invalidate(1);
    expect(await getUser(1)).toBe('loaded 1');
  });

  it('rejects an options.shared that is not a shared cache', () => {
    expect(() =>
      // @ts-expect-error: not a SharedCache
      contextCached('user', async (id: number) => id, { shared: {} }),
    ).toThrow(
      new TypeError(
        'contextCached(): options.shared must be a cache made by createSharedCache(), got an object.',
      ),
    );
  });
});

describe('maxEntries', () => {
  it('evicts the oldest inserted entries first and counts evictions', async () => {
    await withCacheContext(
      async () => {
        for (let i = 0; i < 5; i++) await getWithContextCache('n', i, async () => i);
        expect(getContextCache()?.size).toBe(3);
        expect(hasContextData('n', 0)).toBe(false);
        expect(hasContextData('n', 1)).toBe(false);
        expect([2, 3, 4].map((i) => hasContextData('n', i))).toEqual([true, true, true]);
        expect(getContextCache()?.stats().evictions).toBe(2);
      },
      { maxEntries: 3 },
    );
  });

  it('bounds the cache across groups and key kinds, and re-setting keeps a key in place', () => {
    withCacheContext(
      () => {
        setContextData('a', 1, 'a1');
        setContextData('b', ['x', 1], 'bx');
        setContextData('a', 1, 'a1 again'); // keeps its (oldest) place
        setContextData('c', 'k', 'ck');
        expect(hasContextData('a', 1)).toBe(false);
        expect(getContextData('b', ['x', 1])).toBe('bx');
        expect(getContextData('c', 'k')).toBe('ck');
        // A removed key that comes back goes to the end of the order.
        removeContextData('b', ['x', 1]);
        setContextData('b', ['x', 1], 'back');
        setContextData('d', 0, 'd0');
        expect(hasContextData('c', 'k')).toBe(false);
        expect(getContextData('b', ['x', 1])).toBe('back');
        expect(getContextCache()?.stats().evictions).toBe(2);
        expect(getContextCache()?.size).toBe(2);
      },
      { maxEntries: 2 },
    );
  });
});

describe('eviction order under many operations', () => {
  it('always keeps the newest maxEntries keys, as a list in insertion order would', () => {
    // A small seeded generator, so a failure replays.
    let seed = 42;
    const random = (n: number) => {
      // mulberry32
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
    };
    const groups = ['a', 'b', 'c'];
    const universe: [string, number | (number | string)[]][] = [];
    for (const group of groups) {
      for (let k = 0; k < 40; k++) universe.push([group, group === 'c' ? [k, 'x'] : k]);
    }
    const id = ([group, key]: [string, unknown]) => `${group}:${JSON.stringify(key)}`;
    const max = 25;
    withCacheContext(
      () => {
        const model: string[] = []; // keys in insertion order, oldest first
        let evictions = 0;
        for (let step = 0; step < 6000; step++) {
          if (step === 3000) {
            // Churn: keys set and removed at once leave nothing, but many stale places
            // in the eviction order, which is then rebuilt.
            for (let i = 0; i < 2000; i++) {
              setContextData('churn', i, i);
              removeContextData('churn', i);
            }
          }
          const item = universe[random(universe.length)] as [string, number | (number | string)[]];
          const [group, key] = item;
          const name = id(item);
          const at = model.indexOf(name);
          const op = random(10);
          if (op < 2) {
            removeContextData(group, key);
            if (at >= 0) model.splice(at, 1);
          } else if (op < 6) {
            setContextData(group, key, step); // a present key keeps its place
            if (at < 0) model.push(name);
          } else {
            getWithContextCacheSync(group, key, () => step);
            if (at < 0) model.push(name);
          }
          while (model.length > max) {
            model.shift();
            evictions++;
          }
          if (step % 50 === 0 || step > 5900) {
            const held = universe.filter(([g, k]) => hasContextData(g, k)).map(id);
            expect(held.sort()).toEqual([...model].sort());
          }
        }
        expect(getContextCache()?.size).toBe(model.length);
        expect(getContextCache()?.stats().evictions).toBe(evictions);
      },
      { maxEntries: max },
    );
  });
});

describe('a set while a load of the key runs', () => {
  it.each([
    { when: 'before the cache first reached its bound', before: 0 },
    { when: 'after the cache went past its bound', before: 3 },
  ])(
    'wins over the load, and keeps the key in its place in the eviction order, $when',
    async ({ before }) => {
      await withCacheContext(
        async () => {
          for (let i = 0; i < before; i++) setContextData('x', i, i);
          for (let i = 0; i < before; i++) removeContextData('x', i);
          const evicted = getContextCache()?.stats().evictions ?? 0;
          let finish!: (value: string) => void;
          const loading = getWithContextCache(
            'a',
            1,
            () =>
              new Promise<string>((resolve) => {
                finish = resolve;
              }),
          );
          setContextData('b', 1, 'b1');
          setContextData('a', 1, 'set'); // replaces the load in flight, oldest still
          finish('loaded');
          expect(await loading).toBe('loaded'); // its callers get what it loaded
          expect(getContextData('a', 1)).toBe('set');
          expect(await getWithContextCache('a', 1, async () => 'again')).toBe('set');
          setContextData('c', 1, 'c1');
          expect(hasContextData('a', 1)).toBe(false);
          expect(getContextData('b', 1)).toBe('b1');
          expect(getContextCache()?.stats().evictions).toBe(evicted + 1);
        },
        { maxEntries: 2 },
      );
    },
  );
});

describe('loaders that touch their own key', () => {
  it('a loader that stores its own key while running leaves one entry, and eviction still ends', async () => {
    await withCacheContext(
      async () => {
        const value = await getWithContextCache('user', 1, () => {
          setContextData('user', 1, 'set by the loader');
          return Promise.resolve('loaded');
        });
        expect(value).toBe('loaded');
        expect(getContextCache()?.size).toBe(1);
        expect(
          getWithContextCacheSync('user', 2, () => {
            setContextData('user', 2, 'inner');
            return 'outer';
          }),
        ).toBe('outer');
        expect(getContextData('user', 2)).toBe('outer');
        expect(getContextCache()?.size).toBe(2);
        // Past maxEntries the oldest go, and the loop ends.
        for (let i = 3; i < 10; i++) setContextData('user', i, i);
        expect(getContextCache()?.size).toBe(2);
        expect(getContextData('user', 9)).toBe(9);
      },
      { maxEntries: 2 },
    );
  });

  it('a sync loader that removes its own pending key still stores its value', async () => {
    await withCacheContext(async () => {
      const pending = getWithContextCache(
        'user',
        1,
        () => new Promise((r) => setTimeout(r, 1, 'async')),
      );
      expect(
        getWithContextCacheSync('user', 1, () => {
          removeContextData('user', 1);
          return 'sync';
        }),
      ).toBe('sync');
      expect(getContextData('user', 1)).toBe('sync');
      expect(await pending).toBe('async');
      expect(getContextData('user', 1)).toBe('sync');
    });
  });
});

describe('withCacheContext', () => {
  it('returns what fn returns and opens one cache per call at the top level', async () => {
    const a = withCacheContext(() => getContextCache());
    const b = withCacheContext(() => getContextCache());
    expect(a).toBeDefined();
    expect(a).not.toBe(b);
    expect(await withCacheContext(async () => 42)).toBe(42);
  });

  it('a nested call reuses the active scope and ignores its options, signal included', () => {
    const outer = new AbortController();
    const inner = new AbortController();
    withCacheContext(
      () => {
        const cache = getContextCache();
        withCacheContext(
          () => {
            expect(getContextCache()).toBe(cache);
            expect(currentSignal()).toBe(outer.signal);
          },
          { signal: inner.signal, maxEntries: 1 },
        );
      },
      { signal: outer.signal },
    );
  });

  it('without a signal it inherits the enclosing scope signal; withNoCacheContext keeps it', () => {
    const controller = new AbortController();
    expect(currentSignal()).toBeUndefined();
    withCacheContext(
      () => {
        withNoCacheContext(() => {
          expect(currentSignal()).toBe(controller.signal);
          withCacheContext(() => {
            expect(getContextCache()).toBeDefined();
            expect(currentSignal()).toBe(controller.signal);
          });
        });
      },
      { signal: controller.signal },
    );
  });

  it('takes a function for the signal and calls it once, only when the signal is needed', async () => {
    const controller = new AbortController();
    const makeSignal = vi.fn(() => controller.signal);
    await withCacheContext(
      async () => {
        // Lookups whose loaders ignore ctx.signal never make it.
        await getWithContextCache('user', 1, async (id) => id);
        await getWithContextCache('user', 1, async (id) => id);
        expect(makeSignal).not.toHaveBeenCalled();
        // A loader that reads it, currentSignal() and nested scopes all get the same one.
        await getWithContextCache('user', 2, async (_id, ctx) => {
          expect(ctx.signal).toBe(controller.signal);
          return 2;
        });
        expect(currentSignal()).toBe(controller.signal);
        withNoCacheContext(() => expect(currentSignal()).toBe(controller.signal));
        expect(makeSignal).toHaveBeenCalledTimes(1);
      },
      { signal: makeSignal },
    );
    withCacheContext(
      () => {
        expect(makeSignal).toHaveBeenCalledTimes(1);
      },
      { signal: makeSignal },
    );
  });

  it('stats() returns exactly the seven counters', () => {
    withCacheContext(() => {
      expect(Object.keys(getContextCache()?.stats() ?? {}).sort()).toEqual(
        ['batches', 'errors', 'evictions', 'hits', 'joins', 'loads', 'misses'].sort(),
      );
    });
  });
});
