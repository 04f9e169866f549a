/**
 * The core behaviour every runtime must show, written without anything of the runtime's
 * own: each runtime's entry script (bun.ts, deno.ts, worker.ts, and Node in-process)
 * loads the built package, calls `runConformance` and reports the outcome of each case.
 */

import type * as Root from '../../src/index.js';

export type Lib = typeof Root;

/** One case's outcome, as the entry scripts print it. */
export interface CaseResult {
  readonly ok: boolean;
  readonly error?: string;
}

export type ConformanceReport = Record<string, CaseResult>;

/** The cases, by name; the vitest side expects one result for each. */
export const conformanceCases = [
  'dedup: concurrent lookups share one load',
  'join: a lookup that meets a load in flight counts as a join',
  'errors: a failed load rejects every waiter, is not cached, and nothing goes unhandled',
  'nesting: With(With) reuses, WithNo turns caching off, With(WithNo(With)) opens a new cache',
  'detach: no request cache, a signal of its own, other storages inherited, its timeout applies',
  'background: runInBackground runs outside the request and drainBackground waits for it',
  'isolation: 200 interleaved scopes each read only their own values, one load per key',
  'warnings: a lookup after the end warns once with CONTEXT_CACHE_ENDED',
  'lifetime: a cache past its lifetime misses and warns once with CONTEXT_CACHE_EXPIRED',
  'shared tier: memoryStore behind contextCached round-trips values',
  'dual package: the ESM and CJS copies share one scope',
  'tracing: loads are published on the context-cache:load tracing channel where the runtime has one',
] as const;

