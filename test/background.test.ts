import { AsyncLocalStorage } from 'node:async_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type BackgroundError,
  createBackgroundPool,
  currentSignal,
  detach,
  drainBackground,
  getContextCache,
  getWithContextCache,
  runInBackground,
  withCacheContext,
  withNoCacheContext,
} from '../src/index.js';

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A write to a slow store that honours its signal, as a database or Redis client does. */
function slowWrite(
  store: Map<string, string>,
  key: string,
  value: string,
  ready: Promise<void>,
  signal: AbortSignal | undefined,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => reject(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    void ready.then(() => {
      signal?.removeEventListener('abort', onAbort);
      if (signal?.aborted) return;
      store.set(key, value);
      resolve();
    });
  });
}

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeAll(() => {
  process.on('unhandledRejection', onUnhandled);
});
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
});
afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  // Let Node report any rejection nobody handled, then assert there was none.
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  expect(unhandled).toEqual([]);
  expect(await drainBackground({ timeout: 1000 })).toEqual({ pending: [] });
});

describe('the cancelled async cache update (the bug this layer exists for)', () => {
  it('with the plain request context, the write-back is aborted when the response finishes', async () => {
    const store = new Map<string, string>();
    const request = new AbortController();
    const storeReady = deferred();
    let writeBack!: Promise<void>;
    await withCacheContext(
      async () => {
        // The request answers at once and leaves the write-back running on its own.
        writeBack = slowWrite(store, 'user:1', 'Ada', storeReady.promise, currentSignal());
        writeBack.catch(() => {});
      },
      { signal: request.signal },
    );
    request.abort(new Error('The response has finished.'));
    storeReady.resolve();
    await expect(writeBack).rejects.toThrow('The response has finished.');
    expect(store.has('user:1')).toBe(false);
  });

  it('with runInBackground, the write-back completes after the request signal aborts', async () => {
    const store = new Map<string, string>();
    const request = new AbortController();
    const storeReady = deferred();
    const onError = vi.fn();
    await withCacheContext(
      async () => {
        runInBackground(
          () => slowWrite(store, 'user:1', 'Ada', storeReady.promise, currentSignal()),
          { name: 'user write-back', onError },
        );
      },
      { signal: request.signal },
    );
    request.abort(new Error('The response has finished.'));
    storeReady.resolve();
    expect(await drainBackground()).toEqual({ pending: [] });
    expect(store.get('user:1')).toBe('Ada');
    expect(onError).not.toHaveBeenCalled();
  });
});

describe('a background task started inside a request', () => {
  it('sees no request cache and not the request signal, but sees other AsyncLocalStorage values', async () => {
    const trace = new AsyncLocalStorage<string>();
    const request = new AbortController();
    const seen = deferred<{
      cache: unknown;
      loads: number;
      signal: AbortSignal | undefined;
      trace: string | undefined;
    }>();
    await trace.run('trace-7', () =>
      withCacheContext(
        async () => {
          await getWithContextCache('user', 1, () => 'cached in the request');
          runInBackground(async () => {
            let loads = 0;
            await getWithContextCache('user', 1, () => ++loads);
            await getWithContextCache('user', 1, () => ++loads);
            seen.resolve({
              cache: getContextCache(),
              loads,
              signal: currentSignal(),
              trace: trace.getStore(),
            });
          });
        },
        { signal: request.signal },
      ),
    );
    const inside = await seen.promise;
    expect(inside.cache).toBeUndefined();
    expect(inside.loads).toBe(2);
    expect(inside.signal).toBeInstanceOf(AbortSignal);
    expect(inside.signal).not.toBe(request.signal);
    expect(inside.trace).toBe('trace-7');
  });

  it('keeps its submitter’s AsyncLocalStorage values when it waits in the queue', async () => {
    const trace = new AsyncLocalStorage<string>();
    const pool = createBackgroundPool({ concurrency: 1 });
    const first = deferred();
    const seen: (string | undefined)[] = [];
    trace.run('request-a', () =>
      pool.run(async () => {
        await first.promise;
        seen.push(trace.getStore());
      }),
    );
    trace.run('request-b', () =>
      withCacheContext(() =>
        pool.run(() => {
          seen.push(trace.getStore());
          seen.push(getContextCache() === undefined ? 'no cache' : 'cache');
        }),
      ),
    );
    expect(pool.queued).toBe(1);
    first.resolve();
    await pool.drain();
    // The queued task was started by the first one finishing, yet runs in its own context.
    expect(seen).toEqual(['request-a', 'request-b', 'no cache']);
  });
});

