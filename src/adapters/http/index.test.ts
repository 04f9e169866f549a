import { createServer, get, IncomingMessage, type ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { afterEach, describe, expect, expectTypeOf, it, vi } from 'vitest';
import { expectOuterCacheOnly, listen } from '../../../test/adapters/node.js';
import { type AppSpec, adapterTable, type RunningApp } from '../../../test/adapters/table.js';
import { currentSignal, getContextCache, getWithContextCache } from '../../index.js';
import { contextCache, type Options } from './index.js';

async function readJson(req: IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of req) text += String(chunk);
  return JSON.parse(text);
}

adapterTable({
  name: 'node:http',
  pathOf: (req) => ((req as IncomingMessage).url ?? '').split('?')[0] ?? '',
  async start(spec: AppSpec) {
    const handler = contextCache(
      async (req, res) => {
        const url = new URL(req.url ?? '/', 'http://localhost');
        const view = (body?: unknown) => ({
          method: req.method ?? 'GET',
          path: url.pathname,
          query: url.searchParams,
          body,
        });
        await spec.early?.(view());
        const body = req.method === 'POST' ? await readJson(req) : undefined;
        await spec.middleware?.(view(body));
        const route = spec.routes[url.pathname];
        if (route === undefined) {
          res.writeHead(404).end();
          return;
        }
        const reply = await route(view(body));
        res.statusCode = reply.status ?? 200;
        for (const [k, v] of Object.entries(reply.headers ?? {})) res.setHeader(k, v);
        if (reply.stream) {
          reply.stream.pipe(res);
        } else {
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify(reply.json));
        }
      },
      { onError: () => {}, ...(spec.options as Options) },
    );
    const before = spec.before;
    return listen(
      createServer((req, res) => {
        before?.();
        handler(req, res);
      }),
    );
  },
});

function fetchText(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    }).on('error', reject);
  });
}

describe('node:http errors', () => {
  const apps: RunningApp[] = [];
  afterEach(async () => {
    vi.restoreAllMocks();
    for (const app of apps.splice(0)) await app.close();
  });

  async function serve(
    handler: (req: IncomingMessage, res: ServerResponse) => unknown,
    options?: Options,
  ) {
    const app = await listen(createServer(contextCache(handler, options)));
    apps.push(app);
    return app;
  }

  it('answers 500 to a synchronous throw, dropping headers already set, and reports to onError', async () => {
    const errors: [unknown, string | undefined][] = [];
    const app = await serve(
      (_req, res) => {
        res.setHeader('x-secret', 'half-built');
        throw new Error('sync boom');
      },
      { onError: (err, req) => errors.push([err, req.url]) },
    );
    const reply = await fetchText(app.port, '/sync');
    expect(reply).toEqual({ status: 500, body: 'Internal Server Error\n' });
    expect(errors).toHaveLength(1);
    expect(errors.map(([err, url]) => [(err as Error).message, url])).toEqual([
      ['sync boom', '/sync'],
    ]);
  });

  it('writes an async onError that rejects with console.error, never unhandled', async () => {
    const logged: unknown[] = [];
    vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      logged.push(args[0]);
    });
    const unhandled: unknown[] = [];
    const listener = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', listener);
    try {
      const app = await serve(
        async () => {
          throw new Error('handler boom');
        },
        {
          onError: async () => {
            throw new Error('error reporter down');
          },
        },
      );
      expect((await fetchText(app.port, '/')).status).toBe(500);
      await vi.waitFor(() => expect(logged).toHaveLength(1));
      expect((logged[0] as Error).message).toBe('error reporter down');
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', listener);
    }
  });

  it('logs with console.error by default', async () => {
    const logged: unknown[] = [];
    vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      logged.push(args[0]);
    });
    const app = await serve(async () => {
      throw new Error('async boom');
    });
    expect((await fetchText(app.port, '/')).status).toBe(500);
    expect(logged.map((e) => (e as Error).message)).toEqual(['async boom']);
  });

  it('closes the connection when the handler fails after the headers went out', async () => {
    const ended: boolean[] = [];
    const app = await serve(
      async (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('partial');
        await new Promise((r) => setTimeout(r, 5));
        ended.push(getContextCache() !== undefined);
        throw new Error('late boom');
      },
      { onError: () => {} },
    );
    await expect(fetchText(app.port, '/')).rejects.toThrow();
    expect(ended).toEqual([true]);
  });

  it('rejects a handler that is not a function', () => {
    expect(() => contextCache('index.html' as never)).toThrow(
      new TypeError(
        'contextCache(): handler must be a request listener such as (req, res) => res.end(\'ok\'), got a string ("index.html").',
      ),
    );
    expect(() => contextCache(() => {}, { onError: 1 } as never)).toThrow(
      /options\.onError must be a function/,
    );
  });
});

