import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  cached,
  contextCached,
  createBackgroundPool,
  createSharedCache,
  detach,
  drainBackground,
  getContextCache,
  getWithContextCache,
  getWithContextCacheSync,
  type LoadTimeoutError,
  memoryStore,
  runInBackground,
  withCacheContext,
  withNoCacheContext,
} from '../src/index.js';
import { noUnhandledRejections } from './helpers/async.js';

const run = promisify(execFile);

let warnings: unknown[][] = [];
let emitWarning: typeof process.emitWarning;

beforeEach(() => {
  warnings = [];
  emitWarning = process.emitWarning;
  process.emitWarning = ((...args: unknown[]) => {
    warnings.push(args.slice(0, 3));
  }) as typeof process.emitWarning;
});

afterEach(() => {
  process.emitWarning = emitWarning;
  vi.useRealTimers();
});

describe('CONTEXT_CACHE_GROUP_REUSED', () => {
  it('warns once, naming the group, when two getters of one group have different loaders', async () => {
    const byId = contextCached('reused-user', async (id: number) => `user ${id}`);
    const byEmail = contextCached('reused-user', async (email: string) => `email ${email}`);
    contextCached('reused-user', async () => 'third');
    expect(warnings).toEqual([
      [
        "contextCached('reused-user') was called again with a different loader. Both getters " +
          "use the group 'reused-user', so each returns values the other loaded. Give each " +
          'getter its own group name, or make the getter once (at module level) and import ' +
          'it where it is needed.',
        'ContextCacheWarning',
        'CONTEXT_CACHE_GROUP_REUSED',
      ],
    ]);
    // What the warning is about: the two getters really do read each other's entries.
    await withCacheContext(async () => {
      expect(await byId(1)).toBe('user 1');
      expect(await byEmail(1 as never)).toBe('user 1');
    });
  });

  it('accepts the same loader twice, and a @cached method counts as a getter of its group', () => {
    const load = async (id: number) => id;
    contextCached('reused-same', load);
    contextCached('reused-same', load);
    expect(warnings).toEqual([]);
    contextCached('reused-method', load);
    class Repo {
      @cached('reused-method')
      async get(id: number): Promise<number> {
        return id + 1;
      }
    }
    expect(new Repo()).toBeInstanceOf(Repo);
    expect(warnings.map((w) => w[2])).toEqual(['CONTEXT_CACHE_GROUP_REUSED']);
    expect(String(warnings[0]?.[0])).toContain("contextCached('reused-method')");
  });
});

describe('getWithContextCacheSync with an async loader', () => {
  const message =
    "getWithContextCacheSync(): the loader of group 'sync-async' returned a promise, which a " +
    'synchronous lookup cannot wait for, so nothing was stored. Use ' +
    "await getWithContextCache('sync-async', key, loader) for an async loader.";

  it('throws a TypeError pointing to getWithContextCache and stores nothing', () => {
    withCacheContext(() => {
      expect(() => getWithContextCacheSync('sync-async', 1, async () => 'value')).toThrow(
        new TypeError(message),
      );
      // Nothing stored: a sync loader now runs and its value is kept.
      expect(getWithContextCacheSync('sync-async', 1, () => 'sync')).toBe('sync');
      expect(getWithContextCacheSync('sync-async', 1, () => 'again')).toBe('sync');
      // The refused load counts as a failed one.
      expect(getContextCache()?.stats()).toMatchObject({ loads: 2, errors: 1, hits: 1 });
    });
  });

  it('does the same outside a cache context, inside withNoCacheContext and after the end', () => {
    expect(() => getWithContextCacheSync('sync-async', 1, () => Promise.resolve(1))).toThrow(
      new TypeError(message),
    );
    withCacheContext(() => {
      withNoCacheContext(() => {
        expect(() => getWithContextCacheSync('sync-async', 1, async () => 1)).toThrow(
          new TypeError(message),
        );
      });
      getContextCache()?.end();
      expect(() => getWithContextCacheSync('sync-async', 1, async () => 1)).toThrow(
        new TypeError(message),
      );
    });
  });

  describe('leaves no unhandled rejection behind', () => {
    noUnhandledRejections();
    it('when the returned promise rejects', () => {
      withCacheContext(() => {
        expect(() =>
          getWithContextCacheSync('sync-async', 2, () => Promise.reject(new Error('no'))),
        ).toThrow(TypeError);
      });
    });
  });
});