describe('signals across nesting', () => {
  it('a nested withCacheContext reuses the scope and ignores its signal; without one it inherits', () => {
    const outer = new AbortController();
    const other = new AbortController();
    withCacheContext(
      () => {
        withCacheContext(
          () => {
            expect(currentSignal()).toBe(outer.signal);
          },
          { signal: other.signal },
        );
      },
      { signal: outer.signal },
    );
    withCacheContext(
      () => {
        withNoCacheContext(() => {
          // A new cache inside a discarded one, with no signal of its own: inherits.
          withCacheContext(() => {
            expect(getContextCache()).toBeDefined();
            expect(currentSignal()).toBe(outer.signal);
          });
        });
      },
      { signal: outer.signal },
    );
  });

  it('withNoCacheContext keeps the signal; detach replaces it, also for scopes opened inside', async () => {
    const outer = new AbortController();
    await withCacheContext(
      async () => {
        withNoCacheContext(() => {
          expect(currentSignal()).toBe(outer.signal);
        });
        const [own, nested, inner] = await detach(async () => {
          const own = currentSignal();
          const nested = withCacheContext(() => currentSignal());
          const inner = await detach(async () => currentSignal());
          return [own, nested, inner];
        });
        expect(own).not.toBe(outer.signal);
        expect(nested).toBe(own);
        expect(inner).not.toBe(own);
        expect(inner).not.toBe(outer.signal);
      },
      { signal: outer.signal },
    );
  });
});

