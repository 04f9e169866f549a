// The adapter factory used where its result belongs, on real servers: every request is
// answered (a 500), the TypeError that shows the right line reaches the log, and the
// server keeps serving. Fastify's mistake is caught where the plugin is registered.
import { createServer, get } from 'node:http';
import { serve } from '@hono/node-server';
import express from 'express';
import express4 from 'express4';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as expressAdapter from '../src/adapters/express/index.js';
import * as fastifyAdapter from '../src/adapters/fastify/index.js';
import * as honoAdapter from '../src/adapters/hono/index.js';
import * as httpAdapter from '../src/adapters/http/index.js';
import * as koaAdapter from '../src/adapters/koa/index.js';
import { getContextCache } from '../src/index.js';
import { closeServer, listen } from './adapters/node.js';
import type { RunningApp } from './adapters/table.js';

const MOUNTED =
  'contextCache was mounted itself: app.use(contextCache) hands it every request, and it is ' +
  'the factory of the middleware, not the middleware. Call it once where it is mounted: ' +
  'app.use(contextCache()) or app.use(contextCache({ serverTiming: true })).';

function fetchText(port: number, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** console.error calls, as one string each (an Error as its stack). */
function captureLog(): string[] {
  const logged: string[] = [];
  vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
    logged.push(
      args.map((a) => (a instanceof Error ? (a.stack ?? a.message) : String(a))).join(' '),
    );
  });
  return logged;
}

const apps: RunningApp[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const app of apps.splice(0)) await app.close();
});

async function twoRequests(app: RunningApp) {
  apps.push(app);
  // Two requests: neither hangs, and the server survives the first.
  return [await fetchText(app.port), await fetchText(app.port)];
}

describe('app.use(contextCache) without the parentheses', () => {
  for (const [name, framework] of [
    ['express 5', express],
    ['express 4', express4],
  ] as const) {
    it(`${name}: a 500 per request, the TypeError in the log`, async () => {
      const logged = captureLog();
      const app = framework();
      app.set('env', 'production'); // Express logs errors unless its env is 'test'
      app.use(expressAdapter.contextCache);
      app.get('/', (_req, res) => {
        res.send('unreachable');
      });
      const replies = await twoRequests(await listen(createServer(app)));
      expect(replies.map((r) => r.status)).toEqual([500, 500]);
      expect(logged).toHaveLength(2);
      expect(logged[0]).toContain(`TypeError: ${MOUNTED}`);
    });
  }

  it('koa: a 500 per request (not a silent 404), the TypeError in the log', async () => {
    const logged = captureLog();
    const app = new Koa();
    app.use(koaAdapter.contextCache);
    app.use((ctx) => {
      ctx.body = 'unreachable';
    });
    const replies = await twoRequests(await listen(createServer(app.callback())));
    expect(replies).toEqual([
      { status: 500, body: 'Internal Server Error' },
      { status: 500, body: 'Internal Server Error' },
    ]);
    expect(logged.join('\n')).toContain(`TypeError: ${MOUNTED}`);
  });

  it('hono: a 500 with the error sent to onError (not "Invalid status code")', async () => {
    const logged = captureLog();
    const app = new Hono();
    app.use(honoAdapter.contextCache as never); // JavaScript: nothing stops it
    app.get('/', (c) => c.text('unreachable'));
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    const port = (server.address() as { port: number }).port;
    const replies = await twoRequests({ port, close: () => closeServer(server as never) });
    expect(replies).toEqual([
      { status: 500, body: 'Internal Server Error' },
      { status: 500, body: 'Internal Server Error' },
    ]);
    expect(logged).toHaveLength(2);
    expect(logged[0]).toContain(`TypeError: ${MOUNTED}`);
  });
});

describe('createServer(contextCache) without a handler', () => {
  it('answers each request with a 500 that says what to write, logs it, and never crashes', async () => {
    const logged = captureLog();
    const replies = await twoRequests(
      await listen(createServer(httpAdapter.contextCache as never)),
    );
    const message =
      'contextCache was mounted itself: createServer(contextCache) hands it every request, and ' +
      'it is the factory of the middleware, not the middleware. Call it once where it is ' +
      'mounted: createServer(contextCache((req, res) => { ... }, { serverTiming: true })) — it ' +
      'wraps your request listener.';
    for (const reply of replies) {
      expect(reply).toEqual({ status: 500, body: `Internal Server Error\n\n${message}\n` });
    }
    expect(logged).toHaveLength(2);
    expect(logged[0]).toContain(`TypeError: ${message}`);
  });

  it('rejects options given without a handler when the wrapper is made', () => {
    expect(() => httpAdapter.contextCache({ serverTiming: true } as never)).toThrow(
      /handler must be a request listener/,
    );
  });
});

describe('app.register(contextCache()) on Fastify', () => {
  const message =
    'contextCache is a Fastify plugin, not a function that makes one: register it without ' +
    'calling it, as await app.register(contextCache) or await app.register(contextCache, ' +
    '{ serverTiming: true }).';

  it('throws a TypeError at the line that called it, naming the right one', () => {
    expect(() => (fastifyAdapter.contextCache as () => unknown)()).toThrow(
      new TypeError(`${message} It was called with undefined.`),
    );
    expect(() =>
      (fastifyAdapter.contextCache as (o: unknown) => unknown)({ serverTiming: true }),
    ).toThrow(new TypeError(`${message} It was called with an object.`));
  });

  it("still applies app-wide without fastify-plugin, and accepts Fastify's own register options", async () => {
    const app = Fastify();
    await app.register(fastifyAdapter.contextCache, { serverTiming: true, logLevel: 'warn' });
    // A route in a child context (its own encapsulation) sees the cache: the plugin's
    // hook was added to the root, not to a context of its own.
    await app.register(
      async (child) => {
        child.get('/child', async () => ({ open: getContextCache() !== undefined }));
      },
      { prefix: '/p' },
    );
    const reply = await app.inject({ url: '/p/child' });
    expect(reply.json()).toEqual({ open: true });
    expect(reply.headers['server-timing']).toBe(
      'context-cache;desc="hits=0 joins=0 misses=0 loads=0 batches=0"',
    );
    expect(app.printPlugins()).toContain('context-cache');
    await app.close();
  });

  it('refuses an unknown option through register()', async () => {
    const app = Fastify();
    await expect(
      app.register(fastifyAdapter.contextCache, { serverTimings: true } as never),
    ).rejects.toThrow(
      "contextCache(): unknown option options.serverTimings (did you mean 'serverTiming'?). " +
        "The known options are 'lifetime', 'maxEntries', 'serverTiming', 'onEnd', 'prefix', 'logLevel' or 'logSerializers'.",
    );
    await app.close().catch(() => {});
  });
});

describe('adapter options are checked by name', () => {
  it('names the unknown option and lists the known ones', () => {
    expect(() => expressAdapter.contextCache({ lifetimeMs: 5 } as never)).toThrow(
      new TypeError(
        "contextCache(): unknown option options.lifetimeMs (did you mean 'lifetime'?). " +
          "The known options are 'lifetime', 'maxEntries', 'serverTiming' or 'onEnd'.",
      ),
    );
    expect(() => httpAdapter.contextCache(() => {}, { onErr: () => {} } as never)).toThrow(
      new TypeError(
        "contextCache(): unknown option options.onErr (did you mean 'onError'?). " +
          "The known options are 'lifetime', 'maxEntries', 'serverTiming', 'onEnd' or 'onError'.",
      ),
    );
  });
});
