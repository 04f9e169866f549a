import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { setClock } from '../src/clock.js';
import {
  contextCached,
  getContextCache,
  getContextData,
  getWithContextCache,
  getWithContextCacheSync,
  hasContextData,
  setContextData,
  withCacheContext,
} from '../src/index.js';

// The clock is swapped for a variable, as Gitea's tests swap `timeNow`: no sleeping.
let time = 1_000_000;
let warnings: unknown[][] = [];
let emitWarning: typeof process.emitWarning;

beforeEach(() => {
  time = 1_000_000;
  setClock(() => time);
  warnings = [];
  emitWarning = process.emitWarning;
  process.emitWarning = ((...args: unknown[]) => {
    warnings.push(args.slice(0, 3));
  }) as typeof process.emitWarning;
});
afterEach(() => {
  setClock(undefined);
  process.emitWarning = emitWarning;
});

const EXPIRED_TEXT =
  'used a request cache more than 300000 ms after it was created, past its lifetime, so lookups now pass through to their loaders. This is likely long-running work inside a request cache: run it in detach() or withNoCacheContext().';

describe('lifetime', () => {
  it('serves for 5 minutes by default; past it reads miss, writes drop, one warning per cache', async () => {
    await withCacheContext(async () => {
      const loader = vi.fn(async (id: number) => `user ${id}`);
      await getWithContextCache('user', 1, loader);
      time += 5 * 60 * 1000 - 1;
      await getWithContextCache('user', 1, loader);
      expect(loader).toHaveBeenCalledTimes(1);
      expect(warnings).toEqual([]);

      time += 1;
      await getWithContextCache('user', 1, loader);
      await getWithContextCache('user', 1, loader);
      expect(loader).toHaveBeenCalledTimes(3);
      expect(getWithContextCacheSync('user', 2, () => 'x')).toBe('x');
      expect(getWithContextCacheSync('user', 2, () => 'y')).toBe('y');
      setContextData('user', 3, 'dropped');
      expect(hasContextData('user', 3)).toBe(false);
      expect(getContextData('user', 1)).toBeUndefined();
      expect(getContextCache()?.expired).toBe(true);
      expect(warnings).toEqual([
        [`getWithContextCache() ${EXPIRED_TEXT}`, 'ContextCacheWarning', 'CONTEXT_CACHE_EXPIRED'],
      ]);
      // Lookups past the lifetime still count: as misses and loads.
      expect(getContextCache()?.stats()).toMatchObject({ hits: 1, misses: 5, loads: 5 });
    });
  });

  it('counts the failures of lookups that pass through past the lifetime', async () => {
    await withCacheContext(async () => {
      time += 5 * 60 * 1000;
      await expect(
        getWithContextCache('failing', 1, async () => {
          throw new Error('async failure');
        }),
      ).rejects.toThrow('async failure');
      await expect(
        getWithContextCache('failing', 2, () => {
          throw new Error('sync failure');
        }),
      ).rejects.toThrow('sync failure');
      expect(getContextCache()?.stats()).toMatchObject({ misses: 2, loads: 2, errors: 2 });
    });
  });

  it('warns once per cache, not once per process', () => {
    for (let i = 0; i < 2; i++) {
      withCacheContext(() => {
        time += 5 * 60 * 1000;
        getWithContextCacheSync('user', 1, () => 1);
        getWithContextCacheSync('user', 1, () => 1);
      });
    }
    expect(warnings.map((w) => w[2])).toEqual(['CONTEXT_CACHE_EXPIRED', 'CONTEXT_CACHE_EXPIRED']);
  });

  it('takes a lifetime option', async () => {
    await withCacheContext(
      async () => {
        const loader = vi.fn(async () => 1);
        await getWithContextCache('n', 1, loader);
        time += 999;
        await getWithContextCache('n', 1, loader);
        time += 1;
        await getWithContextCache('n', 1, loader);
        expect(loader).toHaveBeenCalledTimes(2);
        expect(String(warnings[0]?.[0])).toContain('more than 1000 ms after');
      },
      { lifetime: 1000 },
    );
  });
});

