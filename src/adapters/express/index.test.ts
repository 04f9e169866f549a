import { createServer } from 'node:http';
import express from 'express';
import express4 from 'express4';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { listen } from '../../../test/adapters/node.js';
import { type AppSpec, adapterTable, type RouteReply } from '../../../test/adapters/table.js';
import { type ContextCacheMiddleware, contextCache, type Options } from './index.js';

type Express = typeof express;

function driver(name: string, framework: Express) {
  return {
    name,
    pathOf: (req: unknown) => (req as express.Request).originalUrl.split('?')[0] ?? '',
    async start(spec: AppSpec) {
      const app = framework();
      const middleware = contextCache(spec.options as Options);
      const view = (req: express.Request) => ({
        method: req.method,
        path: req.path,
        query: new URL(req.originalUrl, 'http://localhost').searchParams,
        body: req.method === 'POST' ? req.body : undefined,
      });
      const before = spec.before;
      if (before) {
        app.use((_req, _res, next) => {
          before();
          next();
        });
      }
      app.use(middleware);
      const early = spec.early;
      if (early) app.use((req, _res, next) => void early(view(req)).then(() => next(), next));
      app.use(framework.json());
      const mid = spec.middleware;
      if (mid) app.use((req, _res, next) => void mid(view(req)).then(() => next(), next));
      for (const [path, route] of Object.entries(spec.routes)) {
        app.all(path, (req, res, next) => {
          route(view(req)).then((reply: RouteReply) => {
            res.status(reply.status ?? 200);
            for (const [k, v] of Object.entries(reply.headers ?? {})) res.setHeader(k, v);
            if (reply.stream) reply.stream.pipe(res);
            else res.json(reply.json);
          }, next);
        });
      }
      return listen(createServer(app));
    },
  };
}

adapterTable(driver('express 5', express));
adapterTable(driver('express 4', express4));

describe('express adapter typing', () => {
  it('passes Express req to onEnd and returns a named middleware', () => {
    expectTypeOf<Parameters<NonNullable<Options['onEnd']>>[1]>().toEqualTypeOf<express.Request>();
    expectTypeOf(contextCache).returns.toEqualTypeOf<ContextCacheMiddleware>();
    expect(contextCache().name).toBe('contextCacheMiddleware');
  });
});
