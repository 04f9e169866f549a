import { describe, expect, it } from 'vitest';
import {
  contextCached,
  getContextCache,
  getWithContextCache,
  withCacheContext,
} from '../src/index.js';
import { collected } from './helpers/async.js';

/** Keep `value` in the request cache (what a page would have loaded). */
function setContextDataLike(value: object): void {
  void getWithContextCache('gc-value', 1, () => value);
}

describe('a finished request', () => {
  it('is collectable: nothing the cache created (clock timer, promise chains) holds it', async () => {
    // The lookups arm the cache's coarse clock timer from inside the request; that timer
    // (and the load's promise chain) must not keep the request reachable.
    const refs = await withCacheContext(async () => {
      const value = { big: new Array(1000).fill(1) };
      // Let the clock's reading expire, so the lookups below re-arm it from in here.
      await new Promise((resolve) => setTimeout(resolve, 80));
      await getWithContextCache('v', 1, async () => value);
      await getWithContextCache('v', 1, async () => value);
      const cache = getContextCache();
      cache?.end();
      return { cache: new WeakRef(cache as object), value: new WeakRef(value) };
    });
    expect(await collected(refs.cache)).toBe(true);
    expect(await collected(refs.value)).toBe(true);
  });

  it('drops its values at end() even while the cache object itself is still referenced', async () => {
    let cache: object | undefined;
    const ref = await withCacheContext(async () => {
      const value = { big: new Array(1000).fill(1) };
      await getWithContextCache('v', 1, async () => value);
      await getWithContextCache('v', 1, async () => value); // a hit: the group is remembered
      cache = getContextCache();
      getContextCache()?.end();
      return new WeakRef(value);
    });
    expect(await collected(ref)).toBe(true);
    expect(cache).toBeDefined();
  });

  it('drops its values while a getter timeout is pending on a load that never settles, and is collectable once it fires', async () => {
    // The load's timer holds the load (so that its callers are rejected at the limit even
    // when nothing else holds a load whose resolve was lost), and the load's handlers
    // hold the cache object, for at most the timeout. The request's values go at end().
    const hang = contextCached('gc-timeout', () => new Promise<object>(() => {}), {
      timeout: 300,
    });
    let timedOut: Promise<unknown> | undefined;
    const refs = await withCacheContext(async () => {
      const value = { big: new Array(1000).fill(1) };
      setContextDataLike(value);
      timedOut = hang(1).catch((err: unknown) => err);
      const cache = getContextCache();
      cache?.end();
      return { cache: new WeakRef(cache as object), value: new WeakRef(value) };
    });
    expect(await collected(refs.value)).toBe(true);
    expect(await timedOut).toMatchObject({ code: 'CONTEXT_CACHE_LOAD_TIMEOUT' });
    timedOut = undefined;
    expect(await collected(refs.cache)).toBe(true);
  });

  it('control: a live reference keeps it (the check can fail)', async () => {
    let keep: object | undefined;
    const ref = await withCacheContext(async () => {
      keep = getContextCache();
      return new WeakRef(keep as object);
    });
    expect(await collected(ref)).toBe(false);
    expect(keep).toBeDefined();
  });
});
