/**
 * The coarse clock behind lifetimes: one `Date.now()` per period while something reads
 * it, and no timer left running once nothing does.
 */

import { AsyncResource } from 'node:async_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { now, RESOLUTION, timerRunning } from '../src/clock.js';
import {
  getContextCache,
  getContextData,
  getWithContextCache,
  getWithContextCacheSync,
  withCacheContext,
  withTransaction,
} from '../src/index.js';

describe('the coarse clock', () => {
  it('stops its timer a period after the last read and starts it again on the next', async () => {
    const first = now();
    expect(timerRunning()).toBe(true);
    expect(Date.now() - first).toBeLessThanOrEqual(RESOLUTION);
    // Two ticks without a read: the first clears the reading, the second stops.
    await sleep(RESOLUTION * 4);
    expect(timerRunning()).toBe(false);
    const later = now(); // a fresh reading, not the one from before the pause
    expect(later - first).toBeGreaterThanOrEqual(RESOLUTION * 3);
    expect(timerRunning()).toBe(true);
  });

  it('stays within a period or so of the real time while it is read continuously', async () => {
    const until = Date.now() + RESOLUTION * 10;
    let reads = 0;
    while (Date.now() < until) {
      // One period, plus slack for ticks that run late on a busy machine; a clock that
      // stopped refreshing would be ten periods old by the end of the loop.
      expect(Date.now() - now()).toBeLessThanOrEqual(RESOLUTION * 4);
      reads++;
      await sleep(3);
    }
    expect(reads).toBeGreaterThan(10);
    expect(timerRunning()).toBe(true);
  });
});

// A cache checks its lifetime once per reading of the clock, and a hit between two
// readings only compares the clock's epoch with the one it last served in. These run on
// the real clock (the lifetime tests swap it for a variable, which makes every check
// read it), so they see what production sees.
describe('a request cache on the real clock', () => {
  let codes: unknown[] = [];
  let messages: string[] = [];
  let emitWarning: typeof process.emitWarning;
  beforeEach(() => {
    codes = [];
    messages = [];
    emitWarning = process.emitWarning;
    process.emitWarning = ((message: unknown, _type: unknown, code: unknown) => {
      codes.push(code);
      messages.push(String(message));
    }) as typeof process.emitWarning;
  });
  afterEach(() => {
    process.emitWarning = emitWarning;
  });

  it('stops serving hits once its lifetime has passed, while hits keep coming', async () => {
    const lifetime = RESOLUTION * 2;
    await withCacheContext(
      async () => {
        let loads = 0;
        const load = (key: number) => {
          loads++;
          return key;
        };
        const opened = Date.now();
        getWithContextCacheSync('clock', 1, load);
        await getWithContextCache('clock-async', 1, load);
        // Hits every few ms, through both paths, until well past the lifetime (plus a
        // period for the clock's resolution and slack for late timers).
        while (Date.now() - opened < lifetime + RESOLUTION * 4) {
          getWithContextCacheSync('clock', 1, load);
          await getWithContextCache('clock-async', 1, load);
          await sleep(3);
        }
        const before = loads;
        expect(getWithContextCacheSync('clock', 1, load)).toBe(1);
        expect(await getWithContextCache('clock-async', 1, load)).toBe(1);
        expect(loads - before).toBe(2); // both passed through to their loaders
        expect(getContextCache()?.expired).toBe(true);
        expect(getContextData('clock', 1)).toBeUndefined();
      },
      { lifetime },
    );
    expect(codes).toEqual(['CONTEXT_CACHE_EXPIRED']);
  });

  it('stops serving at once when it is ended between two hits', async () => {
    await withCacheContext(async () => {
      let loads = 0;
      const load = (key: number) => {
        loads++;
        return key;
      };
      getWithContextCacheSync('clock', 1, load);
      await getWithContextCache('clock-async', 1, load);
      getWithContextCacheSync('clock', 1, load);
      await getWithContextCache('clock-async', 1, load);
      expect(loads).toBe(2);
      const cache = getContextCache();
      cache?.end();
      // Within the same reading of the clock: only the end can make these miss.
      getWithContextCacheSync('clock', 1, load);
      await getWithContextCache('clock-async', 1, load);
      getWithContextCacheSync('clock', 1, load);
      expect(loads).toBe(5);
      expect(cache?.stats()).toMatchObject({ hits: 2, misses: 2, loads: 2 });
    });
    expect(codes).toEqual(['CONTEXT_CACHE_ENDED']);
  });

  it('stops serving at once when its transaction settles, for work that outlives it', () => {
    let loads = 0;
    const load = (key: number) => {
      loads++;
      return key;
    };
    const [cache, later] = withTransaction({ name: 'tx' }, () => {
      getWithContextCacheSync('clock-tx', 1, load);
      getWithContextCacheSync('clock-tx', 1, load);
      // Runs code in the transaction's scope later.
      return [getContextCache(), new AsyncResource('later')] as const;
    });
    expect(loads).toBe(1);
    later.runInAsyncScope(() => {
      getWithContextCacheSync('clock-tx', 1, load);
      getWithContextCacheSync('clock-tx', 1, load);
    });
    expect(loads).toBe(3);
    // Lookups that passed through an ended cache are not its hits or misses.
    expect(cache?.stats()).toMatchObject({ hits: 1, misses: 1, loads: 1 });
    expect(codes).toEqual(['CONTEXT_CACHE_ENDED']);
    // It names what ended: the transaction, not the request (which may still be live).
    expect(messages[0]).toMatch(
      /^getWithContextCacheSync\(\) ran after its withTransaction\(\) function had settled/,
    );
  });
});
