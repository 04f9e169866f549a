import type { Context, Middleware } from 'koa';
import { type AdapterOptions, checkAdapterOptions } from '../lifecycle.js';
import { runRequest } from '../node-response.js';

/** Options of the Koa middleware; `onEnd` receives Koa's `ctx`. */
export type Options = AdapterOptions<Context>;

const KOA_USAGE = {
  mounted: 'app.use(contextCache)',
  right: 'app.use(contextCache()) or app.use(contextCache({ serverTiming: true }))',
};

/**
 * Koa middleware (Koa 3 and 2) that gives every request its own cache. Mount it first,
 * before the middleware that should see the cache. The cache ends once the response
 * has been sent or the connection closed, so a stream set as `ctx.body` keeps it until
 * its last byte, well after the middleware chain has returned.
 *
 * @example
 * ```ts
 * import Koa from 'koa';
 * import { contextCache } from 'context-cache/koa';
 *
 * const app = new Koa();
 * app.use(contextCache({ serverTiming: true }));
 * app.use(async (ctx) => {
 *   ctx.body = await getUser(ctx.query.id);
 * });
 * ```
 */
export function contextCache(options?: Options): Middleware {
  // Mounted itself (`app.use(contextCache)`), this runs per request with `ctx` as
  // `options`: the TypeError goes to Koa's error handling (a 500, logged by app.onerror).
  const settings = checkAdapterOptions<Context>('contextCache', options, KOA_USAGE);
  return function contextCacheMiddleware(ctx, next) {
    return runRequest(ctx.res, ctx, settings, next);
  };
}
