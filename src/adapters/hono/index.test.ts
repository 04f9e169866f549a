import type { Server, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { createAdaptorServer } from '@hono/node-server';
import { type Context, Hono, type MiddlewareHandler } from 'hono';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { expectOuterCacheOnly, listen } from '../../../test/adapters/node.js';
import { type AppSpec, adapterTable } from '../../../test/adapters/table.js';
import { type CacheStats, getContextCache, getWithContextCache } from '../../index.js';
import { contextCache, type Options } from './index.js';

function view(c: Context, body?: unknown) {
  const url = new URL(c.req.url);
  return { method: c.req.method, path: url.pathname, query: url.searchParams, body };
}

adapterTable({
  name: 'hono 4 on @hono/node-server',
  pathOf: (req) => (req as Context).req.path,
  async start(spec: AppSpec) {
    const app = new Hono();
    const middleware = contextCache(spec.options as Options);
    app.onError((_err, c) => c.text('Internal Server Error', 500));
    const before = spec.before;
    if (before) {
      app.use(async (_c, next) => {
        before();
        await next();
      });
    }
    app.use(middleware);
    for (const [path, route] of Object.entries(spec.routes)) {
      app.on(['GET', 'POST'], path, async (c) => {
        await spec.early?.(view(c));
        const body = c.req.method === 'POST' ? await c.req.json() : undefined;
        await spec.middleware?.(view(c, body));
        const reply = await route(view(c, body));
        for (const [k, v] of Object.entries(reply.headers ?? {})) c.header(k, v);
        c.status((reply.status ?? 200) as 200);
        if (reply.stream) return c.body(Readable.toWeb(reply.stream) as ReadableStream);
        return c.json(reply.json);
      });
    }
    return listen(createAdaptorServer({ fetch: app.fetch }) as Server);
  },
});

describe('hono adapter mounted twice', () => {
  it('runs the inner one in the outer cache, which alone ends it and reports onEnd', async () => {
    const ends: string[] = [];
    const seen: unknown[] = [];
    const app = new Hono();
    app.use(contextCache({ onEnd: () => ends.push('outer') }));
    app.use(async (_c, next) => {
      seen.push(getContextCache());
      await next();
    });
    app.use(contextCache({ onEnd: () => ends.push('inner') }));
    app.get('/', (c) => {
      seen.push(getContextCache());
      return c.text('ok');
    });
    const server = await listen(createAdaptorServer({ fetch: app.fetch }) as Server);
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/`);
      expect(await res.text()).toBe('ok');
      await expectOuterCacheOnly(seen, ends);
    } finally {
      await server.close();
    }
  });
});

describe('hono on @hono/node-server watching the response', () => {
  /**
   * The Node response's 'close' listener counts: at the start, after looking at the
   * cache, right after a first lookup, and before and right after a second one. Taken
   * without an await in between: @hono/node-server adds a listener of its own once the
   * handler has awaited.
   */
  async function closeListeners(options?: Options): Promise<number[]> {
    const counts: number[] = [];
    const app = new Hono<{ Bindings: { outgoing: ServerResponse } }>();
    app.use(contextCache(options));
    app.get('/', async (c) => {
      const res = c.env.outgoing;
      counts.push(res.listenerCount('close'));
      // Looking at the cache is not using it.
      expect(getContextCache()?.stats().loads).toBe(0);
      counts.push(res.listenerCount('close'));
      const first = getWithContextCache('hono-watch', 1, async () => 1);
      counts.push(res.listenerCount('close'));
      await first;
      counts.push(res.listenerCount('close'));
      const second = getWithContextCache('hono-watch', 2, async () => 2);
      counts.push(res.listenerCount('close'));
      await second;
      return c.text('ok');
    });
    const server = await listen(createAdaptorServer({ fetch: app.fetch }) as Server);
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/`);
      expect(await res.text()).toBe('ok');
    } finally {
      await server.close();
    }
    return counts;
  }

  it("adds its listener on the cache's first use, or from the start when onEnd waits for the end", async () => {
    const [start, looked, used, before, again] = await closeListeners();
    // A request that never uses its cache adds nothing to its response.
    expect(looked).toBe(start);
    expect(used).toBe((start as number) + 1);
    expect(again).toBe(before);
    const eager = await closeListeners({ onEnd: () => {} });
    expect(eager[0]).toBe((start as number) + 1);
    expect(eager[2]).toBe(eager[0]);
    expect(eager[4]).toBe(eager[3]);
  });
});

describe('hono without a Node response (app.request)', () => {
  it('opens a scope for the handlers and ends it when they return', async () => {
    const ends: CacheStats[] = [];
    let loads = 0;
    const app = new Hono();
    app.use(contextCache({ serverTiming: true, onEnd: (stats) => ends.push(stats) }));
    app.get('/', async (c) => {
      const load = () => getWithContextCache('n', 1, async () => ++loads);
      await load();
      await load();
      return c.json({ open: getContextCache() !== undefined });
    });
    const res = await app.request('/');
    expect(await res.json()).toEqual({ open: true });
    expect(res.headers.get('server-timing')).toBe(
      'context-cache;desc="hits=1 joins=0 misses=1 loads=1 batches=0"',
    );
    expect(loads).toBe(1);
    expect(ends).toHaveLength(1);
    expect(ends[0]).toMatchObject({ hits: 1, loads: 1 });
  });
});

describe('hono adapter typing', () => {
  it('passes Hono c to onEnd and returns a named middleware handler', () => {
    expectTypeOf<Parameters<NonNullable<Options['onEnd']>>[1]>().toEqualTypeOf<Context>();
    expectTypeOf(contextCache).returns.toEqualTypeOf<MiddlewareHandler>();
    expect(contextCache().name).toBe('contextCacheMiddleware');
  });
});
