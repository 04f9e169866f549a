import { getEventListeners } from 'node:events';
import type { Server, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { createAdaptorServer } from '@hono/node-server';
import { type Context, Hono, type MiddlewareHandler } from 'hono';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { expectOuterCacheOnly, listen } from '../../../test/adapters/node.js';
import { type AppSpec, adapterTable } from '../../../test/adapters/table.js';
import {
  type CacheStats,
  currentSignal,
  getContextCache,
  getWithContextCache,
  withCacheContext,
} from '../../index.js';
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

describe('hono without a Node response: when a response is done', () => {
  /**
   * Serve `respond` through the adapter with `app.request()` and report whether the
   * request's cache had ended when `app.request()` resolved (before anything read the
   * body), the body, the headers, and the end's counts and signal reason. `inner` is
   * mounted between the adapter and the route.
   */
  async function serve(
    respond: (c: Context) => Response | Promise<Response>,
    inner?: MiddlewareHandler,
  ) {
    const ends: CacheStats[] = [];
    const reasons: string[] = [];
    const app = new Hono();
    app.use(contextCache({ serverTiming: true, onEnd: (stats) => ends.push(stats) }));
    if (inner) app.use(inner);
    app.get('/', async (c) => {
      await getWithContextCache('done', 1, async () => 'loaded');
      const signal = currentSignal();
      signal?.addEventListener('abort', () => reasons.push((signal.reason as Error).message));
      return respond(c);
    });
    const res = await app.request('/');
    const endedOnReturn = ends.length;
    const body = await res.text();
    // A watched body ends the request once read; give its last pull a turn.
    await new Promise((resolve) => setTimeout(resolve, 0));
    return { res, body, endedOnReturn, ends, reasons };
  }

  const complete: [string, (c: Context) => Response | Promise<Response>, string][] = [
    ['c.json', (c) => c.json({ a: 1 }), '{"a":1}'],
    ['c.text', (c) => c.text('plain'), 'plain'],
    ['c.text with a status', (c) => c.text('made', 201), 'made'],
    ['c.html with a string', (c) => c.html('<p>hi</p>'), '<p>hi</p>'],
    ['c.html with a promise', (c) => c.html(Promise.resolve('<p>later</p>')), '<p>later</p>'],
    ['c.body with a string', (c) => c.body('body'), 'body'],
    ['c.body with bytes', (c) => c.body(new TextEncoder().encode('bytes')), 'bytes'],
    ['c.body with a Blob', (c) => c.body(new Blob(['blob']) as never), 'blob'],
    ['c.newResponse with a string', (c) => c.newResponse('new'), 'new'],
    [
      'json taken off c',
      (c) => {
        const { json } = c;
        return json({ taken: true });
      },
      '{"taken":true}',
    ],
  ];

  for (const [name, respond, expected] of complete) {
    it(`ends the cache when the handlers return for ${name}, with the body and headers intact`, async () => {
      const { res, body, endedOnReturn, ends, reasons } = await serve(respond);
      expect(endedOnReturn).toBe(1);
      expect(body).toBe(expected);
      expect(res.headers.get('server-timing')).toBe(
        'context-cache;desc="hits=0 joins=0 misses=1 loads=1 batches=0"',
      );
      expect(ends).toHaveLength(1);
      expect(reasons).toEqual(['context-cache: the response finished']);
    });
  }

  it('ends the cache when the handlers return for a redirect (no body)', async () => {
    const { res, endedOnReturn, ends } = await serve((c) => c.redirect('/elsewhere'));
    expect(res.status).toBe(302);
    expect(endedOnReturn).toBe(1);
    expect(ends).toHaveLength(1);
  });

  it('still ends it on return when a middleware sets a header after the handler (same body)', async () => {
    const { res, body, endedOnReturn } = await serve(
      (c) => c.json({ a: 1 }),
      async (c, next) => {
        await next();
        c.header('x-after', 'yes');
      },
    );
    expect(res.headers.get('x-after')).toBe('yes');
    expect(body).toBe('{"a":1}');
    expect(endedOnReturn).toBe(1);
  });

  const watched: [string, (c: Context) => Response | Promise<Response>, string][] = [
    [
      'a ReadableStream',
      (c) =>
        c.body(
          new ReadableStream({
            start(controller) {
              controller.enqueue(new TextEncoder().encode('streamed'));
              controller.close();
            },
          }),
        ),
      'streamed',
    ],
    ['a Response made by hand', () => new Response('by hand'), 'by hand'],
  ];

  for (const [name, respond, expected] of watched) {
    it(`keeps the cache until the body has been read for ${name}`, async () => {
      const { body, endedOnReturn, ends, reasons } = await serve(respond);
      expect(endedOnReturn).toBe(0);
      expect(body).toBe(expected);
      expect(ends).toHaveLength(1);
      expect(reasons).toEqual(['context-cache: the response finished']);
    });
  }

  it('watches the body a middleware put in place of a complete one', async () => {
    const { body, endedOnReturn, ends } = await serve(
      (c) => c.json({ a: 1 }),
      async (c, next) => {
        await next();
        const text = await c.res.text();
        c.res = new Response(
          new ReadableStream({
            async pull(controller) {
              // Produced after the handlers returned, in the request's scope.
              const open = getContextCache() !== undefined;
              controller.enqueue(new TextEncoder().encode(`${text} open=${open}`));
              controller.close();
            },
          }),
        );
      },
    );
    expect(endedOnReturn).toBe(0);
    expect(body).toBe('{"a":1} open=true');
    expect(ends).toHaveLength(1);
  });

  it('ends the cache on return for a HEAD request, whose streamed body Hono drops unread', async () => {
    const ends: CacheStats[] = [];
    const app = new Hono();
    app.use(contextCache({ onEnd: (stats) => ends.push(stats) }));
    let later: boolean | undefined;
    app.get('/', async (c) => {
      await getWithContextCache('head', 1, async () => 'loaded');
      setTimeout(() => {
        later = getContextCache() !== undefined;
      }, 20);
      return c.body(
        new ReadableStream({
          pull(controller) {
            controller.enqueue(new TextEncoder().encode('never read'));
            controller.close();
          },
        }),
      );
    });
    const res = await app.request('/', { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.body).toBeNull();
    expect(ends).toHaveLength(1);
    await expect.poll(() => later).toBe(false);
  });

  it('gives every request its own cache when app.request() runs inside withCacheContext', async () => {
    const ends: CacheStats[] = [];
    const app = new Hono();
    app.use(contextCache({ onEnd: (stats) => ends.push(stats) }));
    app.get('/me', async (c) => {
      const me = await getWithContextCache('session', 'me', async () => c.req.query('user'));
      return c.json({ me });
    });
    const [alice, bob] = await withCacheContext(async () => [
      await (await app.request('/me?user=alice')).json(),
      await (await app.request('/me?user=bob')).json(),
    ]);
    expect(alice).toEqual({ me: 'alice' });
    expect(bob).toEqual({ me: 'bob' });
    expect(ends.map((stats) => stats.loads)).toEqual([1, 1]);
  });

  it("ends it on return for the error response of Hono's onError", async () => {
    const ends: CacheStats[] = [];
    const app = new Hono();
    app.onError((_err, c) => c.text('failed', 500));
    app.use(contextCache({ onEnd: (stats) => ends.push(stats) }));
    app.get('/', () => {
      throw new Error('handler failed');
    });
    const res = await app.request('/');
    expect(ends).toHaveLength(1);
    expect(res.status).toBe(500);
    expect(await res.text()).toBe('failed');
  });
});

describe("hono without a Node response: watching the request's signal", () => {
  /**
   * Serve one request through the adapter with `app.request()` on a Request whose signal
   * the test aborts; `handler` runs in the route with `raw`, the request's own signal
   * (as the runtime's server hands it), and `abort`.
   */
  async function serve(
    handler: (raw: AbortSignal, abort: () => void) => Promise<unknown>,
    options?: Options,
  ) {
    const controller = new AbortController();
    const app = new Hono();
    app.use(contextCache(options));
    app.get('/', async (c) => c.json(await handler(c.req.raw.signal, () => controller.abort())));
    const res = await app.request(new Request('http://localhost/', { signal: controller.signal }));
    return res.json();
  }

  it("adds its abort listener on the cache's first use, or from the start when onEnd waits for the end", async () => {
    const counts = (await serve(async (raw) => {
      const seen = [getEventListeners(raw, 'abort').length];
      // Looking at the cache is not using it.
      expect(getContextCache()).toBeDefined();
      seen.push(getEventListeners(raw, 'abort').length);
      await getWithContextCache('watch', 1, async () => 1);
      seen.push(getEventListeners(raw, 'abort').length);
      await getWithContextCache('watch', 2, async () => 2);
      seen.push(getEventListeners(raw, 'abort').length);
      return seen;
    })) as number[];
    const [start, looked, used, again] = counts;
    expect(looked).toBe(start);
    expect(used).toBe((start as number) + 1);
    expect(again).toBe(used);
    const eager = (await serve(async (raw) => [getEventListeners(raw, 'abort').length], {
      onEnd: () => {},
    })) as number[];
    expect(eager[0]).toBe((start as number) + 1);
  });

  it('ends a used cache when the client goes away mid-handler, with the reason saying so', async () => {
    const ends: CacheStats[] = [];
    const seen = await serve(
      async (_raw, abort) => {
        await getWithContextCache('gone', 1, async () => 1);
        const signal = currentSignal();
        abort();
        return {
          open: getContextCache() !== undefined,
          reason: (signal?.reason as Error | undefined)?.message,
        };
      },
      { onEnd: (stats) => ends.push(stats) },
    );
    expect(seen).toEqual({
      open: false,
      reason: 'context-cache: the client closed the connection before the response finished',
    });
    expect(ends).toHaveLength(1);
  });

  it('finds a cache not used yet already ended once the client has gone', async () => {
    let loads = 0;
    const seen = await serve(async (_raw, abort) => {
      abort();
      const open = getContextCache() !== undefined;
      // Passes through, uncached, with one warning.
      await getWithContextCache('gone-first', 1, async () => ++loads);
      await getWithContextCache('gone-first', 1, async () => ++loads);
      return { open, reason: (currentSignal()?.reason as Error | undefined)?.message };
    });
    expect(seen).toEqual({
      open: false,
      reason: 'context-cache: the client closed the connection before the response finished',
    });
    expect(loads).toBe(2);
  });
});

describe('hono adapter typing', () => {
  it('passes Hono c to onEnd and returns a named middleware handler', () => {
    expectTypeOf<Parameters<NonNullable<Options['onEnd']>>[1]>().toEqualTypeOf<Context>();
    expectTypeOf(contextCache).returns.toEqualTypeOf<MiddlewareHandler>();
    expect(contextCache().name).toBe('contextCacheMiddleware');
  });
});
