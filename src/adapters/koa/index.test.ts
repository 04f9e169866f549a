import { createServer } from 'node:http';
import Koa, { type Context, type Middleware } from 'koa';
import Koa2 from 'koa2';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { listen } from '../../../test/adapters/node.js';
import { type AppSpec, adapterTable } from '../../../test/adapters/table.js';
import { contextCache, type Options } from './index.js';

async function readJson(ctx: Context): Promise<unknown> {
  let text = '';
  for await (const chunk of ctx.req) text += String(chunk);
  return JSON.parse(text);
}

function driver(name: string, Framework: typeof Koa) {
  return {
    name,
    pathOf: (req: unknown) => (req as Context).path,
    async start(spec: AppSpec) {
      const app = new Framework();
      app.silent = true;
      const middleware = contextCache(spec.options as Options);
      const view = (ctx: Context, body?: unknown) => ({
        method: ctx.method,
        path: ctx.path,
        query: new URLSearchParams(ctx.querystring),
        body,
      });
      const before = spec.before;
      if (before) {
        app.use((_ctx, next) => {
          before();
          return next();
        });
      }
      app.use(middleware);
      app.use(async (ctx) => {
        await spec.early?.(view(ctx));
        const body = ctx.method === 'POST' ? await readJson(ctx) : undefined;
        await spec.middleware?.(view(ctx, body));
        const route = spec.routes[ctx.path];
        if (route === undefined) return;
        const reply = await route(view(ctx, body));
        ctx.status = reply.status ?? 200;
        ctx.set(reply.headers ?? {});
        ctx.body = reply.stream ?? reply.json;
      });
      return listen(createServer(app.callback()));
    },
  };
}

adapterTable(driver('koa 3', Koa));
adapterTable(driver('koa 2', Koa2));

describe('koa adapter typing', () => {
  it('passes Koa ctx to onEnd and returns a named middleware', () => {
    expectTypeOf<Parameters<NonNullable<Options['onEnd']>>[1]>().toEqualTypeOf<Context>();
    expectTypeOf(contextCache).returns.toEqualTypeOf<Middleware>();
    expect(contextCache().name).toBe('contextCacheMiddleware');
  });
});