describe('timeouts and reporting', () => {
  it('cuts a hanging task at its own timeout and reports it once to its onError', async () => {
    vi.useFakeTimers();
    const onError = vi.fn<(err: Error) => void>();
    let signal: AbortSignal | undefined;
    runInBackground(
      () => {
        signal = currentSignal();
        return new Promise<never>(() => {});
      },
      { timeout: 100, name: 'hang', onError },
    );
    await vi.advanceTimersByTimeAsync(99);
    expect(onError).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(onError).toHaveBeenCalledTimes(1);
    const err = onError.mock.calls[0]![0] as BackgroundError;
    expect(err.code).toBe('CONTEXT_CACHE_TASK_TIMEOUT');
    expect(err.message).toBe(
      'Background task "hang" did not finish within its timeout of 100 ms; its signal was aborted.',
    );
    expect(signal?.aborted).toBe(true);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(onError).toHaveBeenCalledTimes(1);
  });

  it('defaults to 30 s and names an unnamed task after its function', async () => {
    vi.useFakeTimers();
    const onError = vi.fn<(err: Error, name: string) => void>();
    const pool = createBackgroundPool({ onError });
    function reindex() {
      return new Promise<never>(() => {});
    }
    pool.run(reindex);
    pool.run(() => new Promise<never>(() => {}));
    await vi.advanceTimersByTimeAsync(29_999);
    expect(onError).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(onError.mock.calls.map(([err, name]) => [err.message, name])).toEqual([
      [
        'Background task "reindex" did not finish within its timeout of 30000 ms; its signal was aborted.',
        'reindex',
      ],
      [
        'Background task "anonymous" did not finish within its timeout of 30000 ms; its signal was aborted.',
        'anonymous',
      ],
    ]);
    expect(pool.running).toBe(0);
  });

  it('reports a failure exactly once: the task’s onError, else the pool’s, else console.error', async () => {
    const boom = new Error('boom');
    const fail = () => Promise.reject(boom);
    const taskOnError = vi.fn();
    const poolOnError = vi.fn();
    const consoleError = vi.spyOn(console, 'error').mockImplementation(() => {});

    const pool = createBackgroundPool({ onError: poolOnError });
    pool.run(fail, { onError: taskOnError });
    await pool.drain();
    expect(taskOnError.mock.calls).toEqual([[boom]]);
    expect(poolOnError).not.toHaveBeenCalled();

    pool.run(fail, { name: 'publish' });
    await pool.drain();
    expect(poolOnError.mock.calls).toEqual([[boom, 'publish']]);

    runInBackground(() => {
      throw boom; // a synchronous throw is a failure too, never thrown at the caller
    });
    await drainBackground();
    expect(consoleError.mock.calls).toEqual([
      ['context-cache: background task "anonymous" failed:', boom],
    ]);
    expect(taskOnError).toHaveBeenCalledTimes(1);
    expect(poolOnError).toHaveBeenCalledTimes(1);
  });

  it('catches an onError that throws and writes it with console.error', async () => {
    const consoleError = vi.spyOn(console, 'error').mockImplementation(() => {});
    const thrown = new Error('handler bug');
    runInBackground(() => Promise.reject(new Error('boom')), {
      name: 'audit',
      onError: () => {
        throw thrown;
      },
    });
    await drainBackground();
    expect(consoleError.mock.calls).toEqual([
      ['context-cache: the onError handler of background task "audit" threw:', thrown],
    ]);
  });

  it('writes an async onError that rejects with console.error too, never unhandled', async () => {
    const consoleError = vi.spyOn(console, 'error').mockImplementation(() => {});
    const unhandled: unknown[] = [];
    const listener = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', listener);
    try {
      const rejected = new Error('log sink down');
      const pool = createBackgroundPool({
        onError: async () => {
          throw rejected;
        },
      });
      pool.run(() => Promise.reject(new Error('boom')), { name: 'write-back' });
      await pool.drain();
      await new Promise((resolve) => setImmediate(resolve));
      expect(consoleError.mock.calls).toEqual([
        ['context-cache: the onError handler of background task "write-back" threw:', rejected],
      ]);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', listener);
    }
  });

  it('hands onError an Error also when the task rejects with something else', async () => {
    const onError = vi.fn<(err: Error) => void>();
    runInBackground(() => Promise.reject('nope'), { name: 'odd', onError });
    await drainBackground();
    const err = onError.mock.calls[0]![0];
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe(
      'Background task "odd" failed with a non-Error value: a string ("nope").',
    );
    expect(err.cause).toBe('nope');
  });

  it('starts a task’s timeout when the task starts running, not while it waits', async () => {
    vi.useFakeTimers();
    const pool = createBackgroundPool({ concurrency: 1 });
    const onError = vi.fn();
    const done: string[] = [];
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    pool.run(() => sleep(80).then(() => done.push('first')), { timeout: 100, onError });
    pool.run(() => sleep(50).then(() => done.push('second')), { timeout: 100, onError });
    await vi.advanceTimersByTimeAsync(200);
    expect(done).toEqual(['first', 'second']); // the second finished 130 ms after it was queued
    expect(onError).not.toHaveBeenCalled();
  });

  it('throws a TypeError for bad arguments, naming what to pass', () => {
    expect(() => runInBackground('job' as never)).toThrow(
      new TypeError(
        'runInBackground(): fn must be the function to run, such as () => cache.set(key, value), got a string ("job").',
      ),
    );
    expect(() => runInBackground(() => 1, { onError: 'log' as never })).toThrow(
      new TypeError(
        'runInBackground(): options.onError must be a function (err) => void, got a string ("log").',
      ),
    );
    expect(() => runInBackground(() => 1, { timeout: -1 })).toThrow(
      new TypeError(
        'runInBackground(): options.timeout must be a positive number of milliseconds (or Infinity), got a number (-1).',
      ),
    );
    expect(() => drainBackground({ timeout: Number.NaN })).toThrow(
      new TypeError(
        'drainBackground(): options.timeout must be a positive number of milliseconds (or Infinity), got a number (NaN).',
      ),
    );
    expect(() => createBackgroundPool({ concurrency: 0 })).toThrow(
      new TypeError(
        'createBackgroundPool(): options.concurrency must be a positive integer, got a number (0).',
      ),
    );
    expect(() => createBackgroundPool({ maxQueued: 1.5 })).toThrow(
      new TypeError(
        'createBackgroundPool(): options.maxQueued must be a non-negative integer, got a number (1.5).',
      ),
    );
    expect(() => createBackgroundPool({ onError: 1 as never })).toThrow(
      new TypeError(
        'createBackgroundPool(): options.onError must be a function (err, name) => void, got a number (1).',
      ),
    );
    expect(() => createBackgroundPool({ concurrency: 1 }).run(null as never)).toThrow(
      /^pool\.run\(\): fn must be the function to run/,
    );
  });
});

