import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe } from '../../warnings.js';
import { type AdapterOptions, checkAdapterOptions } from '../lifecycle.js';
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
export function contextCache(
  handler: Handler,
  options?: Options,
): (req: IncomingMessage, res: ServerResponse) => void {
  if (typeof handler !== 'function') {
    throw new TypeError(
      `contextCache(): handler must be a request listener such as (req, res) => res.end('ok'), got ${describe(handler)}.`,
    );
  }
  const settings = checkAdapterOptions<IncomingMessage>('contextCache', options);
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
        report(err, req);
      } catch (reportError) {
        console.error(reportError);
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

function defaultOnError(err: unknown): void {
  console.error(err);
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}
