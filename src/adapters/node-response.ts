/**
 * The adapters on a Node `ServerResponse` (Express, Fastify, Koa, node:http): one scope
 * per request, ended when the response has been sent or the connection closed, and the
 * `Server-Timing` entry written with the headers.
 */

import type { AsyncLocalStorage } from 'node:async_hooks';
import type { ServerResponse } from 'node:http';
import onHeaders from 'on-headers';
import { publishingEnds } from '../diagnostics.js';
import type { CacheStats, EphemeralCache } from '../index.js';
import { type ScopeState, scopeStorage } from '../scope.js';
import { openedHere, type Settings, serverTimingEntry } from './lifecycle.js';
import { ResponseRequest } from './response-watch.js';

/**
 * Run `next` (the rest of the request) in a new request scope tied to `res`, and return
 * what it returns. Inside the live cache an adapter opened for this same response (the
 * adapter mounted twice) `next` simply runs in it: the outer adapter owns that cache and
 * ends it. Any other enclosing cache is not the request's own (see `openedHere`).
 */
export function runRequest<Req, T>(
  res: ServerResponse,
  req: Req,
  settings: Settings<Req>,
  next: () => T,
): T {
  // The enclosing scope's live cache, read from the storage itself: on Node 24, reading
  // it through a function (getContextCache() or currentScope()) cost ~140 ns more per
  // request (bench/adapter.mjs, one process per build).
  storage ??= scopeStorage();
  const outer = storage.getStore()?.cache;
  if (outer !== undefined && !outer.ended && openedHere(res, outer)) return next();
  const request = new ResponseRequest(req, settings, res);
  // Neither a listener nor a header hook keeps an async context: set up outside the scope,
  // they let `next` itself run in it, with no closure per request.
  if (settings.serverTiming) writeServerTiming(res, request);
  // Someone waits for this request's end (`onEnd`, a `context-cache:end` subscriber):
  // watch for it now. Otherwise the cache calls `track()` on its first use, and a
  // request that never uses its cache (a health check, a static file, a redirect)
  // never adds a listener to its response.
  return request.open(next, settings.onEnd === undefined && !publishingEnds());
}

/** The scopes' AsyncLocalStorage, shared by every copy of this package (see scope.ts). */
let storage: AsyncLocalStorage<ScopeState> | undefined;

/** Write this request's `Server-Timing` entry when `res` writes its headers. */
function writeServerTiming(
  res: ServerResponse,
  request: { readonly cache: EphemeralCache | undefined },
): void {
  onHeaders(res, function writeServerTiming(this: ServerResponse) {
    const cache = request.cache;
    if (cache !== undefined) appendServerTiming(this, cache.stats());
  });
}

/** Append this request's entry to any `Server-Timing` header already set on `res`. */
function appendServerTiming(res: ServerResponse, stats: CacheStats): void {
  const entry = serverTimingEntry(stats);
  const previous = res.getHeader('server-timing');
  if (previous === undefined || previous === '') {
    res.setHeader('Server-Timing', entry);
  } else if (Array.isArray(previous)) {
    res.setHeader('Server-Timing', [...previous, entry]);
  } else {
    res.setHeader('Server-Timing', `${String(previous)}, ${entry}`);
  }
}