describe('options are checked by name', () => {
  const cases: [string, () => unknown, string][] = [
    [
      'withCacheContext',
      () => withCacheContext(() => 1, { lifetimeMs: 1000 } as never),
      "withCacheContext(): unknown option options.lifetimeMs (did you mean 'lifetime'?). " +
        "The known options are 'lifetime', 'maxEntries' or 'signal'.",
    ],
    [
      'contextCached',
      () => contextCached('opt', async () => 1, { ttl: 5 } as never),
      "contextCached(): unknown option options.ttl. The known options are 'shared' or 'timeout'.",
    ],
    [
      'cached',
      () => cached('opt', { timout: 5 } as never),
      "cached(): unknown option options.timout (did you mean 'timeout'?). The known options are 'shared' or 'timeout'.",
    ],
    [
      'getWithContextCache',
      () => getWithContextCache('opt', 1, async () => 1, { timeoutMs: 5 } as never),
      "getWithContextCache(): unknown option options.timeoutMs (did you mean 'timeout'?). The known options are 'timeout'.",
    ],
    [
      'detach',
      () => detach(() => 1, { timeOut: 5 } as never),
      "detach(): unknown option options.timeOut (did you mean 'timeout'?). The known options are 'timeout' or 'name'.",
    ],
    [
      'runInBackground',
      () => runInBackground(() => 1, { onErr: () => {} } as never),
      "runInBackground(): unknown option options.onErr (did you mean 'onError'?). The known options are 'timeout', 'name' or 'onError'.",
    ],
    [
      'drainBackground',
      () => drainBackground({ wait: 5 } as never),
      "drainBackground(): unknown option options.wait. The known options are 'timeout'.",
    ],
    [
      'createBackgroundPool',
      () => createBackgroundPool({ concurrent: 5 } as never),
      "createBackgroundPool(): unknown option options.concurrent (did you mean 'concurrency'?). " +
        "The known options are 'concurrency', 'maxQueued' or 'onError'.",
    ],
    [
      'memoryStore',
      () => memoryStore({ max: 10, maxAge: 5 } as never),
      "memoryStore(): unknown option options.maxAge (did you mean 'max'?). The known options are 'max' or 'ttl'.",
    ],
    [
      'createSharedCache',
      () =>
        createSharedCache({
          store: memoryStore({ max: 10 }),
          ttl: 1000,
          namespace: 'n',
          prefix: 'x',
        } as never),
      'createSharedCache(): unknown option options.prefix. The known options are ' +
        "'store', 'ttl', 'namespace', 'serializer', 'readTimeout', 'writeTimeout', " +
        "'maxValueBytes', 'lock', 'onError' or 'onRecover'.",
    ],
  ];
  for (const [name, call, message] of cases) {
    it(`${name}: an unknown option is a TypeError listing the known ones`, () => {
      expect(call).toThrow(new TypeError(message));
    });
  }

  it('checks the options of a withCacheContext nested in another too, which it ignores', () => {
    const nested = (options: unknown) =>
      withCacheContext(() => withCacheContext(() => 1, options as never));
    expect(() => nested({ lifetimeMs: 1000 })).toThrow(
      new TypeError(
        "withCacheContext(): unknown option options.lifetimeMs (did you mean 'lifetime'?). " +
          "The known options are 'lifetime', 'maxEntries' or 'signal'.",
      ),
    );
    expect(() => nested({ maxEntries: 'lots' })).toThrow(/options\.maxEntries must be/);
    expect(() => nested(null)).toThrow(TypeError);
    expect(nested({ lifetime: 1000 })).toBe(1);
  });

  it('checks the nested lock options and the per-call ttl options too', async () => {
    const shared = createSharedCache<number>({
      store: memoryStore({ max: 10 }),
      ttl: 1000,
      namespace: 'n',
    });
    expect(() => shared.set('k', 1, { ttL: 5 } as never)).toThrow(
      new TypeError(
        "set(): unknown option options.ttL (did you mean 'ttl'?). The known options are 'ttl'.",
      ),
    );
    await shared.close();
  });
});

