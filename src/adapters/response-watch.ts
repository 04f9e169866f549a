/**
 * A request on a Node `ServerResponse` (the adapters for Express, Fastify, Koa and
 * node:http, and Hono on `@hono/node-server`), which ends when the response closes.
 * Described by shape, not imported from Node, so the Hono adapter that uses it still
 * loads on every runtime.
 */

import {
  CLIENT_CLOSED,
  type Marked,
  OPENED,
  OpenRequest,
  RESPONSE_FINISHED,
  type Settings,
} from './lifecycle.js';

/** The connection under a response, as far as a request watches it. */
interface Connection {
  once(event: 'close', listener: () => void): unknown;
  readonly destroyed: boolean;
}

/** The part of a Node `ServerResponse` (or HTTP/2 compatibility response) a request watches. */
export interface WatchedResponse {
  on(event: 'close', listener: () => void): unknown;
  readonly writableFinished: boolean;
  readonly destroyed: boolean;
  readonly closed: boolean;
  /** HTTP/1: `null` while a pipelined response waits for the ones before it. */
  readonly socket?: unknown;
  /** HTTP/1: the request, whose `socket` is the connection even while `socket` is `null`. */
  readonly req?: { readonly socket?: Connection | null } | undefined;
  /** HTTP/2: the stream, which closes where an HTTP/1 response would. */
  readonly stream?: { readonly destroyed: boolean; readonly closed: boolean } | undefined;
}

type Tracked = WatchedResponse & Marked;

/** The requests whose responses wait behind others on a connection (pipelining). */
const kWaiting = Symbol('context-cache.waiting');

type WatchedConnection = Connection & { [kWaiting]?: Set<ResponseRequest<unknown>> | undefined };

/**
 * A request whose response is watched for its end from `track()`: on its `'close'`, or
 * at once if it has closed already. Opened with `untracked`, that is the cache's first
 * use, so a request that never uses its cache adds no listener to its response.
 */
export class ResponseRequest<Req> extends OpenRequest<Req> {
  /** Kept until `track()` runs, which may be never: then the response is not watched. */
  private res: WatchedResponse | undefined;
  /** The connection watched while the response waits for it (see `waitForConnection`). */
  private connection: WatchedConnection | undefined = undefined;

  constructor(req: Req, settings: Settings<Req>, res: WatchedResponse) {
    super(req, settings, res);
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
    res.on('close', onClose);
    if (res.socket === null) this.waitForConnection(res);
  }

  /** Whether the response has closed, asked before `track()` (see `SignalSource.over`). */
  override over(): boolean {
    const res = this.res;
    return res !== undefined && closed(res);
  }

  override finish(reason: string): void {
    const connection = this.connection;
    if (connection !== undefined) {
      this.connection = undefined;
      connection[kWaiting]?.delete(this as ResponseRequest<unknown>);
    }
    super.finish(reason);
  }

  /**
   * A pipelined response waits for the responses before it on its connection, and has
   * no socket until then: if the connection closes first, Node emits nothing on the
   * response. Watch the connection instead, with one listener per connection.
   */
  private waitForConnection(res: WatchedResponse): void {
    const connection = res.req?.socket as WatchedConnection | null | undefined;
    if (connection === null || connection === undefined) return;
    let waiting = connection[kWaiting];
    if (waiting === undefined) {
      waiting = new Set();
      connection[kWaiting] = waiting;
      connection.once('close', onConnectionClose);
    }
    waiting.add(this as ResponseRequest<unknown>);
    this.connection = connection;
  }
}

/**
 * Whether `res` has closed (or is closing), its `'close'` emitted or about to be; for a
 * pipelined response still waiting, whether its connection has gone.
 */
function closed(res: WatchedResponse): boolean {
  if (res.destroyed || res.closed) return true;
  const stream = res.stream;
  if (stream !== undefined) return stream.destroyed || stream.closed;
  return res.socket === null && res.req?.socket?.destroyed === true;
}

/**
 * A response emits 'close' exactly once once it has a connection (Node 20 and later):
 * just after 'finish' when it has been sent, or when its connection goes first. One
 * shared listener is all on-finished would do for us here, at a fraction of its cost.
 */
function onClose(this: WatchedResponse): void {
  const request = (this as Tracked)[OPENED] as OpenRequest<unknown> | undefined;
  if (request === undefined) return;
  (this as Tracked)[OPENED] = undefined;
  request.finish(endReason(this));
}

/** A connection closed: the responses still waiting on it will never be sent. */
function onConnectionClose(this: WatchedConnection): void {
  const waiting = this[kWaiting];
  this[kWaiting] = undefined;
  if (waiting === undefined) return;
  for (const request of waiting) request.finish(CLIENT_CLOSED);
}

/** Why a closed response's request ended: sent in full, or the client went first. */
function endReason(res: WatchedResponse): string {
  return res.writableFinished ? RESPONSE_FINISHED : CLIENT_CLOSED;
}
