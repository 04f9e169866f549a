import { connect } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyPluginCallback, type FastifyRequest } from 'fastify';
import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import { type AppSpec, adapterTable, type RouteReply } from '../../../test/adapters/table.js';
import { type EphemeralCache, getContextCache, getWithContextCache } from '../../index.js';
import { contextCache, type Options } from './index.js';

function view(request: FastifyRequest) {
  return {
    method: request.method,
    path: request.url.split('?')[0] ?? '',
    query: new URL(request.url, 'http://localhost').searchParams,
    body: request.method === 'POST' ? request.body : undefined,
  };
}

adapterTable({
  name: 'fastify 5',
  pathOf: (req) => (req as FastifyRequest).url.split('?')[0] ?? '',
  async start(spec: AppSpec) {
    const app = Fastify();
    const before = spec.before;
    if (before) {
      app.addHook('onRequest', (_request, _reply, done) => {
        before();
        done();
      });
    }
    try {
      await app.register(contextCache, spec.options as Options);
    } catch (err) {
      await app.close();
      throw err;
    }
    const early = spec.early;
    if (early) app.addHook('onRequest', async (request) => early(view(request)));
    const middleware = spec.middleware;
    if (middleware) app.addHook('preHandler', async (request) => middleware(view(request)));
    for (const [url, route] of Object.entries(spec.routes)) {
      app.route({
        method: ['GET', 'POST'],
        url,
        handler: async (request, reply) => {
          const out: RouteReply = await route(view(request));
          reply.code(out.status ?? 200);
          reply.headers(out.headers ?? {});
          return reply.send(out.stream ?? out.json);
        },
      });
    }
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    return {
      port: address.port,
      close: async () => {
        app.server.closeIdleConnections();
        app.server.closeAllConnections();
        await app.close();
      },
    };
  },
});

describe('fastify plugin', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  it('shows one cache in every hook from onRequest to onSend, in every encapsulation context', async () => {
    const app = Fastify();
    closers.push(() => app.close());
    await app.register(contextCache);
    const seen: Record<string, EphemeralCache | undefined> = {};
    const record = (name: string) => {
      seen[name] = getContextCache();
    };
    app.addHook('onRequest', async () => record('onRequest'));
    app.addHook('preParsing', async (_request, _reply, payload) => {
      record('preParsing');
      return payload;
    });
    app.addHook('preValidation', async () => record('preValidation'));
    app.addHook('preHandler', async () => record('preHandler'));
    app.addHook('preSerialization', async (_request, _reply, payload) => {
      record('preSerialization');
      return payload;
    });
    app.addHook('onSend', async (_request, _reply, payload) => {
      record('onSend');
      return payload;
    });
    await app.register(async (child) => {
      child.addHook('preHandler', async () => record('child preHandler'));
      child.post('/child', async (request) => {
        await sleep(1);
        record('handler');
        return { got: request.body };
      });
    });
    const reply = await app.inject({ method: 'POST', url: '/child', payload: { a: 1 } });
    expect(reply.json()).toEqual({ got: { a: 1 } });
    const names = [
      'onRequest',
      'preParsing',
      'preValidation',
      'preHandler',
      'child preHandler',
      'handler',
      'preSerialization',
      'onSend',
    ];
    expect(Object.keys(seen).sort()).toEqual([...names].sort());
    const first = seen.onRequest;
    expect(first).toBeDefined();
    for (const name of names) expect(seen[name], name).toBe(first);
  });

  it('over HTTP/2, finds a cache first used after the response already ended', async () => {
    const app = Fastify({ http2: true });
    closers.push(() => app.close());
    await app.register(contextCache);
    const warnings: unknown[] = [];
    const emitWarning = process.emitWarning;
    process.emitWarning = ((_message: unknown, _type: unknown, code: unknown) =>
      void warnings.push(code)) as typeof process.emitWarning;
    closers.push(async () => {
      process.emitWarning = emitWarning;
    });
    const later: { open?: boolean; loads: number } = { loads: 0 };
    const load = async () => {
      later.loads++;
      return 'value';
    };
    const done = new Promise<void>((resolve) => {
      app.get('/', async () => {
        // Work the handler leaves behind, whose first use of the cache comes after the
        // response: the response's end is read from its HTTP/2 stream.
        setTimeout(async () => {
          later.open = getContextCache() !== undefined;
          await getWithContextCache('late', 1, load);
          await getWithContextCache('late', 1, load);
          resolve();
        }, 100);
        return 'ok';
      });
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const client = connect(`http://127.0.0.1:${port}`);
    const body = await new Promise<string>((resolve, reject) => {
      const stream = client.request({ ':path': '/' });
      let text = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        text += chunk;
      });
      stream.on('end', () => resolve(text));
      stream.on('error', reject);
    });
    client.destroy();
    expect(body).toBe('ok');
    await done;
    expect(later).toEqual({ open: false, loads: 2 });
    expect(warnings).toEqual(['CONTEXT_CACHE_ENDED']);
  });

  it('is named context-cache for dependency checks', () => {
    expect(
      (contextCache as unknown as Record<symbol, unknown>)[Symbol.for('plugin-meta')],
    ).toMatchObject({
      name: 'context-cache',
    });
  });
});

describe('fastify plugin typing', () => {
  it('is a FastifyPluginCallback whose onEnd gets the Fastify request', () => {
    expectTypeOf(contextCache).toEqualTypeOf<FastifyPluginCallback<Options>>();
    expectTypeOf<Parameters<NonNullable<Options['onEnd']>>[1]>().toEqualTypeOf<FastifyRequest>();
  });
});
