/**
 * What every adapter does: open one scope per request (the scope `withCacheContext`
 * opens, with options checked once when the adapter is made), and when the response is done end the cache, abort the
 * request's signal and call `onEnd` — each exactly once. Nothing here is Node's but
 * `setMaxListeners` (which Bun, Deno and Workers have too): the adapters on a Node
 * `ServerResponse` find it in `node-response.ts`, the Hono adapter also runs on
 * runtimes that have none.
 */

import { setMaxListeners } from 'node:events';
import {
  Cache,
  DEFAULT_LIFETIME,
  DEFAULT_MAX_ENTRIES,
  isThenable,
  type SignalSource,
} from '../ephemeral.js';
import type { CacheStats } from '../index.js';
import { runInScope } from '../scope.js';
import { checkOptionNames, describe, isCount, isDuration, warnWithDetail } from '../warnings.js';

/** Options every adapter takes; `Req` is the framework's own request object. */
export interface AdapterOptions<Req> {
  /** How long a request's cache serves, in ms (default 5 minutes). */
  lifetime?: number;
  /** At most this many entries per request; past it the oldest are evicted (default 10,000). */
  maxEntries?: number;
  /**
   * Append `context-cache;desc="hits=H joins=J misses=M loads=L batches=B"` to the response's
   * `Server-Timing` header, with the counts at the moment headers are written.
   * Off by default: the counts tell a visitor something about the server.
   */
  serverTiming?: boolean;
  /**
   * Called once per request with the final counts, after the response has been sent or
   * the connection closed (also after a disconnect or an error). A throw (or an async
   * `onEnd`'s rejection) is reported with `process.emitWarning` and does not affect the
   * response.
   */
  onEnd?: (stats: CacheStats, req: Req) => void;
}

/** Options checked once, when the middleware is created. */
export interface Settings<Req> {
  /** Each request cache's lifetime and bound, defaults settled. */
  readonly lifetime: number;
  readonly maxEntries: number;
  readonly serverTiming: boolean;
  readonly onEnd: ((stats: CacheStats, req: Req) => void) | undefined;
}

/** Reason of the request's signal when the client went away before the response was sent. */
export const CLIENT_CLOSED =
  'context-cache: the client closed the connection before the response finished';

/** Reason of the request's signal once the response has been sent. */
export const RESPONSE_FINISHED = 'context-cache: the response finished';

/** Reason of the request's signal when the response body failed while it was being sent. */
export const BODY_FAILED = 'context-cache: the response body failed before it was fully sent';

/** Code of the warning emitted when an `onEnd` callback throws. */
export const ON_END_FAILED = 'CONTEXT_CACHE_ON_END_FAILED';

/** The options every adapter knows. */
export const ADAPTER_OPTIONS = ['lifetime', 'maxEntries', 'serverTiming', 'onEnd'] as const;

/**
 * Set by an adapter on the object that stands for its request (the Node response, or
 * Hono's `c` on a fetch runtime): the request it opened there.
 */
export const OPENED: unique symbol = Symbol('context-cache.request');

/** An object an adapter may have marked with the request it opened there. */
export type Marked = { [OPENED]?: { readonly cache: Cache | undefined } | undefined };

/**
 * Whether `outer`, the live cache an adapter finds around it, was opened for this same
 * request by an adapter mounted before it (mounted twice): then the inner one runs in
 * it. Any other live cache (a server started inside `withCacheContext`, whose every
 * connection starts in that scope) belongs to no request of its own, and the adapter
 * opens the request's own cache rather than share that one between requests.
 */
export function openedHere(request: object, outer: Cache): boolean {
  return (request as Marked)[OPENED]?.cache === outer;
}

/**
 * Whether `value` is a request the framework handed to a mounted function (a Node
 * `IncomingMessage`, an Express `req`, a Koa `ctx`, a Hono `c`): what the factory
 * receives when it is mounted itself (`app.use(contextCache)`) instead of its result.
 */
export function isRequestLike(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  return 'req' in value || ('method' in value && 'headers' in value);
}

/**
 * The TypeError for an adapter factory mounted without being called: `mounted` is what
 * the user wrote, `right` the line to write instead.
 */
export function mountedFactoryError(mounted: string, right: string): TypeError {
  return new TypeError(
    `contextCache was mounted itself: ${mounted} hands it every request, and it is the ` +
      `factory of the middleware, not the middleware. Call it once where it is mounted: ${right}.`,
  );
}

/**
 * Check an adapter's options (the factory's `options` argument) and settle defaults.
 * `usage` is the right way to mount this adapter, shown when the factory itself was
 * mounted (it then receives a request as `options`); `extra` names options beyond
 * the common ones (node:http's `onError`, Fastify's own `register` options).
 */
