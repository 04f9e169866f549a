/**
 * A request on a Node `ServerResponse` (the adapters for Express, Fastify, Koa and
 * node:http, and Hono on `@hono/node-server`), which ends when the response closes.
 * Described by shape, not imported from Node, so the Hono adapter that uses it still
 * loads on every runtime.
 */

import { CLIENT_CLOSED, OpenRequest, RESPONSE_FINISHED, type Settings } from './lifecycle.js';

/** The part of a Node `ServerResponse` a request watches. */
export interface WatchedResponse {
  on(event: 'close', listener: () => void): unknown;
  readonly writableFinished: boolean;
  readonly destroyed: boolean;
  readonly closed: boolean;
}

/** Where a request leaves itself on its response for the shared `'close'` listener. */
const kRequest = Symbol('context-cache.request');

type Tracked = WatchedResponse & { [kRequest]?: { finish(reason: string): void } | undefined };

/**
 * A request whose response is watched for its end from `track()`: on its `'close'`, or
 * at once if it has closed already. Opened with `untracked`, that is the cache's first
 * use, so a request that never uses its cache adds no listener to its response.
 */
export class ResponseRequest<Req> extends OpenRequest<Req> {
  /** Kept until `track()` runs, which may be never: then the response is not watched. */
  private res: WatchedResponse | undefined;

  constructor(req: Req, settings: Settings<Req>, res: WatchedResponse) {
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
function closed(res: WatchedResponse): boolean {
  return res.destroyed || res.closed;
}

/**
 * A response emits 'close' exactly once, whatever happens (Node 20 and later): just
 * after 'finish' when it has been sent, or when its connection goes first. One shared
 * listener is all on-finished would do for us here, at a fraction of its cost.
 */
function onClose(this: WatchedResponse): void {
  const request = (this as Tracked)[kRequest];
  if (request === undefined) return;
  (this as Tracked)[kRequest] = undefined;
  request.finish(endReason(this));
}

/** Why a closed response's request ended: sent in full, or the client went first. */
function endReason(res: WatchedResponse): string {
  return res.writableFinished ? RESPONSE_FINISHED : CLIENT_CLOSED;
}