describe('pool bounds', () => {
  it('runs at most `concurrency` tasks, queues the rest FIFO, refuses past `maxQueued`', async () => {
    const gates = Array.from({ length: 6 }, () => deferred());
    const started: number[] = [];
    const onError = vi.fn<(err: Error, name: string) => void>();
    const pool = createBackgroundPool({ concurrency: 2, maxQueued: 3, onError });
    for (let i = 0; i < 6; i++) {
      pool.run(
        async () => {
          started.push(i);
          await gates[i]!.promise;
        },
        { name: `task ${i}` },
      );
    }
    expect([pool.running, pool.queued]).toEqual([2, 3]);
    expect(started).toEqual([0, 1]);
    await Promise.resolve();
    expect(onError.mock.calls.map(([err, name]) => [err.message, name])).toEqual([
      [
        'Background task "task 5" was not run: the queue is full (3 tasks waiting, 2 running).',
        'task 5',
      ],
    ]);
    expect((onError.mock.calls[0]![0] as BackgroundError).code).toBe('CONTEXT_CACHE_QUEUE_FULL');

    gates[1]!.resolve();
    await vi.waitFor(() => expect(started).toEqual([0, 1, 2]));
    gates[0]!.resolve();
    await vi.waitFor(() => expect(started).toEqual([0, 1, 2, 3]));
    expect([pool.running, pool.queued]).toEqual([2, 1]);
    for (const gate of gates) gate.resolve();
    expect(await pool.drain()).toEqual({ pending: [] });
    expect(started).toEqual([0, 1, 2, 3, 4]); // task 5 never ran
    expect([pool.running, pool.queued]).toEqual([0, 0]);
  });

  it.each([
    ['the default pool (runInBackground)', undefined],
    ['createBackgroundPool() with no options', createBackgroundPool],
  ] as const)('%s: 64 run, 10,000 wait, the next is refused', async (_, create) => {
    const pool = create?.() ?? { run: runInBackground, drain: drainBackground };
    const gate = deferred();
    let started = 0;
    const task = async () => {
      started++;
      await gate.promise;
    };
    for (let i = 0; i < 64 + 10_000; i++) pool.run(task);
    const refused = vi.fn<(err: Error) => void>();
    pool.run(task, { name: 'one too many', onError: refused });
    if (create !== undefined) {
      const made = pool as ReturnType<typeof createBackgroundPool>;
      expect([made.running, made.queued]).toEqual([64, 10_000]);
    }
    expect(started).toBe(64);
    await Promise.resolve();
    expect(refused).toHaveBeenCalledTimes(1);
    expect(refused.mock.calls[0]![0].message).toBe(
      'Background task "one too many" was not run: the queue is full (10000 tasks waiting, 64 running).',
    );
    gate.resolve();
    expect(await pool.drain({ timeout: 15_000 })).toEqual({ pending: [] });
    expect(started).toBe(64 + 10_000);
  });
});