export function checkAdapterOptions<Req>(
  fn: string,
  options: unknown,
  usage?: { mounted: string; right: string },
  extra: readonly string[] = [],
): Settings<Req> {
  if (options === undefined) {
    return {
      lifetime: DEFAULT_LIFETIME,
      maxEntries: DEFAULT_MAX_ENTRIES,
      serverTiming: false,
      onEnd: undefined,
    };
  }
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `${fn}(): options must be an object such as { serverTiming: true }, got ${describe(options)}.`,
    );
  }
  if (usage !== undefined && isRequestLike(options)) {
    throw mountedFactoryError(usage.mounted, usage.right);
  }
  checkOptionNames(
    fn,
    options,
    extra.length === 0 ? ADAPTER_OPTIONS : [...ADAPTER_OPTIONS, ...extra],
  );
  const { lifetime, maxEntries, serverTiming, onEnd } = options as Record<string, unknown>;
  if (lifetime !== undefined && !isDuration(lifetime)) {
    throw new TypeError(
      `${fn}(): options.lifetime must be a positive number of milliseconds such as 60_000, got ${describe(lifetime)}.`,
    );
  }
  if (maxEntries !== undefined && !isCount(maxEntries, 1)) {
    throw new TypeError(
      `${fn}(): options.maxEntries must be a positive integer such as 1000, got ${describe(maxEntries)}.`,
    );
  }
  if (serverTiming !== undefined && typeof serverTiming !== 'boolean') {
    throw new TypeError(
      `${fn}(): options.serverTiming must be true or false, got ${describe(serverTiming)}.`,
    );
  }
  if (onEnd !== undefined && typeof onEnd !== 'function') {
    throw new TypeError(
      `${fn}(): options.onEnd must be a function such as (stats, req) => log(stats), got ${describe(onEnd)}.`,
    );
  }
  return {
    lifetime: lifetime ?? DEFAULT_LIFETIME,
    maxEntries: maxEntries ?? DEFAULT_MAX_ENTRIES,
    serverTiming: serverTiming === true,
    onEnd: onEnd as ((stats: CacheStats, req: Req) => void) | undefined,
  };
}

/**
 * One request between `runRequest` and its end. Its signal is made only when something
 * asks for it: most requests never look at their signal, and an `AbortController` plus
 * its abort cost more than the rest of the adapter together. Asked for after the
 * request ended, it is already aborted.
 */
export class OpenRequest<Req> implements SignalSource {
  cache: Cache | undefined = undefined;
  private controller: AbortController | undefined = undefined;
  private reason: string | undefined = undefined;
  /** The framework's request, kept only for `onEnd`, so the cache's scope need not reach it. */
  private readonly req: Req | undefined;
  private readonly settings: Settings<Req>;
  /** Start watching for the request's end, if the request itself does not. */
  track?(): void;
  /** Whether the request is over, for a cache that does not watch it yet. */
  over?(): boolean;

  /** `on`: the object that stands for this request, marked with it (see `openedHere`). */
  constructor(req: Req, settings: Settings<Req>, on: object) {
    this.req = settings.onEnd === undefined ? undefined : req;
    this.settings = settings;
    (on as Marked)[OPENED] = this;
  }

  /**
   * Run `fn` in this request's new scope: what `withCacheContext` opens with the
   * adapter's lifetime, bound and this request's signal, without checking options that
   * were checked when the adapter was made, or the enclosing scope (callers run `next`
   * in a live cache themselves). `cache` is set before `fn` runs. A request with a
   * `track()` is tracked before `fn` runs, or with `untracked` on the cache's first use
   * (see `SignalSource.track`).
   */
  open<T>(fn: () => T, untracked = false): T {
    const settings = this.settings;
    const cache = new Cache(settings.lifetime, settings.maxEntries, this, untracked);
    this.cache = cache;
    if (!untracked) this.track?.();
    return runInScope(cache, fn);
  }

  /**
   * The request's signal, made when its cache is first asked for it. A method the cache
   * calls on this request, not a closure made per request: on Node 24 such a closure kept
   * every request's objects alive through young-generation collections.
   */
  makeSignal(): AbortSignal {
    if (this.reason !== undefined) return AbortSignal.abort(abortReason(this.reason));
    const controller = new AbortController();
    // Every load in flight in this request may listen on its signal (a fetch, a
    // shared-tier waiter): dozens are normal, so Node's "possible leak" warning at 11
    // would be noise.
    setMaxListeners(0, controller.signal);
    this.controller = controller;
    return controller.signal;
  }

  /**
   * End the request (once; later calls do nothing): drop the cache, abort the signal
   * with an Error saying `reason`, then report the final counts to `onEnd`.
   */
  finish(reason: string): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    const cache = this.cache;
    if (reason === CLIENT_CLOSED) cache?.endClientGone();
    else cache?.end();
    this.controller?.abort(abortReason(reason));
    const onEnd = this.settings.onEnd;
    if (onEnd === undefined || cache === undefined) return;
    let result: unknown;
    try {
      result = onEnd(cache.stats(), this.req as Req);
    } catch (err) {
      onEndFailed(err);
      return;
    }
    // An async onEnd's rejection is reported the same way, never left unhandled.
    if (isThenable(result)) result.then(undefined, onEndFailed);
  }
}

/** Report an `onEnd` that threw or rejected, as a warning; the response is unaffected. */
function onEndFailed(err: unknown): void {
  warnWithDetail(
    `The onEnd callback of the context-cache adapter threw: ${err instanceof Error ? err.message : String(err)}. ` +
      'The response was not affected; catch errors inside onEnd.',
    ON_END_FAILED,
    err instanceof Error ? err.stack : undefined,
  );
}

/**
 * The abort reason: an Error without a stack trace, which would only show the
 * response's event plumbing and costs microseconds to capture on every request.
 */
function abortReason(message: string): Error {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new Error(message);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** The `Server-Timing` entry for `stats`. */
export function serverTimingEntry(stats: CacheStats): string {
  return `context-cache;desc="hits=${stats.hits} joins=${stats.joins} misses=${stats.misses} loads=${stats.loads} batches=${stats.batches}"`;
}