describe('end()', () => {
  const ENDED_TEXT =
    'ran after its request had ended, so nothing was cached: this code outlives the response. Run work that continues after the response in detach() or runInBackground(), which give it its own scope and timeout.';

  it('names the getter that ran after the end by its group', async () => {
    const getUser = contextCached('ended user', async (id: number) => `user ${id}`);
    await withCacheContext(async () => {
      getContextCache()?.end();
      expect(await getUser(1)).toBe('user 1');
    });
    expect(warnings.map((w) => String(w[0]))).toEqual([
      `the getter of contextCached('ended user') ${ENDED_TEXT}`,
    ]);
  });

  it('drops the data at once; later lookups pass through with one CONTEXT_CACHE_ENDED warning', async () => {
    let leftover: Promise<void> | undefined;
    const loader = vi.fn(async (id: number) => `user ${id}`);
    let stats: unknown;
    await withCacheContext(async () => {
      const cache = getContextCache();
      await getWithContextCache('user', 1, loader);
      await getWithContextCache('user', 1, loader);
      // A timer started by the request that fires after the response.
      leftover = new Promise<void>((resolve) => {
        setTimeout(async () => {
          expect(getContextCache()).toBeUndefined(); // no warning for this
          expect(warnings).toEqual([]);
          await getWithContextCache('user', 1, loader);
          await getWithContextCache('user', 1, loader);
          expect(getWithContextCacheSync('user', 2, () => 'sync')).toBe('sync');
          setContextData('user', 3, 'dropped');
          expect(getContextData('user', 3)).toBeUndefined();
          resolve();
        }, 1);
      });
      stats = cache?.stats();
      cache?.end();
      cache?.end(); // twice is a no-op
      expect(cache?.size).toBe(0);
      expect(cache?.ended).toBe(true);
      expect(cache?.stats()).toEqual(stats); // final counts after the end
    });
    await leftover;
    expect(loader).toHaveBeenCalledTimes(3);
    expect(warnings).toEqual([
      [`getWithContextCache() ${ENDED_TEXT}`, 'ContextCacheWarning', 'CONTEXT_CACHE_ENDED'],
    ]);
    expect(stats).toEqual({
      hits: 1,
      joins: 0,
      misses: 1,
      loads: 1,
      errors: 0,
      evictions: 0,
      batches: 0,
    });
  });

  it('keeps the final counts when a loader ends the cache and then fails', async () => {
    await withCacheContext(async () => {
      const cache = getContextCache();
      const endThenThrow = () => {
        cache?.end();
        throw new Error('failed after ending');
      };
      await expect(getWithContextCache('user', 1, endThenThrow)).rejects.toThrow('failed after');
      expect(cache?.stats()).toMatchObject({ misses: 1, loads: 1, errors: 0 });
    });
    await withCacheContext(async () => {
      const cache = getContextCache();
      expect(() =>
        getWithContextCacheSync('user', 1, () => {
          cache?.end();
          throw new Error('failed after ending');
        }),
      ).toThrow('failed after');
      expect(cache?.stats()).toMatchObject({ misses: 1, loads: 1, errors: 0 });
    });
  });

  it('loads in flight at end() settle for their waiters; their results are not stored', async () => {
    await withCacheContext(async () => {
      const cache = getContextCache();
      let resolve!: (v: string) => void;
      const first = getWithContextCache('user', 1, () => new Promise<string>((r) => (resolve = r)));
      const joined = getWithContextCache('user', 1, async () => 'never');
      cache?.end();
      resolve('value');
      expect(await first).toBe('value');
      expect(await joined).toBe('value');
      // The scope now opens a new cache for a new withCacheContext.
      withCacheContext(() => {
        const fresh = getContextCache();
        expect(fresh).toBeDefined();
        expect(fresh).not.toBe(cache);
        expect(getContextData('user', 1)).toBeUndefined();
      });
    });
  });
});