describe('drainBackground', () => {
  it('resolves at once with no pending task when nothing runs', async () => {
    expect(await drainBackground()).toEqual({ pending: [] });
  });

  it('waits for running tasks, including tasks started while draining', async () => {
    vi.useFakeTimers();
    const done: string[] = [];
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    runInBackground(async () => {
      await sleep(100);
      done.push('first');
      runInBackground(async () => {
        await sleep(100);
        done.push('started while draining');
      });
    });
    let drained: { pending: string[] } | undefined;
    void drainBackground().then((result) => {
      drained = result;
    });
    await vi.advanceTimersByTimeAsync(150);
    expect(done).toEqual(['first']);
    expect(drained).toBeUndefined();
    await vi.advanceTimersByTimeAsync(100);
    expect(done).toEqual(['first', 'started while draining']);
    expect(drained).toEqual({ pending: [] });
  });

  it('returns once every task is done or timed out', async () => {
    vi.useFakeTimers();
    const onError = vi.fn();
    runInBackground(() => new Promise<never>(() => {}), { name: 'hang', timeout: 500, onError });
    runInBackground(() => new Promise((r) => setTimeout(r, 200)), { name: 'quick' });
    let drained: { pending: string[] } | undefined;
    void drainBackground({ timeout: 5000 }).then((result) => {
      drained = result;
    });
    await vi.advanceTimersByTimeAsync(499);
    expect(drained).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(drained).toEqual({ pending: [] });
    expect(onError).toHaveBeenCalledTimes(1);
  });

  it('at its timeout aborts the stragglers, drops the queued tasks and names them all', async () => {
    vi.useFakeTimers();
    const onError = vi.fn<(err: Error, name: string) => void>();
    const pool = createBackgroundPool({ concurrency: 2, onError });
    const signals: AbortSignal[] = [];
    const ran: string[] = [];
    const hang = (name: string) => () => {
      ran.push(name);
      signals.push(currentSignal()!);
      return new Promise<never>(() => {});
    };
    for (const name of ['a', 'b', 'c', 'd']) pool.run(hang(name), { name, timeout: 60_000 });
    let drained: { pending: string[] } | undefined;
    void pool.drain({ timeout: 1000 }).then((result) => {
      drained = result;
    });
    await vi.advanceTimersByTimeAsync(999);
    expect(drained).toBeUndefined();
    expect(signals.some((s) => s.aborted)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(drained).toEqual({ pending: ['a', 'b', 'c', 'd'] });
    expect(signals.map((s) => s.aborted)).toEqual([true, true]);
    const reason = signals[0]!.reason as BackgroundError;
    expect(reason.code).toBe('CONTEXT_CACHE_DRAINED');
    expect(reason.message).toBe(
      'Background task "a" was still running when pool.drain() timed out after 1000 ms; its signal was aborted.',
    );
    expect([pool.running, pool.queued]).toEqual([0, 0]);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(ran).toEqual(['a', 'b']); // the queued tasks were dropped, never run
    expect(onError).not.toHaveBeenCalled(); // `pending` is their report
  });

  it('does not wait for detach(), which belongs to no pool', async () => {
    vi.useFakeTimers();
    const task = detach(() => new Promise<never>(() => {}), { timeout: 1000 });
    task.catch(() => {});
    expect(await drainBackground()).toEqual({ pending: [] });
    await vi.advanceTimersByTimeAsync(1000);
    await expect(task).rejects.toMatchObject({ code: 'CONTEXT_CACHE_TASK_TIMEOUT' });
  });
});

describe('one default pool per process', () => {
  it('is shared by two copies of the package', async () => {
    vi.resetModules();
    const copy = await import('../src/index.js');
    expect(copy.runInBackground).not.toBe(runInBackground);
    const gate = deferred();
    let done = false;
    copy.runInBackground(async () => {
      await gate.promise;
      done = true;
    });
    let drained = false;
    const drain = drainBackground().then(() => {
      drained = true;
    });
    await new Promise((r) => setImmediate(r));
    expect(drained).toBe(false); // this copy's drain waits for the other copy's task
    gate.resolve();
    await drain;
    expect(done).toBe(true);
  });
});
