// Type tests of the adapters' options and handlers: checked by `tsc -p tsconfig.spec.json`.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import express, { type Request as ExpressRequest } from 'express';
import Fastify, { type FastifyRequest } from 'fastify';
import { Hono, type Context as HonoContext, type MiddlewareHandler } from 'hono';
import Koa, { type Context as KoaContext, type Middleware } from 'koa';
import { expectTypeOf } from 'vitest';
import * as expressAdapter from '../../src/adapters/express/index.js';
import * as fastifyAdapter from '../../src/adapters/fastify/index.js';
import * as honoAdapter from '../../src/adapters/hono/index.js';
import * as httpAdapter from '../../src/adapters/http/index.js';
import * as koaAdapter from '../../src/adapters/koa/index.js';
import type { CacheStats } from '../../src/index.js';

type OnEnd<O> = NonNullable<O extends { onEnd?: infer F } ? F : never>;

// Every adapter takes the same options; onEnd gets the framework's own request object.
interface Common {
  lifetime?: number;
  maxEntries?: number;
  serverTiming?: boolean;
}
expectTypeOf<expressAdapter.Options>().toExtend<Common>();
expectTypeOf<fastifyAdapter.Options>().toExtend<Common>();
expectTypeOf<koaAdapter.Options>().toExtend<Common>();
expectTypeOf<honoAdapter.Options>().toExtend<Common>();
expectTypeOf<httpAdapter.Options>().toExtend<Common>();
expectTypeOf<Parameters<OnEnd<expressAdapter.Options>>>().toEqualTypeOf<
  [stats: CacheStats, req: ExpressRequest]
>();
expectTypeOf<Parameters<OnEnd<fastifyAdapter.Options>>>().toEqualTypeOf<
  [stats: CacheStats, req: FastifyRequest]
>();
expectTypeOf<Parameters<OnEnd<koaAdapter.Options>>>().toEqualTypeOf<
  [stats: CacheStats, req: KoaContext]
>();
expectTypeOf<Parameters<OnEnd<honoAdapter.Options>>>().toEqualTypeOf<
  [stats: CacheStats, req: HonoContext]
>();
expectTypeOf<Parameters<OnEnd<httpAdapter.Options>>>().toEqualTypeOf<
  [stats: CacheStats, req: IncomingMessage]
>();
expectTypeOf<NonNullable<httpAdapter.Options['onError']>>().toEqualTypeOf<
  (err: unknown, req: IncomingMessage) => void
>();

// Each factory's result plugs into its framework without a cast.
const app = express();
app.use(expressAdapter.contextCache({ serverTiming: true, onEnd: (stats) => stats.hits }));
expectTypeOf(expressAdapter.contextCache()).toEqualTypeOf<expressAdapter.ContextCacheMiddleware>();

const fastify = Fastify();
void fastify.register(fastifyAdapter.contextCache, { lifetime: 60_000 });
void fastify.register(fastifyAdapter.contextCache);
// @ts-expect-error lifetime is a number of milliseconds
void fastify.register(fastifyAdapter.contextCache, { lifetime: '1m' });

const koa = new Koa();
koa.use(koaAdapter.contextCache({ maxEntries: 1000 }));
expectTypeOf(koaAdapter.contextCache()).toEqualTypeOf<Middleware>();

const hono = new Hono();
hono.use(honoAdapter.contextCache({ onEnd: (stats, c) => console.log(c.req.path, stats.loads) }));
expectTypeOf(honoAdapter.contextCache()).toEqualTypeOf<MiddlewareHandler>();

const listener = httpAdapter.contextCache(
  async (_req, res) => {
    res.end('ok');
  },
  { onError: (err, req) => console.error(req.url, err) },
);
expectTypeOf(listener).toEqualTypeOf<(req: IncomingMessage, res: ServerResponse) => void>();
createServer(listener);

// Misuse that must not compile.
// @ts-expect-error serverTiming is a boolean
expressAdapter.contextCache({ serverTiming: 'yes' });
// @ts-expect-error unknown options are rejected (a typo of maxEntries)
koaAdapter.contextCache({ maxEntry: 10 });
// @ts-expect-error onEnd receives the stats first
honoAdapter.contextCache({ onEnd: (c: HonoContext) => c.req.path });
// @ts-expect-error the node:http adapter wraps a handler: options alone are no listener
createServer(httpAdapter.contextCache({ serverTiming: true }));
// @ts-expect-error the factory itself is no listener: createServer(contextCache) is rejected
createServer(httpAdapter.contextCache);
// @ts-expect-error the Hono factory itself is no middleware: app.use(contextCache) is rejected
new Hono().use(honoAdapter.contextCache);
// @ts-expect-error the Fastify plugin is registered, not called: app.register(contextCache())
Fastify().register(fastifyAdapter.contextCache());
// Express and Koa cannot reject app.use(contextCache) in their types (Express's app.use
// also takes error handlers, whose first parameter is `any`; Koa infers its context
// type from the middleware): the first request answers it with a TypeError instead.
express().use(expressAdapter.contextCache);
new Koa().use(koaAdapter.contextCache);
