import type { NextFunction, Request, Response } from 'express';
import { type AdapterOptions, checkAdapterOptions } from '../lifecycle.js';
import { runRequest } from '../node-response.js';

/** Options of the Express middleware; `onEnd` receives Express's `req`. */
export type Options = AdapterOptions<Request>;

const EXPRESS_USAGE = {
  mounted: 'app.use(contextCache)',
  right: 'app.use(contextCache()) or app.use(contextCache({ serverTiming: true }))',
};

/** The middleware `contextCache()` returns (Express 4 and 5). */
export type ContextCacheMiddleware = (req: Request, res: Response, next: NextFunction) => void;

/**
 * Express middleware (Express 4 and 5) that gives every request its own cache. Mount it
 * before the routes, body parsers and middleware that should see the cache. The cache
 * ends once the response has been sent or the connection closed, so streamed responses
 * keep it until their last byte.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { contextCache } from 'context-cache/express';
 *
 * const app = express();
 * app.use(contextCache({ serverTiming: true }));
 * app.get('/users/:id', async (req, res) => res.json(await getUser(req.params.id)));
 * ```
 */
export function contextCache(options?: Options): ContextCacheMiddleware {
  // Mounted itself (`app.use(contextCache)`), this runs per request with `req` as
  // `options`: the TypeError goes to Express's error handling (a 500, logged).
  const settings = checkAdapterOptions<Request>('contextCache', options, EXPRESS_USAGE);
  return function contextCacheMiddleware(req, res, next) {
    runRequest(res, req, settings, next);
  };
}
