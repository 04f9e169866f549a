import { AsyncLocalStorage } from 'node:async_hooks';
import type { Context, MiddlewareHandler } from 'hono';
import { publishingEnds } from '../../diagnostics.js';
import { type ExecutionContext, runWithExecutionContext, scopeStorage } from '../../scope.js';
import {
  type AdapterOptions,
  BODY_FAILED,
  CLIENT_CLOSED,
  checkAdapterOptions,
  OpenRequest,
  openedHere,
  RESPONSE_FINISHED,
  type Settings,
  serverTimingEntry,
} from '../lifecycle.js';
import { ResponseRequest, type WatchedResponse } from '../response-watch.js';

/**
 * Options of the Hono middleware; `onEnd` receives Hono's `c`. On Bun, Deno and Workers,
 * a response made with Hono's helpers from a complete body (`c.json`, `c.text`, …) is
 * done when the handlers return: `onEnd` runs then, just before the runtime sends it.
 */
export type Options = AdapterOptions<Context>;

const HONO_USAGE = {
  mounted: 'app.use(contextCache)',
  right: 'app.use(contextCache()) or app.use(contextCache({ serverTiming: true }))',
};

/**
 * The Node response `@hono/node-server` passes as `c.env.outgoing`, if any. Recognised
 * by shape, so the adapter imports nothing of Node's and loads on every runtime.
 */
function nodeResponse(c: Context): WatchedResponse | undefined {
  const env: unknown = c.env;
  if (typeof env !== 'object' || env === null) return undefined;
  const outgoing = (env as { outgoing?: unknown }).outgoing;
  if (
    typeof outgoing === 'object' &&
    outgoing !== null &&
    typeof (outgoing as WatchedResponse).on === 'function' &&
    typeof (outgoing as WatchedResponse).writableFinished === 'boolean'
  ) {
    return outgoing as WatchedResponse;
  }
  return undefined;
}

/**
 * The runtime server `c` came from, when it is one that never passes an execution
 * context, told by what it hands Hono as `c.env`: `Deno.serve` (`{ remoteAddr,
 * completed }`) or `Bun.serve` (the server itself). Asking Hono for a context there only
 * costs a thrown error (~6 µs a request on Deno).
 */
function fetchServer(c: Context): 'deno' | 'bun' | undefined {
  const env = c.env as
    | { completed?: unknown; remoteAddr?: unknown; upgrade?: unknown; requestIP?: unknown }
    | undefined;
  if (typeof env !== 'object' || env === null) return undefined;
  if (
    typeof (env.completed as PromiseLike<unknown> | undefined)?.then === 'function' &&
    typeof env.remoteAddr === 'object'
  ) {
    return 'deno';
  }
  if (typeof env.upgrade === 'function' && typeof env.requestIP === 'function') return 'bun';
  return undefined;
}

/**
 * A request on a fetch runtime's server (Bun, Workers, `app.request()`): its client
 * going away is the request's signal aborting, watched from the cache's first use (as
 * the adapters on a Node response watch theirs), or from the start when someone waits
 * for every request's end. A request that never uses its cache adds no listener.
 * Listens as an object with `handleEvent`, so watching makes no closure.
 */
class FetchRequest extends OpenRequest<Context> {
  /** The runtime's request, until its signal is watched. */
  private raw: Request | undefined;
  private watched: AbortSignal | undefined = undefined;

  constructor(c: Context, settings: Settings<Context>) {
    super(c, settings, c);
    this.raw = c.req.raw;
  }

  override track(): void {
    this.watch();
  }

  /** Watch the runtime's request signal (once), or end the request if it has aborted. */
  protected watch(): void {
    const raw = this.raw;
    if (raw === undefined) return;
    this.raw = undefined;
    const signal = raw.signal;
    if (signal.aborted) {
      this.finish(CLIENT_CLOSED);
      return;
    }
    this.watched = signal;
    signal.addEventListener('abort', this);
  }

  override over(): boolean {
    return this.raw?.signal.aborted === true;
  }

