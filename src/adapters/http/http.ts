import type { IncomingMessage, ServerResponse } from 'node:http';
import { isThenable } from '../../ephemeral.js';
import { describe } from '../../warnings.js';
import {
  type AdapterOptions,
  checkAdapterOptions,
  isRequestLike,
  mountedFactoryError,
} from '../lifecycle.js';
import { runRequest } from '../node-response.js';

/** Options of the node:http wrapper; `onEnd` and `onError` receive the `req`. */
export interface Options extends AdapterOptions<IncomingMessage> {
  /**
   * Called with what the handler threw or rejected with (default: `console.error`).
   * The client gets a 500 if headers were not sent yet; otherwise its connection is
   * closed, since the response cannot be completed.
   */
  onError?: (err: unknown, req: IncomingMessage) => void;
}

/** A `node:http` request listener, as the handler and as what `contextCache` returns. */
export type Handler = (req: IncomingMessage, res: ServerResponse) => unknown;

/** What `contextCache` returns: the listener to give `createServer`. */
export type Listener = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The type of `contextCache(options)` called without a handler (it throws a TypeError
 * at run time): a text that fails where a listener is expected, saying what to write.
 */
export type HandlerMissing =
  'contextCache(handler, options) wraps your request listener: createServer(contextCache((req, res) => { ... }, options))';

/**
 * Wrap a `node:http` request listener so every request runs with its own cache. The
 * cache ends once the response has been sent or the connection closed. A handler that
 * throws or rejects gets a 500 (if headers were not sent yet), the error goes to
 * `onError`, and no unhandled rejection escapes. Read bodies with
 * `for await (const chunk of req)`, which keeps the scope; plain `'data'` listeners run
 * in the socket's async context and see no cache.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { contextCache } from 'context-cache/http';
 *
 * createServer(
 *   contextCache(async (req, res) => {
 *     res.end(JSON.stringify(await getUser(1)));
 *   }, { serverTiming: true }),
 * ).listen(3000);
 * ```
 */
export function contextCache(options: Options): HandlerMissing;
export function contextCache(handler: Handler, options?: Options): Listener;
export function contextCache(
  handler: Handler | Options,
  options?: Options,
): Listener | HandlerMissing {
  if (typeof handler !== 'function') {
    if (isRequestLike(handler) && isResponse(options)) {
      // `createServer(contextCache)`: this runs per request, inside the server's
      // 'request' event, where a throw would crash the process. Answer this request.
      answerMounted(options);
      return ignore;
    }
    throw new TypeError(
      `contextCache(): handler must be a request listener such as (req, res) => res.end('ok'), got ${describe(handler)}.`,
    );
  }
  const settings = checkAdapterOptions<IncomingMessage>('contextCache', options, undefined, [
    'onError',
  ]);
  const onError = options?.onError;
  if (onError !== undefined && typeof onError !== 'function') {
    throw new TypeError(
      `contextCache(): options.onError must be a function such as (err, req) => log(err), got ${describe(onError)}.`,
    );
  }
  const report = onError ?? defaultOnError;
  return function contextCacheHandler(req, res) {
    const fail = (err: unknown): void => {
      try {
        // An async onError's rejection is logged too, never left unhandled.
        const reported: unknown = report(err, req);
        if (isThenable(reported)) reported.then(undefined, defaultOnError);
      } catch (reportError) {
        defaultOnError(reportError);
      }
      if (!res.headersSent) {
        try {
          for (const name of res.getHeaderNames()) res.removeHeader(name);
          const body = 'Internal Server Error\n';
          res.writeHead(500, {
            'content-type': 'text/plain; charset=utf-8',
            'content-length': Buffer.byteLength(body),
          });
          res.end(body);
        } catch {
          res.destroy();
        }
      } else if (!res.writableEnded) {
        res.destroy();
      }
    };
    runRequest(res, req, settings, () => {
      let result: unknown;
      try {
        result = handler(req, res);
      } catch (err) {
        fail(err);
        return;
      }
      if (isThenable(result)) result.then(undefined, fail);
    });
  };
}

function ignore(): void {}

function isResponse(value: unknown): value is ServerResponse {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as ServerResponse).writeHead === 'function' &&
    typeof (value as ServerResponse).end === 'function'
  );
}

/** Log the mistake and answer 500 with the line to write instead. */
function answerMounted(res: ServerResponse): void {
  const err = mountedFactoryError(
    'createServer(contextCache)',
    'createServer(contextCache((req, res) => { ... }, { serverTiming: true })) — it wraps your request listener',
  );
  console.error(err);
  try {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = `Internal Server Error\n\n${err.message}\n`;
    res.writeHead(500, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  } catch {
    res.destroy();
  }
}

function defaultOnError(err: unknown): void {
  console.error(err);
}
