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
import {
  CLIENT_CLOSED,
  OpenRequest,
  RESPONSE_FINISHED,
  type Settings,
  serverTimingEntry,
} from './lifecycle.js';

/**
 * Run `next` (the rest of the request) in a new request scope tied to `res`, and return
 * what it returns. Inside a scope that already has a live cache (the adapter mounted
 * twice) `next` simply runs in it: the outer adapter owns that cache and ends it.
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
  if (outer !== undefined && !outer.ended) return next();
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

/** Where a request leaves itself on its response for the shared `'close'` listener. */
const kRequest = Symbol('context-cache.request');

type Tracked = ServerResponse & { [kRequest]?: { finish(reason: string): void } | undefined };

/** A request on a Node `ServerResponse`, which ends when the response closes. */
class ResponseRequest<Req> extends OpenRequest<Req> {
  /** Kept until `track()` runs, which may be never: then the response is not watched. */
  private res: ServerResponse | undefined;

  constructor(req: Req, settings: Settings<Req>, res: ServerResponse) {
    super(req, settings);
    this.res = res;
  }

  /**
   * Watch the response for its end: on its `'close'`, or at once if it has closed
   * already (the cache's first use came from work that outlived the response).
   */
  override track(): void {
    const res = this.res;
    if (res === undefined) return;
    this.res = undefined;
    if (closed(res)) {
      this.finish(endReason(res));
      return;
    }
    (res as Tracked)[kRequest] = this;
    res.on('close', onClose);
  }

  /** Whether the response has closed, asked before `track()` (see `SignalSource.over`). */
  override over(): boolean {
    const res = this.res;
    return res !== undefined && closed(res);
  }
}

/** Whether `res` has closed (or is closing), its `'close'` emitted or about to be. */
function closed(res: ServerResponse): boolean {
  return res.destroyed || res.closed;
}

/**
 * A response emits 'close' exactly once, whatever happens (Node 20 and later): just
 * after 'finish' when it has been sent, or when its connection goes first. One shared
 * listener is all on-finished would do for us here, at a fraction of its cost.
 */
function onClose(this: ServerResponse): void {
  const request = (this as Tracked)[kRequest];
  if (request === undefined) return;
  (this as Tracked)[kRequest] = undefined;
  request.finish(endReason(this));
}

/** Why a closed response's request ended: sent in full, or the client went first. */
function endReason(res: ServerResponse): string {
  return res.writableFinished ? RESPONSE_FINISHED : CLIENT_CLOSED;
}

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
