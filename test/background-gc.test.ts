import { describe, expect, it } from 'vitest';
import {
  createBackgroundPool,
  currentSignal,
  detach,
  getContextCache,
  getWithContextCache,
  withCacheContext,
} from '../src/index.js';
import { collected, deferred } from './helpers/async.js';

type Start = (task: () => Promise<void>) => void;

/**
 * A request that loads a value into its cache, starts `task` with `start`, and ends.
 * Returns weak references to its cache and to the cached value: nothing else keeps them.
 */
async function request(start: Start, task: () => Promise<void>) {
  const response = new AbortController();
  const refs = await withCacheContext(
    async () => {
      const value = await getWithContextCache('page', 1, () => ({ rows: new Array(1000).fill(0) }));
      start(task);
      return { cache: new WeakRef(getContextCache()!), value: new WeakRef(value) };
    },
    { signal: response.signal },
  );
  response.abort(new Error('The response has finished.'));
  return refs;
}

describe('a background task does not keep the request cache alive', () => {
  it('control: work started in the plain request context keeps the cache reachable', async () => {
    const gate = deferred();
    // The task's `await` is a promise reaction created in the request scope: it carries
    // that scope, so the request cache stays reachable until the task finishes.
    const { cache, value } = await request(
      (task) => void task(),
      async () => {
        await gate.promise;
      },
    );
    expect(await collected(cache)).toBe(false);
    expect(value.deref()).toBeDefined();
    gate.resolve();
  });

  it.each([
    ['runInBackground (a pool)', 'pool'],
    ['detach, not awaited', 'detach'],
  ] as const)(
    '%s: the finished request’s cache is collectable while the task runs',
    async (_, how) => {
      const pool = createBackgroundPool();
      const gate = deferred();
      let finished = false;
      let signal: AbortSignal | undefined;
      const task = async () => {
        signal = currentSignal();
        await gate.promise;
        finished = true;
      };
      const start: Start =
        how === 'pool'
          ? (fn) => pool.run(fn, { name: 'long task', timeout: 60_000 })
          : (fn) => void detach(fn, { timeout: 60_000 });
      const { cache, value } = await request(start, task);

      expect(await collected(cache)).toBe(true);
      expect(await collected(value)).toBe(true);
      expect(finished).toBe(false); // the task still runs, with its own live signal
      expect(signal?.aborted).toBe(false);
      if (how === 'pool') expect(pool.running).toBe(1);

      gate.resolve();
      await pool.drain();
      await new Promise((r) => setImmediate(r));
      expect(finished).toBe(true);
    },
  );
});