describe('node:http adapter watching the response', () => {
  const apps: RunningApp[] = [];
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
  });

  /** The response's 'close' listener counts: at the start, after one lookup, after another. */
  async function closeListeners(options?: Options): Promise<number[]> {
    const counts: number[] = [];
    const app = await listen(
      createServer(
        contextCache(async (_req, res) => {
          counts.push(res.listenerCount('close'));
          // Looking at the cache is not using it.
          expect(getContextCache()?.stats().loads).toBe(0);
          counts.push(res.listenerCount('close'));
          await getWithContextCache('watch', 1, async () => 1);
          counts.push(res.listenerCount('close'));
          await getWithContextCache('watch', 2, async () => 2);
          counts.push(res.listenerCount('close'));
          res.end('ok');
        }, options),
      ),
    );
    apps.push(app);
    expect(await fetchText(app.port, '/')).toEqual({ status: 200, body: 'ok' });
    return counts;
  }

  it("adds its listener on the cache's first use, or from the start when onEnd waits for the end", async () => {
    const lazy = await closeListeners();
    // A request that never uses its cache adds nothing to its response.
    expect(lazy[1]).toBe(lazy[0]);
    expect(lazy[2]).toBe((lazy[0] as number) + 1);
    expect(lazy[3]).toBe(lazy[2]);
    const eager = await closeListeners({ onEnd: () => {} });
    expect(eager[0]).toBe(lazy[2]);
    expect(eager[3]).toBe(eager[0]);
  });

  it('aborts a signal asked for after the cache was ended by hand, when the response closes', async () => {
    let signal: AbortSignal | undefined;
    const app = await listen(
      createServer(
        contextCache((_req, res) => {
          getContextCache()?.end();
          signal = currentSignal();
          res.end('ok');
        }),
      ),
    );
    apps.push(app);
    expect(await fetchText(app.port, '/')).toEqual({ status: 200, body: 'ok' });
    await vi.waitFor(() => expect(signal?.aborted).toBe(true));
    expect((signal?.reason as Error | undefined)?.message).toMatch(/response finished/);
  });
});

describe('node:http adapter mounted twice', () => {
  it('runs the inner one in the outer cache, which alone ends it and reports onEnd', async () => {
    const ends: string[] = [];
    const seen: unknown[] = [];
    const inner = contextCache(
      (_req, res) => {
        seen.push(getContextCache());
        res.end('ok');
      },
      { onEnd: () => ends.push('inner') },
    );
    const outer = contextCache(
      (req, res) => {
        seen.push(getContextCache());
        inner(req, res);
      },
      { onEnd: () => ends.push('outer') },
    );
    const app = await listen(createServer(outer));
    try {
      expect(await fetchText(app.port, '/')).toEqual({ status: 200, body: 'ok' });
      await expectOuterCacheOnly(seen, ends);
    } finally {
      await app.close();
    }
  });
});

describe('node:http adapter typing', () => {
  it('passes the IncomingMessage to onEnd and onError and returns a named listener', () => {
    expectTypeOf<Parameters<NonNullable<Options['onEnd']>>[1]>().toEqualTypeOf<IncomingMessage>();
    expectTypeOf<Parameters<NonNullable<Options['onError']>>[1]>().toEqualTypeOf<IncomingMessage>();
    const listener = contextCache(() => {});
    expectTypeOf(listener).toBeCallableWith(
      new IncomingMessage(new Socket()),
      {} as ServerResponse,
    );
    expect(listener.name).toBe('contextCacheHandler');
  });
});
