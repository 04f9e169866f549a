import type { FastifyPluginCallback, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { type AdapterOptions, checkAdapterOptions, type Settings } from '../lifecycle.js';
import { runRequest } from '../node-response.js';

/** Options of the Fastify plugin; `onEnd` receives Fastify's `request`. */
export type Options = AdapterOptions<FastifyRequest>;

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
  // Bodies are read in 'data'/'end' listeners, which run in the socket's async context
  // (nodejs/node#34430); every Fastify 5 release runs its content-type parsers' callback
  // in an AsyncResource made in the request's context, so the hooks after parsing and the
  // handler are back in this scope without help from us.
  fastify.addHook('onRequest', function contextCacheOnRequest(request, reply, next) {
    runRequest(reply.raw, request, settings, next);
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