describe('per-getter timeout', () => {
  noUnhandledRejections();

  it('rejects every waiter with an error naming the group, key and limit, then loads again', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let loads = 0;
    const hang = contextCached(
      'timeout-user',
      (id: number) => {
        loads++;
        return loads === 1 ? new Promise<string>(() => {}) : Promise.resolve(`user ${id}`);
      },
      { timeout: 500 },
    );
    await withCacheContext(async () => {
      const first = hang(7);
      const second = hang(7);
      expect(second).toBe(first);
      const both = Promise.allSettled([first, second]);
      await vi.advanceTimersByTimeAsync(499);
      expect(getContextCache()?.stats()).toMatchObject({ joins: 1, loads: 1, errors: 0 });
      await vi.advanceTimersByTimeAsync(1);
      const settled = await both;
      for (const result of settled) {
        expect(result.status).toBe('rejected');
        const err = (result as PromiseRejectedResult).reason as LoadTimeoutError;
        expect(err.message).toBe(
          "contextCached('timeout-user'): the load of key 7 did not settle within its timeout " +
            'of 500 ms. Its callers were rejected and the entry dropped, so the next call loads again.',
        );
        expect(err).toMatchObject({
          name: 'LoadTimeoutError',
          code: 'CONTEXT_CACHE_LOAD_TIMEOUT',
          group: 'timeout-user',
          key: 7,
          timeout: 500,
        });
      }
      // The entry was dropped: the next call loads again (and this load succeeds).
      expect(await hang(7)).toBe('user 7');
      expect(loads).toBe(2);
      expect(getContextCache()?.stats()).toMatchObject({ errors: 1, loads: 2 });
    });
  });

  it('times out a hung load that nothing else holds, also after garbage collection', async () => {
    // A loader whose resolve is lost: only the deadline's timer can still settle it.
    const script = `
      import { contextCached, withCacheContext } from 'context-cache';
      const lost = contextCached('lost', () => new Promise(() => {}), { timeout: 100 });
      const outcome = withCacheContext(() => lost(1)).then(() => 'resolved', (err) => err.code);
      for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); }
      console.log(await Promise.race([outcome, new Promise((r) => setTimeout(r, 2000, 'pending'))]));
    `;
    const { stdout } = await run(
      process.execPath,
      ['--expose-gc', '--input-type=module', '-e', script],
      { cwd: fileURLToPath(new URL('..', import.meta.url)) },
    );
    expect(stdout.trim()).toBe('CONTEXT_CACHE_LOAD_TIMEOUT');
  });

  it('clears its timer when the loader answers with a thenable that calls back at once', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const eager = contextCached(
      'timeout-eager',
      (id: number) =>
        ({
          // biome-ignore lint/suspicious/noThenProperty: a thenable that calls back at once
          then: (resolve: (value: string) => void) => resolve(`user ${id}`),
        }) as never,
      { timeout: 3000 },
    );
    await withCacheContext(async () => {
      expect(await eager(1)).toBe('user 1');
      expect(vi.getTimerCount()).toBe(0);
    });
  });

  it('lets a load that settles in time through, and leaves no timer behind', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const quick = contextCached('timeout-quick', async (id: number) => id * 2, { timeout: 100 });
    await withCacheContext(async () => {
      expect(await quick(2)).toBe(4);
      expect(vi.getTimerCount()).toBe(0);
      await vi.advanceTimersByTimeAsync(1000);
      expect(await quick(2)).toBe(4);
      expect(getContextCache()?.stats()).toMatchObject({ hits: 1, loads: 1, errors: 0 });
    });
  });

  it('applies to getWithContextCache, with the composite key in the message', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    await withCacheContext(async () => {
      const pending = getWithContextCache('timeout-pair', [1, 'a'], () => new Promise(() => {}), {
        timeout: 50,
      });
      const check = expect(pending).rejects.toThrow(
        'getWithContextCache(\'timeout-pair\'): the load of key [1, "a"] did not settle within its timeout of 50 ms.',
      );
      await vi.advanceTimersByTimeAsync(50);
      await check;
    });
  });

  it('with a shared tier, fails the shared load too, so other requests load again as well', async () => {
    const shared = createSharedCache<number>({
      store: memoryStore({ max: 10 }),
      ttl: 60_000,
      namespace: 'timeout',
    });
    let loads = 0;
    const get = contextCached(
      'timeout-shared',
      (id: number) => (++loads === 1 ? new Promise<number>(() => {}) : Promise.resolve(id)),
      { shared, timeout: 30 },
    );
    // Two requests at once: both wait on the one shared load, which never settles.
    const first = withCacheContext(() => get(1));
    const second = withCacheContext(() => get(1));
    for (const result of await Promise.allSettled([first, second])) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason).toMatchObject({
        code: 'CONTEXT_CACHE_LOAD_TIMEOUT',
        group: 'timeout-shared',
      });
    }
    expect(loads).toBe(1);
    // The shared load was dropped with its error: a new request loads again.
    expect(await withCacheContext(() => get(1))).toBe(1);
    expect(loads).toBe(2);
    await shared.close();
  });

  it('rejects a timeout that is not a positive number of milliseconds', () => {
    expect(() => contextCached('timeout-bad', async () => 1, { timeout: 0 })).toThrow(
      new TypeError(
        'contextCached(): options.timeout must be a positive number of milliseconds such as 5000 (at most 2147483647), or Infinity for none, got a number (0).',
      ),
    );
    expect(() => contextCached('timeout-inf', async () => 1, { timeout: Infinity })).not.toThrow();
  });
});

describe('a failed lookup that nobody awaits', () => {
  const seen = noUnhandledRejections();

  it('is not an unhandled rejection, inside a request or outside, and still rejects an awaiting caller', async () => {
    const fail = async (): Promise<never> => {
      throw new Error('db down');
    };
    void getWithContextCache('unawaited', 1, fail); // outside any scope
    void getWithContextCache('unawaited', 1, () => {
      throw new Error('sync throw'); // a loader that throws before returning a promise
    });
    await withCacheContext(async () => {
      void getWithContextCache('unawaited', 1, fail); // stored load
      void getWithContextCache('unawaited', 3, () => {
        throw new Error('sync throw in a live cache');
      });
      void contextCached('unawaited-getter', (_id: number): Promise<never> => {
        throw new Error('sync throw in a getter');
      })(1);
      withNoCacheContext(() => void getWithContextCache('unawaited', 1, fail));
      getContextCache()?.end();
      void getWithContextCache('unawaited', 1, fail); // after the end: pass-through
      void getWithContextCache('unawaited', 2, () => {
        throw new Error('sync throw after the end');
      });
    });
    await expect(getWithContextCache('unawaited', 1, fail)).rejects.toThrow('db down');
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen.count).toBe(0);
  });
});
