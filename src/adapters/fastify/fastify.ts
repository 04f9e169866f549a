import { AsyncResource } from 'node:async_hooks';
import type { FastifyPluginCallback, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import {
  type AdapterOptions,
  checkAdapterOptions,
  runRequest,
  type Settings,
} from '../lifecycle.js';

/** Options of the Fastify plugin; `onEnd` receives Fastify's `request`. */
export type Options = AdapterOptions<FastifyRequest>;

/** Where `onRequest` leaves the request's async context for `preValidation` to resume. */
const kResume = Symbol('context-cache.resume');

type WithResume = FastifyRequest & { [kResume]: AsyncResource | null };

const plugin: FastifyPluginCallback<Options> = (fastify, options, done) => {
  // Fastify hands the plugin the object given to register(), possibly with its own keys
  // (prefix, logLevel); only ours are checked.
  let settings: Settings<FastifyRequest>;
  try {
    settings = checkAdapterOptions<FastifyRequest>('contextCache', options);
  } catch (err) {
    done(err as Error);
    return;
  }
  fastify.decorateRequest(kResume, null);

  fastify.addHook('onRequest', function contextCacheOnRequest(request, reply, next) {
    runRequest(reply.raw, request, settings, () => {
      const headers = request.raw.headers;
      if (headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined) {
        (request as WithResume)[kResume] = new AsyncResource('context-cache');
      }
      next();
    });
  });

  // A body is read in 'data'/'end' listeners, which run in the socket's async context,
  // not the request's (nodejs/node#34430), so hooks after parsing could see no scope.
  // Fastify 5 now re-enters the request's context after its content-type parsers; this
  // resumes the context saved in onRequest anyway, as fastify-request-context does, for
  // Fastify releases and payload hooks that do not. Only requests with a body pay for it.
  fastify.addHook('preValidation', function contextCachePreValidation(request, _reply, next) {
    const resume = (request as WithResume)[kResume];
    if (resume === null) {
      next();
      return;
    }
    (request as WithResume)[kResume] = null;
    resume.runInAsyncScope(next, undefined);
    resume.emitDestroy();
  });

  done();
};

/**
 * Fastify plugin that gives every request its own cache. It applies to the whole app
 * (not only the encapsulation context it is registered in), and the scope is visible in
 * every hook from `onRequest` to `onSend`, in body parsers' aftermath and in async
 * handlers. Register it before the hooks that should see the cache.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify';
 * import { contextCache } from 'context-cache/fastify';
 *
 * const app = Fastify();
 * await app.register(contextCache, { serverTiming: true });
 * app.get('/users/:id', async (request) => getUser((request.params as { id: string }).id));
 * ```
 */
export const contextCache: FastifyPluginCallback<Options> = fp(plugin, {
  name: 'context-cache',
  fastify: '5.x',
});