export type CaseName = (typeof conformanceCases)[number];

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function same(actual: unknown, expected: unknown, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A small deterministic generator, so every runtime sees the same interleaving. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** Collect unhandled rejections in whichever way the runtime reports them. */
function watchUnhandled(): { readonly seen: unknown[]; stop(): void } {
  const seen: unknown[] = [];
  const g = globalThis as {
    addEventListener?: (type: string, fn: (event: { reason?: unknown }) => void) => void;
    removeEventListener?: (type: string, fn: (event: { reason?: unknown }) => void) => void;
    process?: { on?: unknown; off?: unknown };
  };
  const onEvent = (event: { reason?: unknown; preventDefault?: () => void }) => {
    seen.push(event.reason);
    event.preventDefault?.();
  };
  const onProcess = (reason: unknown) => seen.push(reason);
  const proc = g.process as
    | {
        on(e: string, f: (r: unknown) => void): void;
        off(e: string, f: (r: unknown) => void): void;
      }
    | undefined;
  const useProcess = typeof proc?.on === 'function' && typeof proc.off === 'function';
  if (useProcess) proc!.on('unhandledRejection', onProcess);
  else g.addEventListener?.('unhandledrejection', onEvent);
  return {
    seen,
    stop() {
      if (useProcess) proc!.off('unhandledRejection', onProcess);
      else g.removeEventListener?.('unhandledrejection', onEvent);
    },
  };
}

type Warning = [message: string, code: string];

/**
 * Capture the package's warnings: through `process.emitWarning` where the runtime has it,
 * else from `console.warn`, where the package writes them with the same code.
 */
async function captureWarnings(fn: () => Promise<void> | void): Promise<Warning[]> {
  const warnings: Warning[] = [];
  const proc = (globalThis as { process?: { emitWarning?: unknown } }).process;
  if (proc !== undefined && typeof proc.emitWarning === 'function') {
    const original = proc.emitWarning;
    proc.emitWarning = (message: string, type?: unknown, code?: unknown) => {
      const options = typeof type === 'object' && type !== null ? (type as { code?: string }) : {};
      warnings.push([String(message), String(code ?? options.code)]);
    };
    try {
      await fn();
    } finally {
      proc.emitWarning = original;
    }
    return warnings;
  }
  const original = console.warn;
  console.warn = (text: unknown) => {
    const match = /^\[(CONTEXT_CACHE_[A-Z_]+)\] ContextCacheWarning: (.*)$/s.exec(String(text));
    warnings.push(match ? [match[2]!, match[1]!] : [String(text), '']);
  };
  try {
    await fn();
  } finally {
    console.warn = original;
  }
  return warnings;
}

type Case = (lib: Lib, options: ConformanceOptions) => Promise<void>;

/** What the tracing case uses of `node:diagnostics_channel`. */
export interface DiagnosticsModule {
  tracingChannel(name: string): {
    subscribe(
      handlers: Record<
        'start' | 'end' | 'asyncStart' | 'asyncEnd' | 'error',
        (message: unknown) => void
      >,
    ): void;
    unsubscribe(
      handlers: Record<
        'start' | 'end' | 'asyncStart' | 'asyncEnd' | 'error',
        (message: unknown) => void
      >,
    ): void;
  };
}

export interface ConformanceOptions {
  /** The CJS copy of the package, where the runtime can `require` it. */
  readonly cjs?: Lib | undefined;
  /** Why there is no CJS copy to compare with (Workers has no `require`). */
  readonly noCjs?: string;
  /** The runtime's `node:diagnostics_channel`, where it has one. */
  readonly diagnostics?: DiagnosticsModule | undefined;
  /** A second AsyncLocalStorage class to check `detach` keeps other storages. */
  readonly AsyncLocalStorage: new <T>() => {
    run<R>(store: T, fn: () => R): R;
    getStore(): T | undefined;
  };
}

const cases: Record<CaseName, Case> = {
  async 'dedup: concurrent lookups share one load'(lib) {
    await lib.withCacheContext(async () => {
      let loads = 0;
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const loader = async () => {
        loads++;
        await gate;
        return 'v';
      };
      const first = lib.getWithContextCache('dedup', 1, loader);
      const second = lib.getWithContextCache('dedup', 1, loader);
      check(first === second, 'the second lookup should return the same pending promise');
      release();
      same(await Promise.all([first, second]), ['v', 'v'], 'values');
      same(await lib.getWithContextCache('dedup', 1, loader), 'v', 'a later lookup');
      same(loads, 1, 'loads');
    });
  },

  async 'join: a lookup that meets a load in flight counts as a join'(lib) {
    await lib.withCacheContext(async () => {
      const loader = async () => {
        await sleep(1);
        return 1;
      };
      await Promise.all([
        lib.getWithContextCache('join', 'k', loader),
        lib.getWithContextCache('join', 'k', loader),
      ]);
      await lib.getWithContextCache('join', 'k', loader);
      const stats = lib.getContextCache()!.stats();
      same(
        [stats.misses, stats.joins, stats.hits, stats.loads],
        [1, 1, 1, 1],
        'misses, joins, hits, loads',
      );
    });
  },

  async 'errors: a failed load rejects every waiter, is not cached, and nothing goes unhandled'(
    lib,
  ) {
    const unhandled = watchUnhandled();
    try {
      await lib.withCacheContext(async () => {
        let loads = 0;
        const failing = async () => {
          loads++;
          await sleep(1);
          throw new Error('boom');
        };
        const a = lib.getWithContextCache('err', 1, failing);
        const b = lib.getWithContextCache('err', 1, failing);
        const outcomes = await Promise.allSettled([a, b]);
        same(
          outcomes.map((o) => (o.status === 'rejected' ? (o.reason as Error).message : 'ok')),
          ['boom', 'boom'],
          'both waiters',
        );
        same(await lib.getWithContextCache('err', 1, async () => 'fine'), 'fine', 'next call');
        same(loads, 1, 'failed loads');
        same(lib.getContextCache()!.stats().errors, 1, 'errors counted');
      });
      // Give the runtime time to report what went unhandled.
      await sleep(20);
      same(unhandled.seen.length, 0, 'unhandled rejections');
    } finally {
      unhandled.stop();
    }
  },

  async 'nesting: With(With) reuses, WithNo turns caching off, With(WithNo(With)) opens a new cache'(
    lib,
  ) {
    check(lib.getContextCache() === undefined, 'no cache outside any scope');
    await lib.withCacheContext(async () => {
      const a = lib.getContextCache();
      check(a !== undefined, 'With opens a cache');
      await lib.withCacheContext(async () => {
        check(lib.getContextCache() === a, 'With(With) reuses the active cache');
      });
      await lib.withNoCacheContext(async () => {
        check(lib.getContextCache() === undefined, 'WithNo(With) has no cache');
        let loads = 0;
        await lib.getWithContextCache('n', 1, async () => ++loads);
        await lib.getWithContextCache('n', 1, async () => ++loads);
        same(loads, 2, 'loads without a cache');
        await lib.withCacheContext(async () => {
          const b = lib.getContextCache();
          check(b !== undefined && b !== a, 'With(WithNo(With)) opens a new cache');
        });
      });
      check(lib.getContextCache() === a, 'the request keeps its cache after WithNo');
    });
  },

  async 'detach: no request cache, a signal of its own, other storages inherited, its timeout applies'(
    lib,
    { AsyncLocalStorage },
  ) {
    const trace = new AsyncLocalStorage<string>();
    const request = new AbortController();
    await trace.run('trace-1', () =>
      lib.withCacheContext(
        async () => {
          const inside = await lib.detach(async () => {
            await sleep(1);
            return {
              cache: lib.getContextCache() === undefined ? 'none' : 'some',
              ownSignal:
                lib.currentSignal() !== undefined && lib.currentSignal() !== request.signal,
              trace: trace.getStore(),
            };
          });
          same(inside, { cache: 'none', ownSignal: true, trace: 'trace-1' }, 'inside detach');
          const late = lib.detach(() => sleep(200), { timeout: 20, name: 'slow task' });
          let code: unknown;
          let message = '';
          try {
            await late;
          } catch (err) {
            code = (err as { code?: unknown }).code;
            message = (err as Error).message;
          }
          same(code, 'CONTEXT_CACHE_TASK_TIMEOUT', 'timeout code');
          check(message.includes('slow task') && message.includes('20 ms'), `message: ${message}`);
        },
        { signal: request.signal },
      ),
    );
  },

  async 'background: runInBackground runs outside the request and drainBackground waits for it'(
    lib,
  ) {
    const seen: string[] = [];
    await lib.withCacheContext(async () => {
      lib.runInBackground(
        async () => {
          await sleep(5);
          seen.push(lib.getContextCache() === undefined ? 'no cache' : 'cache');
        },
        { name: 'conformance task' },
      );
    });
    same(await lib.drainBackground({ timeout: 5000 }), { pending: [] }, 'drain');
    same(seen, ['no cache'], 'the task ran without the request cache');
    const errors: string[] = [];
    lib.runInBackground(
      () => {
        throw new Error('task failed');
      },
      { onError: (err) => errors.push(err.message) },
    );
    await lib.drainBackground({ timeout: 5000 });
    same(errors, ['task failed'], 'failure reported to onError');
  },

  async 'isolation: 200 interleaved scopes each read only their own values, one load per key'(lib) {
    const next = random(17);
    const loads = new Map<number, number>();
    const scopes = Array.from({ length: 200 }, (_, id) =>
      lib.withCacheContext(async () => {
        const keys = ['user', 'repo', 'settings'];
        const reads: string[] = [];
        await Promise.all(
          Array.from({ length: 9 }, async (_, i) => {
            await sleep(Math.floor(next() * 4));
            const key = keys[i % keys.length]!;
            reads.push(
              await lib.getWithContextCache('iso', key, async () => {
                loads.set(id, (loads.get(id) ?? 0) + 1);
                await sleep(Math.floor(next() * 4));
                return `${id}:${key}`;
              }),
            );
          }),
        );
        return { id, reads };
      }),
    );
    for (const { id, reads } of await Promise.all(scopes)) {
      const foreign = reads.filter((value) => !value.startsWith(`${id}:`));
      same(foreign, [], `scope ${id} read another scope's values`);
      same(reads.length, 9, `scope ${id} reads`);
      same(loads.get(id), 3, `scope ${id} loads`);
    }
  },

  async 'warnings: a lookup after the end warns once with CONTEXT_CACHE_ENDED'(lib) {
    const warnings = await captureWarnings(async () => {
      await lib.withCacheContext(async () => {
        const cache = lib.getContextCache()!;
        cache.end();
        await lib.getWithContextCache('ended', 1, async () => 1);
        await lib.getWithContextCache('ended', 2, async () => 2);
      });
    });
    same(
      warnings.map(([, code]) => code),
      ['CONTEXT_CACHE_ENDED'],
      'warning codes',
    );
    check(warnings[0]![0].includes('detach()'), `the warning names detach(): ${warnings[0]![0]}`);
  },

  async 'lifetime: a cache past its lifetime misses and warns once with CONTEXT_CACHE_EXPIRED'(
    lib,
  ) {
    let loads = 0;
    const warnings = await captureWarnings(async () => {
      await lib.withCacheContext(
        async () => {
          await lib.getWithContextCache('life', 1, async () => ++loads);
          // The clock may serve readings up to a period old; wait well past both.
          await sleep(150);
          await lib.getWithContextCache('life', 1, async () => ++loads);
          await lib.getWithContextCache('life', 1, async () => ++loads);
        },
        { lifetime: 30 },
      );
    });
    same(loads, 3, 'loads past the lifetime');
    same(
      warnings.map(([, code]) => code),
      ['CONTEXT_CACHE_EXPIRED'],
      'warning codes',
    );
  },

  async 'shared tier: memoryStore behind contextCached round-trips values'(lib) {
    const shared = lib.createSharedCache<{ name: string } | null>({
      store: lib.memoryStore({ max: 100 }),
      ttl: 60_000,
      namespace: 'conformance',
    });
    let loads = 0;
    const load = async (id: number) => {
      loads++;
      return id === 0 ? null : { name: `user ${id}` };
    };
    same(await shared.getOrLoad(1, () => load(1)), { name: 'user 1' }, 'first load');
    same(await shared.getOrLoad(0, () => load(0)), null, 'a null value');
    // Write-backs are detached: wait (bounded) until the store has both.
    for (let i = 0; i < 200; i++) {
      if ((await shared.get(1)) !== undefined && (await shared.get(0)) !== undefined) break;
      await sleep(5);
    }
    same(await shared.get(0), null, 'null read back from the store');
    const getUser = lib.contextCached('user', load, { shared });
    same(await lib.withCacheContext(() => getUser(2)), { name: 'user 2' }, 'through contextCached');
    same(await shared.getOrLoad(1, () => load(1)), { name: 'user 1' }, 'served by the store');
    same(loads, 3, 'loads');
    // Rich values come back with their types on every runtime (the default serializer).
    const rich = {
      at: new Date(5),
      tags: new Set(['a']),
      byId: new Map([[1, 'one']]),
      big: 2n ** 70n,
      bytes: new Uint8Array([1, 2]),
    };
    await shared.set(3, rich as never);
    const back = (await shared.get(3)) as unknown as typeof rich;
    check(back.at instanceof Date && back.at.getTime() === 5, 'a Date read back as a Date');
    check(back.tags instanceof Set && back.tags.has('a'), 'a Set read back as a Set');
    check(back.byId instanceof Map && back.byId.get(1) === 'one', 'a Map read back as a Map');
    check(back.big === 2n ** 70n, 'a BigInt read back as a BigInt');
    check(back.bytes instanceof Uint8Array && back.bytes[1] === 2, 'bytes read back as bytes');
    await shared.close();
  },

  async 'dual package: the ESM and CJS copies share one scope'(lib, { cjs, noCjs }) {
    if (cjs === undefined) {
      // Not a skip: the runtime has a single module format, and says so.
      check(noCjs !== undefined, 'no CJS copy and no reason given');
      return;
    }
    check(cjs.withCacheContext !== lib.withCacheContext, 'two module instances expected');
    await lib.withCacheContext(async () => {
      let loads = 0;
      await lib.getWithContextCache('dual', 1, async () => ++loads);
      same(
        await cjs.getWithContextCache('dual', 1, async () => ++loads),
        1,
        'CJS sees the ESM value',
      );
      check(cjs.getContextCache() === lib.getContextCache(), 'one cache for both copies');
    });
  },

  async 'tracing: loads are published on the context-cache:load tracing channel where the runtime has one'(
    lib,
    { diagnostics },
  ) {
    if (diagnostics === undefined) {
      // No channel module: loads must simply work, traced by nobody.
      same(
        await lib.withCacheContext(() => lib.getWithContextCache('t', 1, async () => 'v')),
        'v',
        'value',
      );
      return;
    }
    const events: string[] = [];
    const on = (event: string) => (message: unknown) => {
      const { group, key } = message as { group: string; key: unknown };
      events.push(`${event} ${group} ${String(key)}`);
    };
    const handlers = {
      start: on('start'),
      end: on('end'),
      asyncStart: on('asyncStart'),
      asyncEnd: on('asyncEnd'),
      error: on('error'),
    };
    const channel = diagnostics.tracingChannel(lib.diagnosticsChannels.load);
    channel.subscribe(handlers);
    try {
      await lib.withCacheContext(async () => {
        await lib.getWithContextCache('traced', 7, async () => 'v');
        await lib.getWithContextCache('traced', 7, async () => 'v'); // a hit: not traced
      });
    } finally {
      channel.unsubscribe(handlers);
    }
    same(
      events,
      ['start traced 7', 'end traced 7', 'asyncStart traced 7', 'asyncEnd traced 7'],
      'events',
    );
  },
};

/** Run every case in turn; a case's failure is its result, never a crash of the run. */
export async function runConformance(
  lib: Lib,
  options: ConformanceOptions,
): Promise<ConformanceReport> {
  const report: Record<string, CaseResult> = {};
  for (const name of conformanceCases) {
    try {
      await cases[name](lib, options);
      report[name] = { ok: true };
    } catch (err) {
      report[name] = {
        ok: false,
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      };
    }
  }
  return report;
}
