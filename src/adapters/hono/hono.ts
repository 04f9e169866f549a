import { ServerResponse } from 'node:http';
import type { Context, MiddlewareHandler } from 'hono';
import { getContextCache } from '../../index.js';
import {
  type AdapterOptions,
  checkAdapterOptions,
  OpenRequest,
  RESPONSE_FINISHED,
  runRequest,
  serverTimingEntry,
} from '../lifecycle.js';

/** Options of the Hono middleware; `onEnd` receives Hono's `c`. */
export type Options = AdapterOptions<Context>;

const HONO_USAGE = {
  mounted: 'app.use(contextCache)',
  right: 'app.use(contextCache()) or app.use(contextCache({ serverTiming: true }))',
};

/** The Node response `@hono/node-server` passes as `c.env.outgoing`, if any. */
function nodeResponse(c: Context): ServerResponse | undefined {
  const env: unknown = c.env;
  if (typeof env !== 'object' || env === null) return undefined;
  const outgoing = (env as { outgoing?: unknown }).outgoing;
  return outgoing instanceof ServerResponse ? outgoing : undefined;
}

/**
 * Hono middleware that gives every request its own cache. On `@hono/node-server` the
 * cache lives until the Node response has been fully sent (or the connection closed),
 * which is after this middleware has returned: a streamed body keeps its cache to the
 * last chunk. Elsewhere (other runtimes, `app.request()` in tests) there is no Node
 * response to watch, and the cache ends when the handlers have returned.
 *
 * @example
 * ```ts
 * import { serve } from '@hono/node-server';
 * import { Hono } from 'hono';
 * import { contextCache } from 'context-cache/hono';
 *
 * const app = new Hono();
 * app.use(contextCache({ serverTiming: true }));
 * app.get('/users/:id', async (c) => c.json(await getUser(c.req.param('id'))));
 * serve(app);
 * ```
 */
export function contextCache(options?: Options): MiddlewareHandler {
  // Mounted itself (`app.use(contextCache)`), this runs per request with `c` as
  // `options`: the TypeError goes to Hono's onError (a 500, logged by default).
  const settings = checkAdapterOptions<Context>('contextCache', options, HONO_USAGE);
  return async function contextCacheMiddleware(c, next) {
    const res = nodeResponse(c);
    if (res !== undefined) return runRequest(res, c, settings, next);
    if (getContextCache() !== undefined) return next();
    const request = new OpenRequest(c, settings);
    return request.open(async () => {
      try {
        await next();
      } finally {
        const cache = request.cache;
        if (settings.serverTiming && cache !== undefined) {
          c.header('Server-Timing', serverTimingEntry(cache.stats()), { append: true });
        }
        request.finish(RESPONSE_FINISHED);
      }
    });
  };
}
