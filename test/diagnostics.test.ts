import { AsyncLocalStorage } from 'node:async_hooks';
import * as dc from 'node:diagnostics_channel';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  contextBatched,
  contextCached,
  diagnosticsChannels,
  type EndMessage,
  getContextCache,
  getWithContextCache,
  getWithContextCacheSync,
  type LoadMessage,
  withCacheContext,
} from '../src/index.js';

type Event = [name: string, message: LoadMessage, snapshot: Partial<LoadMessage>];

const load = dc.tracingChannel<unknown, LoadMessage>('context-cache:load');
const tick = () => new Promise((resolve) => setImmediate(resolve));

/** Subscribe to every load event, recording each with a snapshot of the message then. */
function record(): { events: Event[]; names: () => string[]; stop: () => void } {
  const events: Event[] = [];
  const on = (name: string) => (message: LoadMessage) => {
    events.push([name, message, { ...message }]);
  };
  const handlers = {
    start: on('start'),
    end: on('end'),
    asyncStart: on('asyncStart'),
    asyncEnd: on('asyncEnd'),
    error: on('error'),
  };
  load.subscribe(handlers);
  return {
    events,
    names: () => events.map(([name]) => name),
    stop: () => load.unsubscribe(handlers),
  };
}

let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
let stops: (() => void)[] = [];
beforeEach(() => {
  unhandled = [];
  stops = [];
  process.on('unhandledRejection', onUnhandled);
});
afterEach(async () => {
  for (const stop of stops) stop();
  await tick();
  await tick();
  process.off('unhandledRejection', onUnhandled);
  expect(unhandled).toEqual([]);
});

function recording() {
  const r = record();
  stops.push(r.stop);
  return r;
}

describe('channel names', () => {
  it('publishes on the channels named for the package', () => {
    expect(diagnosticsChannels).toEqual({
      load: 'context-cache:load',
      batch: 'context-cache:batch',
      end: 'context-cache:end',
    });
    const r = recording();
    expect(dc.hasSubscribers('tracing:context-cache:load:start')).toBe(true);
    expect(dc.hasSubscribers('tracing:context-cache:load:asyncEnd')).toBe(true);
    r.stop();
    expect(dc.hasSubscribers('tracing:context-cache:load:start')).toBe(false);
  });
});

