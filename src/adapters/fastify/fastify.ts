import type { FastifyInstance, FastifyPluginCallback, FastifyRequest } from 'fastify';
import { describe } from '../../warnings.js';
import { type AdapterOptions, checkAdapterOptions, type Settings } from '../lifecycle.js';
import { runRequest } from '../node-response.js';

/** Options of the Fastify plugin; `onEnd` receives Fastify's `request`. */
export type Options = AdapterOptions<FastifyRequest>;

/** What Fastify itself reads from the object given to `register()`, besides ours. */
const REGISTER_OPTIONS = ['prefix', 'logLevel', 'logSerializers'] as const;

function isFastify(value: unknown): value is FastifyInstance {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { addHook?: unknown }).addHook === 'function'
  );
}

const plugin: FastifyPluginCallback<Options> = function contextCache(fastify, options, done) {
  // Called by hand (`app.register(contextCache())`, `contextCache({ ... })`) rather than
  // by register(): say how to register it, at the line that called it.
  if (!isFastify(fastify) || typeof done !== 'function') {
    throw new TypeError(
      'contextCache is a Fastify plugin, not a function that makes one: register it ' +
        'without calling it, as await app.register(contextCache) or ' +
        'await app.register(contextCache, { serverTiming: true }). ' +
        `It was called with ${describe(fastify)}.`,
    );
  }
  // Fastify hands the plugin the object given to register(), possibly with its own keys
  // (prefix, logLevel); those are allowed, any other unknown key is an error.
  let settings: Settings<FastifyRequest>;
  try {
    settings = checkAdapterOptions<FastifyRequest>(
      'contextCache',
      options,
      undefined,
      REGISTER_OPTIONS,
    );
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

// What fastify-plugin would set, set here so that no app (an Express one included)
// installs it: `skip-override` makes the hook apply to the whole app rather than to
// the encapsulation context the plugin is registered in, the display name shows in
// Fastify's plugin tree and errors, and `plugin-meta` lets Fastify check its version
// and lets other plugins declare a dependency on 'context-cache'.
const meta = plugin as unknown as Record<symbol, unknown>;
meta[Symbol.for('skip-override')] = true;
meta[Symbol.for('fastify.display-name')] = 'context-cache';
meta[Symbol.for('plugin-meta')] = { name: 'context-cache', fastify: '5.x' };

/**
 * Fastify plugin that gives every request its own cache. It applies to the whole app
 * (not only the encapsulation context it is registered in), and the scope is visible in
 * every hook from `onRequest` to `onSend`, in body parsers' aftermath and in async
 * handlers. Register it before the hooks that should see the cache; register it, do not
 * call it.
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
export const contextCache: FastifyPluginCallback<Options> = plugin;