  /** The runtime's request signal aborted: the client went away. */
  handleEvent(): void {
    this.finish(CLIENT_CLOSED);
  }

  override finish(reason: string): void {
    const watched = this.watched;
    if (watched !== undefined) {
      this.watched = undefined;
      watched.removeEventListener('abort', this);
    }
    super.finish(reason);
  }
}

/**
 * A request served by `Deno.serve`, where merely reading `request.signal` makes Deno
 * print a notice about its legacy abort (that signal also aborts when the response was
 * delivered): the adapter reads it only when the request's own signal is first asked
 * for, which is when an application relies on it.
 */
class DenoRequest extends FetchRequest {
  /** Nothing on the cache's first use: its cache opens tracked, so `over()` is not asked. */
  override track(): void {}

  override makeSignal(): AbortSignal {
    const signal = super.makeSignal();
    this.watch();
    return signal;
  }
}

/**
 * The runtime's execution context (Workers' `ctx`, which Hono keeps as
 * `c.executionCtx`), if it has one. Hono's getter throws where there is none (Bun,
 * Deno, `app.request()`); that error is made without a stack trace, which would cost
 * more than the rest of the adapter.
 */
function executionContext(c: Context): ExecutionContext | undefined {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    const ctx: unknown = c.executionCtx;
    return typeof (ctx as Partial<ExecutionContext> | undefined)?.waitUntil === 'function'
      ? (ctx as ExecutionContext)
      : undefined;
  } catch {
    return undefined;
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * `body` as a stream that ends the request once the runtime has read its last chunk
 * (or, with a `length` declared by Content-Length, its last byte), or when the runtime
 * cancels it (the client went away). Pulled one chunk at a time (no read-ahead), so
 * "read" means sent on, not buffered by the adapter.
 */
function watchBody(
  body: ReadableStream<Uint8Array>,
  end: (reason: string) => void,
  length: number | undefined,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let sent = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (err) {
          end(BODY_FAILED);
          controller.error(err);
          return;
        }
        if (chunk.done) {
          controller.close();
          end(RESPONSE_FINISHED);
        } else {
          sent += chunk.value.byteLength;
          controller.enqueue(chunk.value);
          // A body of declared length is done at its last byte: Deno completes the
          // response then (and cancels the rest), without waiting for the stream's end.
          if (length !== undefined && sent >= length) end(RESPONSE_FINISHED);
        }
      },
      cancel(reason) {
        end(length !== undefined && sent >= length ? RESPONSE_FINISHED : CLIENT_CLOSED);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** The response's `Content-Length`, when the handler set a valid one. */
function declaredLength(res: Response): number | undefined {
  const header = res.headers.get('content-length');
  if (header === null || !/^\d+$/.test(header)) return undefined;
  const length = Number(header);
  return Number.isSafeInteger(length) ? length : undefined;
}

/** Workers' stream that sends a body of known length with its Content-Length. */
const FixedLengthStream = (
  globalThis as {
    FixedLengthStream?: new (
      length: number,
    ) => { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> };
  }
).FixedLengthStream;

function ignore(): void {}

/** One of Hono's response helpers (`c.body`, `c.text`, …): the body comes first. */
type ResponseHelper = (data: unknown, arg?: unknown, headers?: unknown) => unknown;

/** The helpers of `c` whose responses the adapter notes. */
interface ResponseHelpers {
  body: ResponseHelper;
  newResponse: ResponseHelper;
  text: ResponseHelper;
  json: ResponseHelper;
  html: ResponseHelper;
}

const HELPERS = ['body', 'newResponse', 'text', 'json', 'html'] as const;

/**
 * Whether Hono's response helpers are fields of each `c` that can be replaced (Hono 4
 * makes them arrow functions per context); checked on the first request. Where they are
 * not, every response body is watched.
 */
let helpersReplaceable: boolean | undefined;

function canReplaceHelpers(c: Context): boolean {
  helpersReplaceable ??= HELPERS.every((name) => {
    const field = Object.getOwnPropertyDescriptor(c, name);
    return field?.writable === true && typeof field.value === 'function';
  });
  return helpersReplaceable;
}

/**
 * Whether a response body made of `data` is complete when the response is made: a
 * string, bytes, a `Blob` (a file too), form data or nothing. Its bytes are there when
 * the handler returns and no code of the application runs to produce them, unlike a
 * `ReadableStream`'s (anything else is taken for one).
 */
function completeBody(data: unknown): boolean {
  if (typeof data === 'string' || data === null || data === undefined) return true;
  if (typeof data !== 'object') return false;
  return (
    data instanceof ArrayBuffer ||
    ArrayBuffer.isView(data) ||
    (typeof Blob === 'function' && data instanceof Blob) ||
    (typeof URLSearchParams === 'function' && data instanceof URLSearchParams) ||
    (typeof FormData === 'function' && data instanceof FormData)
  );
}

/**
 * Note the responses the application makes with Hono's helpers from a complete body
 * (`c.json`, `c.text`, `c.html`, and `c.body` / `c.newResponse` with a string, bytes or
 * a `Blob`): `noted.response` is the last of them. Each helper of `c` is replaced by one
 * that calls it and notes what it made, so a helper taken off `c` (`const { json } = c`)
 * notes too.
 */
function noteCompleteResponses(c: Context): { response: unknown } {
  const noted: { response: unknown } = { response: undefined };
  const helpers = c as unknown as ResponseHelpers;
  /** `helper`, noting its response when its body is complete (`always`: every body is). */
  const noting =
    (helper: ResponseHelper, always: boolean): ResponseHelper =>
    (data, arg, headers) => {
      const made = helper(data, arg, headers);
      if (!always && !completeBody(data)) return made;
      // Given a promise (async JSX), `c.html` resolves to the response once it has the text.
      if (made instanceof Promise) {
        return made.then((response: unknown) => {
          noted.response = response;
          return response;
        });
      }
      noted.response = made;
      return made;
    };
  helpers.body = noting(helpers.body, false);
  helpers.newResponse = noting(helpers.newResponse, false);
  helpers.text = noting(helpers.text, true);
  helpers.json = noting(helpers.json, true);
  helpers.html = noting(helpers.html, true);
  return noted;
}

/**
 * Whether `res`, the request's final response, is one noted as made from a complete
 * body, or the same body in a response made over it (Hono makes a new response when a
 * header is set after the handler has returned, handing it the same body stream).
 */
function isComplete(res: Response, noted: unknown): boolean {
  if (res === noted) return true;
  return noted instanceof Response && res.body !== null && res.body === noted.body;
}

/** Append this request's entry to the response's `Server-Timing` header. */
function appendServerTiming(c: Context, request: OpenRequest<Context>): void {
  const cache = request.cache;
  if (cache !== undefined) {
    c.header('Server-Timing', serverTimingEntry(cache.stats()), { append: true });
  }
}

/**
 * On `@hono/node-server`: the request ends when the Node response closes, which the
 * request watches from its cache's first use (see `ResponseRequest`).
 */
async function serveOnNode(
  c: Context,
  next: () => Promise<void>,
  request: OpenRequest<Context>,
  settings: Settings<Context>,
): Promise<void> {
  await next();
  if (settings.serverTiming) appendServerTiming(c, request);
}

/**
 * On the runtimes' own servers (Bun, Deno, Workers) and `app.request()`: a response the
 * application made with Hono's helpers from a complete body (`c.json`, `c.text`, a
 * string or bytes) ends the request when the handlers have returned; any other body
 * ends it when the runtime has read all of it. The request's signal aborting (the
 * client went away) ends it before either.
 */
async function serveOnFetch(
  c: Context,
  next: () => Promise<void>,
  request: OpenRequest<Context>,
  settings: Settings<Context>,
): Promise<void> {
  // The request's signal is watched by the request itself (FetchRequest, DenoRequest);
  // here the body ends it, once the handlers have returned or the runtime has read it.
  const end = (reason: string): void => request.finish(reason);
  const noted = canReplaceHelpers(c) ? noteCompleteResponses(c) : undefined;
  try {
    await next();
  } catch (err) {
    // Hono turns a handler's error into a response below this middleware; what reaches
    // here escaped `onError` as well, and there is no body left to wait for.
    end(BODY_FAILED);
    throw err;
  }
  // A body that was complete when its response was made needs nothing more of the
  // application: the response is done now, and its body goes to the runtime as it is.
  const complete = noted !== undefined && isComplete(c.res, noted.response);
  if (settings.serverTiming) appendServerTiming(c, request);
  // Checked before `body` is read, which on some runtimes makes the body's stream.
  const res = c.res;
  // Hono answers HEAD with the GET response's headers and no body: the body given here
  // is dropped unread, so the response is done as well.
  if (complete || c.req.raw.method === 'HEAD' || res.body === null) {
    end(RESPONSE_FINISHED);
    return;
  }
  const body = res.body;
  // The runtime reads the body from its own async context: the end is reported in the
  // request's, so `onEnd`, end subscribers and `runInBackground` there see the request
  // (on Workers, its execution context), as they do for a complete body.
  const inRequest = AsyncLocalStorage.snapshot();
  const length = declaredLength(res);
  let stream = watchBody(body, (reason) => inRequest(end, reason), length);
  // A stream of unknown length is sent chunked on Workers: a FixedLengthStream keeps the
  // Content-Length the handler set (Bun and Deno keep it as it is).
  if (length !== undefined && FixedLengthStream !== undefined) {
    const fixed = new FixedLengthStream(length);
    stream.pipeTo(fixed.writable).catch(ignore);
    stream = fixed.readable;
  }
  const watched = new Response(stream, res);
  // Hono copies the old response's headers into a response assigned over it; this one
  // already has them, and `undefined` first is Hono's way to replace a response whole.
  c.res = undefined;
  c.res = watched;
}

/**
 * Hono middleware that gives every request its own cache, on every runtime Hono runs
 * on. The cache lives until the response is done, which is after this middleware has
 * returned: a streamed body keeps its cache to the last chunk.
 * - On `@hono/node-server` the cache ends when the Node response has been sent, or the
 *   connection closed.
 * - On Bun (`Bun.serve`), Deno (`Deno.serve`), Cloudflare Workers and `app.request()`,
 *   a response made with `c.json`, `c.text`, `c.html`, or `c.body` from a string, bytes
 *   or a `Blob` is complete when the handlers return, and the cache ends then. Any other
 *   body (a `ReadableStream`, Hono's `stream()` helpers, a `Response` made by hand) is
 *   passed through the adapter, and the cache ends once the runtime has read all of it.
 *   Either way the request's signal aborting (the client went away) ends it first.
 * - On Workers, `runInBackground` tasks started by the request are handed to the
 *   request's `waitUntil` (`c.executionCtx`), so they are not cut off with it.
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
  const storage = scopeStorage();
  return async function contextCacheMiddleware(c, next) {
    // Mounted twice: the outer one owns the cache and ends it. Read from the storage
    // itself, as in node-response.ts (a function in between costs more on Node 24).
    const outer = storage.getStore()?.cache;
    const res = nodeResponse(c);
    if (outer !== undefined && !outer.ended && openedHere(res ?? c, outer)) return next();
    if (res !== undefined) {
      // As on the other adapters on a Node response: watched from the cache's first use,
      // or from the start when someone waits for every request's end.
      const request = new ResponseRequest(c, settings, res);
      return request.open(
        () => serveOnNode(c, next, request, settings),
        settings.onEnd === undefined && !publishingEnds(),
      );
    }
    const server = fetchServer(c);
    const request =
      server === 'deno' ? new DenoRequest(c, settings) : new FetchRequest(c, settings);
    const execution = server === undefined ? executionContext(c) : undefined;
    const untracked = server !== 'deno' && settings.onEnd === undefined && !publishingEnds();
    const serve = () => request.open(() => serveOnFetch(c, next, request, settings), untracked);
    return execution === undefined ? serve() : runWithExecutionContext(execution, serve);
  };
}