describe('load tracing', () => {
  it('traces a miss from start to asyncEnd with group, key and result, and not the hit after it', async () => {
    const r = recording();
    await withCacheContext(async () => {
      const user = { id: 1 };
      expect(await getWithContextCache('user', 1, async () => user)).toBe(user);
      expect(r.names()).toEqual(['start', 'end', 'asyncStart', 'asyncEnd']);
      const [[, message, atStart], [, , atEnd]] = r.events as [Event, Event];
      expect(atStart).toEqual({ group: 'user', key: 1, sync: false, stored: true });
      expect(atEnd).toEqual({ group: 'user', key: 1, sync: false, stored: true });
      expect(r.events.every(([, m]) => m === message)).toBe(true);
      expect(r.events[3]?.[2]).toMatchObject({ failed: false, result: user });

      await getWithContextCache('user', 1, async () => ({ id: 2 }));
      expect(r.events).toHaveLength(4);
    });
  });

  it('traces one load for concurrent callers that join it', async () => {
    const r = recording();
    await withCacheContext(async () => {
      let release!: (value: string) => void;
      const pending = new Promise<string>((resolve) => {
        release = resolve;
      });
      const a = getWithContextCache('repo', ['acme', 'web'], () => pending);
      const b = getWithContextCache('repo', ['acme', 'web'], () => Promise.resolve('other'));
      expect(r.names()).toEqual(['start', 'end']);
      release('web');
      expect(await Promise.all([a, b])).toEqual(['web', 'web']);
      expect(r.names()).toEqual(['start', 'end', 'asyncStart', 'asyncEnd']);
      expect(r.events[0]?.[1].key).toEqual(['acme', 'web']);
    });
  });

  it('marks a rejected load failed, publishes error before asyncStart, and still rejects the caller', async () => {
    const r = recording();
    const boom = new Error('db down');
    await withCacheContext(async () => {
      await expect(getWithContextCache('user', 7, () => Promise.reject(boom))).rejects.toBe(boom);
      await tick();
      expect(r.names()).toEqual(['start', 'end', 'error', 'asyncStart', 'asyncEnd']);
      expect(r.events[2]?.[2]).toMatchObject({ group: 'user', key: 7, failed: true, error: boom });
      expect(getContextCache()?.stats()).toMatchObject({ loads: 1, errors: 1 });
    });
  });

  it('completes a loader that throws or returns a plain value at end, with no async events', async () => {
    const r = recording();
    const boom = new TypeError('bad row');
    await withCacheContext(async () => {
      await expect(
        getWithContextCache('user', 1, () => {
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(r.names()).toEqual(['start', 'error', 'end']);
      expect(r.events[2]?.[2]).toMatchObject({ failed: true, error: boom });

      r.events.length = 0;
      expect(await getWithContextCache('setting', 'theme', () => 'dark')).toBe('dark');
      await tick();
      expect(r.names()).toEqual(['start', 'end']);
      expect(r.events[1]?.[2]).toMatchObject({ failed: false, result: 'dark', sync: false });
    });
  });

  it('traces getWithContextCacheSync loads as sync, and not its hits', () => {
    const r = recording();
    withCacheContext(() => {
      const loader = { name: 'per-request loader' };
      expect(getWithContextCacheSync('loaders', 'user', () => loader)).toBe(loader);
      expect(getWithContextCacheSync('loaders', 'user', () => ({}))).toBe(loader);
      expect(r.names()).toEqual(['start', 'end']);
      expect(r.events[1]?.[2]).toEqual({
        group: 'loaders',
        key: 'user',
        sync: true,
        stored: true,
        failed: false,
        result: loader,
      });
    });
  });

  it('traces a sync lookup whose loader returned a promise as failed, with the TypeError', () => {
    const r = recording();
    withCacheContext(() => {
      expect(() => getWithContextCacheSync('loaders', 'async', async () => 1)).toThrow(TypeError);
    });
    expect(r.names()).toEqual(['start', 'error', 'end']);
    expect(r.events[2]?.[2]).toMatchObject({ group: 'loaders', sync: true, failed: true });
    expect(r.events[2]?.[2].error).toBeInstanceOf(TypeError);
  });

  it('traces contextCached getters under their group', async () => {
    const r = recording();
    const getUser = contextCached('user', async (id: number) => ({ id }));
    await withCacheContext(async () => {
      await getUser(3);
      await getUser(3);
    });
    expect(r.names()).toEqual(['start', 'end', 'asyncStart', 'asyncEnd']);
    expect(r.events[0]?.[2]).toMatchObject({ group: 'user', key: 3 });
  });

  it('traces loads that pass through an ended cache as not stored', async () => {
    const r = recording();
    const warnings: unknown[] = [];
    const original = process.emitWarning;
    process.emitWarning = ((...args: unknown[]) => void warnings.push(args)) as never;
    try {
      await withCacheContext(async () => {
        getContextCache()?.end();
        await getWithContextCache('user', 1, async () => 'late');
        getWithContextCacheSync('user', 2, () => 'late too');
      });
    } finally {
      process.emitWarning = original;
    }
    expect(warnings).toHaveLength(1);
    expect(r.events.filter(([name]) => name === 'start').map(([, m]) => [m.key, m.sync])).toEqual([
      [1, false],
      [2, true],
    ]);
    expect(r.events.every(([, m]) => m.stored === false)).toBe(true);
  });

  it('does not trace loads outside a cache context, where there is no request cache', async () => {
    const r = recording();
    await getWithContextCache('user', 1, async () => 1);
    expect(r.events).toEqual([]);
  });

  it('calls a lazy thenable loader result once, as without subscribers', async () => {
    const r = recording();
    let executed = 0;
    // Query builders are thenables that run their query on every then().
    const query: PromiseLike<string[]> = {
      // biome-ignore lint/suspicious/noThenProperty: the point of the test is a thenable.
      then(onFulfilled, onRejected) {
        executed++;
        return Promise.resolve(['row']).then(onFulfilled, onRejected);
      },
    };
    await withCacheContext(async () => {
      expect(await getWithContextCache('rows', 'q', () => query)).toEqual(['row']);
      expect(await getWithContextCache('rows', 'q', () => query)).toEqual(['row']);
    });
    expect(executed).toBe(1);
    expect(r.names()).toEqual(['start', 'end', 'asyncStart', 'asyncEnd']);
  });

  it('runs the loader inside stores bound to the start channel (for span contexts)', async () => {
    recording();
    const spans = new AsyncLocalStorage<string>();
    load.start.bindStore(spans, (message) => `span:${message.group}:${String(message.key)}`);
    try {
      const seen = await withCacheContext(() =>
        getWithContextCache('user', 5, async () => {
          await tick();
          return spans.getStore();
        }),
      );
      expect(seen).toBe('span:user:5');
      expect(spans.getStore()).toBeUndefined();
    } finally {
      load.start.unbindStore(spans);
    }
  });

  it("keeps the start's stores active in end, error, asyncStart and asyncEnd, as tracePromise does", async () => {
    const spans = new AsyncLocalStorage<string>();
    /** The store active in each event of `channel`, for a run of `act`. */
    async function activeIn(
      channel: dc.TracingChannel<unknown, object>,
      act: () => Promise<unknown>,
    ): Promise<Record<string, string | undefined>> {
      const seen: Record<string, string | undefined> = {};
      const at = (name: string) => () => {
        seen[name] = spans.getStore();
      };
      const handlers = {
        start: at('start'),
        end: at('end'),
        asyncStart: at('asyncStart'),
        asyncEnd: at('asyncEnd'),
        error: at('error'),
      };
      channel.start.bindStore(spans, () => 'span');
      channel.subscribe(handlers);
      try {
        await act().catch(() => undefined);
        await tick();
      } finally {
        channel.unsubscribe(handlers);
        channel.start.unbindStore(spans);
      }
      return seen;
    }
    const failing = async (): Promise<never> => {
      await tick();
      throw new Error('db down');
    };
    const everywhere = {
      start: 'span',
      end: 'span',
      error: 'span',
      asyncStart: 'span',
      asyncEnd: 'span',
    };
    // Node's own tracePromise is the convention.
    expect(
      await activeIn(dc.tracingChannel('test:convention'), () =>
        dc.tracingChannel('test:convention').tracePromise(failing, {}),
      ),
    ).toEqual(everywhere);
    expect(
      await activeIn(load as never, () =>
        withCacheContext(() => getWithContextCache('traced-failing', 1, failing)),
      ),
    ).toEqual(everywhere);
    const batched = contextBatched('traced-batch', failing);
    expect(
      await activeIn(dc.tracingChannel('context-cache:batch'), () =>
        withCacheContext(() => batched(1)),
      ),
    ).toEqual(everywhere);
  });

  it('notices a subscriber of one channel only, and stops tracing after unsubscribe', async () => {
    const finished: Partial<LoadMessage>[] = [];
    const onAsyncEnd = (message: unknown) => {
      finished.push({ ...(message as LoadMessage) });
    };
    dc.subscribe('tracing:context-cache:load:asyncEnd', onAsyncEnd);
    try {
      await withCacheContext(() => getWithContextCache('user', 1, async () => 'a'));
    } finally {
      dc.unsubscribe('tracing:context-cache:load:asyncEnd', onAsyncEnd);
    }
    await withCacheContext(() => getWithContextCache('user', 2, async () => 'b'));
    expect(finished).toEqual([
      { group: 'user', key: 1, sync: false, stored: true, failed: false, result: 'a' },
    ]);
  });
});

describe('end channel', () => {
  it('publishes each request cache end once, with its final stats', async () => {
    const ended: EndMessage[] = [];
    const onEnd = (message: unknown) => void ended.push(message as EndMessage);
    dc.subscribe('context-cache:end', onEnd);
    try {
      await withCacheContext(async () => {
        await getWithContextCache('user', 1, async () => 1);
        await getWithContextCache('user', 1, async () => 1);
        getWithContextCacheSync('user', 2, () => 2);
        const cache = getContextCache();
        expect(ended).toEqual([]);
        cache?.end();
        cache?.end();
        expect(ended).toEqual([
          {
            stats: { hits: 1, joins: 0, misses: 2, loads: 2, errors: 0, evictions: 0, batches: 0 },
          },
        ]);
      });
      // A cache that is never ended (no adapter) publishes nothing.
      await withCacheContext(() => getWithContextCache('user', 1, async () => 1));
      expect(ended).toHaveLength(1);
    } finally {
      dc.unsubscribe('context-cache:end', onEnd);
    }
  });
});
