import { AsyncLocalStorage } from 'node:async_hooks';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  type BackgroundError,
  currentSignal,
  detach,
  getContextCache,
  getWithContextCache,
  withCacheContext,
} from '../src/index.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('detach', () => {
  it('runs fn with no request cache and a signal that is not the request signal', async () => {
    const request = new AbortController();
    const seen = await withCacheContext(
      async () => {
        expect(getContextCache()).toBeDefined();
        return detach(async () => {
          let loads = 0;
          await getWithContextCache('g', 1, () => ++loads);
          await getWithContextCache('g', 1, () => ++loads);
          return { cache: getContextCache(), signal: currentSignal(), loads };
        });
      },
      { signal: request.signal },
    );
    expect(seen.cache).toBeUndefined();
    expect(seen.loads).toBe(2); // no caching inside: each lookup loads
    expect(seen.signal).toBeInstanceOf(AbortSignal);
    expect(seen.signal).not.toBe(request.signal);
    expect(seen.signal?.aborted).toBe(false);
  });

  it('keeps every other AsyncLocalStorage value', async () => {
    const trace = new AsyncLocalStorage<string>();
    const seen = await trace.run('trace-42', () =>
      withCacheContext(() => detach(async () => trace.getStore())),
    );
    expect(seen).toBe('trace-42');
  });

  it('is not aborted when the request signal aborts', async () => {
    const request = new AbortController();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const task = withCacheContext(
      () =>
        detach(async () => {
          await gate;
          return currentSignal()?.aborted;
        }),
      { signal: request.signal },
    );
    request.abort(new Error('response finished'));
    release();
    await expect(task).resolves.toBe(false);
  });

  it('resolves with the value of a sync fn and rejects with a thrown or rejected error', async () => {
    await expect(detach(() => 7)).resolves.toBe(7);
    const boom = new Error('boom');
    await expect(
      detach(() => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    await expect(detach(() => Promise.reject(boom))).rejects.toBe(boom);
  });

  it('cuts a hanging task at its own timeout, aborting its signal with an error that names it', async () => {
    vi.useFakeTimers();
    let signal: AbortSignal | undefined;
    const task = detach(
      () => {
        signal = currentSignal();
        return new Promise<never>(() => {});
      },
      { timeout: 250, name: 'write-back' },
    );
    const outcome = task.catch((err: BackgroundError) => err);
    await vi.advanceTimersByTimeAsync(249);
    expect(signal?.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const err = await outcome;
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('BackgroundError');
    expect(err.code).toBe('CONTEXT_CACHE_TASK_TIMEOUT');
    expect(err.task).toBe('write-back');
    expect(err.message).toBe(
      'Background task "write-back" did not finish within its timeout of 250 ms; its signal was aborted.',
    );
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toBe(err);
  });

  it('defaults to a 30 s timeout and names the task after its function, else "anonymous"', async () => {
    vi.useFakeTimers();
    const hang = () => new Promise<never>(() => {});
    const named = detach(hang).catch((err: BackgroundError) => err);
    const anonymous = detach(() => new Promise<never>(() => {})).catch(
      (err: BackgroundError) => err,
    );
    await vi.advanceTimersByTimeAsync(29_999);
    await vi.advanceTimersByTimeAsync(1);
    const [a, b] = await Promise.all([named, anonymous]);
    expect(a.message).toBe(
      'Background task "hang" did not finish within its timeout of 30000 ms; its signal was aborted.',
    );
    expect(b.task).toBe('anonymous');
  });

  it('rejects bad arguments with a TypeError that says what to pass', () => {
    expect(() => detach(42 as never)).toThrow(
      new TypeError(
        'detach(): fn must be the function to run, such as () => cache.set(key, value), got a number (42).',
      ),
    );
    expect(() => detach(() => 1, { timeout: 0 })).toThrow(
      new TypeError(
        'detach(): options.timeout must be a positive number of milliseconds (or Infinity), got a number (0).',
      ),
    );
    expect(() => detach(() => 1, { name: '' })).toThrow(
      new TypeError(
        "detach(): options.name must be a non-empty string such as 'write-back', got an empty string.",
      ),
    );
    expect(() => detach(() => 1, 'x' as never)).toThrow(TypeError);
  });
});
