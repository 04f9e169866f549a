/**
 * Observability through `node:diagnostics_channel`, the channels every APM and
 * OpenTelemetry instrumentation can subscribe to without a dependency on this package.
 *
 * - `context-cache:load` is a `TracingChannel` around every loader a request cache
 *   starts (a miss, or a pass-through once the cache has ended or expired). Its channels
 *   are `tracing:context-cache:load:start`, `:end`, `:asyncStart`, `:asyncEnd` and
 *   `:error`, with Node's own conventions (those of `traceSync` and `tracePromise`).
 * - `context-cache:batch` is a `TracingChannel` around every call of a `contextBatched`
 *   batch function, with the group and the number of keys; the keys it loads are not
 *   traced one by one on `context-cache:load`.
 * - `context-cache:end` is a plain channel published when a request cache ends, with
 *   its final stats.
 *
 * Zero cost when no one listens: the request cache asks `tracingLoads()` on the miss
 * path only (never on a hit), and builds no message unless someone subscribes.
 * Channels are found by name, so every copy of this package (ESM and CJS) publishes on
 * the same channels.
 *
 * `node:diagnostics_channel` is used where the runtime has it and never imported
 * statically, so the root entry loads where it is missing (Workers with only
 * `nodejs_als`): it comes from `process.getBuiltinModule` where that exists (Node
 * 20.16+, Bun, Deno, Workers with `nodejs_compat`), else from a dynamic import that
 * attaches the channels a tick later.
 */

import type * as dc from 'node:diagnostics_channel';
import type { CacheStats } from './ephemeral.js';
import type { CacheKey } from './keys.js';

/**
 * The names of the diagnostics channels this package publishes on.
 *
 * @example
 * ```ts
 * import { tracingChannel } from 'node:diagnostics_channel';
 * import { diagnosticsChannels, type LoadMessage } from 'context-cache';
 *
 * tracingChannel<unknown, LoadMessage>(diagnosticsChannels.load).subscribe({
 *   start(msg) { console.log('loading', msg.group, msg.key); },
 *   end() {},
 *   asyncStart() {},
 *   asyncEnd(msg) { console.log('loaded', msg.group, msg.key, msg.failed ? 'failed' : 'ok'); },
 *   error() {},
 * });
 * ```
 */
export const diagnosticsChannels = Object.freeze({
  /** The `TracingChannel` around each load (`tracing:context-cache:load:start`, ...). */
  load: 'context-cache:load',
  /** The `TracingChannel` around each call of a `contextBatched` batch function. */
  batch: 'context-cache:batch',
  /** The channel published when a request cache ends, with its stats. */
  end: 'context-cache:end',
} as const);

/**
 * The message of the `context-cache:load` tracing channel; one object per load, the
 * same object on every event of that load (subscribers may add their own fields, such
 * as a span).
 *
 * When the load is over, `failed` is set, with `result` or `error`:
 * - a loader that returned a promise (async lookups): on `asyncStart` and `asyncEnd`,
 *   when the promise settles (`error` is published before them if it rejected);
 * - a loader that returned a plain value or threw (also every loader of
 *   `getWithContextCacheSync`): before `end` (`error` is published before `end` if it
 *   threw), and there is no `asyncStart` / `asyncEnd`.
 *
 * So a span starts on `start` and ends on `asyncEnd`, or on `end` if `failed` is set.
 *
 * @example
 * ```ts
 * import { tracingChannel } from 'node:diagnostics_channel';
 * import { diagnosticsChannels, type LoadMessage } from 'context-cache';
 *
 * const started = new WeakMap<LoadMessage, number>();
 * const done = (msg: LoadMessage) =>
 *   console.log(`${msg.group} ${String(msg.key)}: ${performance.now() - started.get(msg)!} ms`);
 * tracingChannel<unknown, LoadMessage>(diagnosticsChannels.load).subscribe({
 *   start: (msg) => void started.set(msg, performance.now()),
 *   end: (msg) => void (msg.failed !== undefined && done(msg)),
 *   asyncStart() {},
 *   asyncEnd: done,
 *   error() {},
 * });
 * ```
 */
export interface LoadMessage {
  /** The group of the value being loaded. */
  readonly group: string;
  /** Its key, as the caller passed it. */
  readonly key: CacheKey;
  /** `true` for `getWithContextCacheSync`, `false` for `getWithContextCache` and `contextCached`. */
  readonly sync: boolean;
  /**
   * `false` when the cache has ended or expired and the load passes through (its result
   * will not be stored).
   */
  readonly stored: boolean;
  /** Set once the load is over: whether the loader threw or its promise rejected. */
  failed?: boolean;
  /** The loaded value, once the load succeeded. */
  result?: unknown;
  /** What the loader threw or rejected with, once it failed. */
  error?: unknown;
}

/**
 * The message of the `context-cache:batch` tracing channel: one object per call of a
 * batch function, the same on every event of that call. `start` is published before
 * the call; `asyncStart` / `asyncEnd` when its promise settles (after `error` if it
 * failed); a batch function that throws publishes `error` and `end` with `failed` set.
 *
 * @example
 * ```ts
 * import { tracingChannel } from 'node:diagnostics_channel';
 * import { diagnosticsChannels, type BatchMessage } from 'context-cache';
 *
 * tracingChannel<unknown, BatchMessage>(diagnosticsChannels.batch).subscribe({
 *   start(msg) { console.log(`batch ${msg.group}: ${msg.count} keys`); },
 *   end() {},
 *   asyncStart() {},
 *   asyncEnd(msg) { console.log(`batch ${msg.group} ${msg.failed ? 'failed' : 'done'}`); },
 *   error() {},
 * });
 * ```
 */
export interface BatchMessage {
  /** The group of the batched getter. */
  readonly group: string;
  /** How many keys this call loads. */
  readonly count: number;
  /** Set once the call is over: whether the batch function threw or rejected. */
  failed?: boolean;
  /** What it threw or rejected with, once it failed. */
  error?: unknown;
}

/**
 * The message of the `context-cache:end` channel, published once per request cache when
 * it ends (adapters end it when the response is done).
 *
 * @example
 * ```ts
 * import { subscribe } from 'node:diagnostics_channel';
 * import { diagnosticsChannels, type EndMessage } from 'context-cache';
 *
 * subscribe(diagnosticsChannels.end, (message) => {
 *   const { stats } = message as EndMessage;
 *   console.log(`request cache: ${stats.hits} hits, ${stats.loads} loads`);
 * });
 * ```
 */
export interface EndMessage {
  /** The cache's final counts. */
  readonly stats: CacheStats;
}

type Channel = dc.Channel<unknown, LoadMessage>;
type Tracing = dc.TracingChannel<unknown, LoadMessage>;

type DiagnosticsChannel = typeof dc;

let loadChannel: Tracing | undefined;
let batchChannel: dc.TracingChannel<unknown, BatchMessage> | undefined;
let endChannel: dc.Channel | undefined;
// `TracingChannel#hasSubscribers` exists from Node 20.13 / 22.0; before it, ask each channel.
let hasAggregate = false;

/** Make the channels, on a runtime whose module has them (one without traces nothing). */
function attach(module: DiagnosticsChannel | undefined): void {
  if (module === undefined || loadChannel !== undefined) return;
  if (typeof module.tracingChannel === 'function') {
    loadChannel = module.tracingChannel<unknown, LoadMessage>(diagnosticsChannels.load);
    batchChannel = module.tracingChannel<unknown, BatchMessage>(diagnosticsChannels.batch);
    hasAggregate =
      typeof Object.getOwnPropertyDescriptor(Object.getPrototypeOf(loadChannel), 'hasSubscribers')
        ?.get === 'function';
  }
  if (typeof module.channel === 'function') endChannel = module.channel(diagnosticsChannels.end);
}

type Builtins = { getBuiltinModule?: (id: string) => unknown };
const proc = (globalThis as { process?: Builtins }).process;
if (typeof proc?.getBuiltinModule === 'function') {
  attach(proc.getBuiltinModule('node:diagnostics_channel') as DiagnosticsChannel | undefined);
} else {
  import('node:diagnostics_channel').then(attach, () => {});
}

/** Whether anyone subscribes to the load channel. Asked on the miss path only. */
export function tracingLoads(): boolean {
  return hasSubscribers(loadChannel);
}

/** Whether a tracing channel has a subscriber on any of its five channels. */
function hasSubscribers(
  channel: Tracing | dc.TracingChannel<unknown, BatchMessage> | undefined,
): boolean {
  if (channel === undefined) return false;
  if (hasAggregate) return (channel as { hasSubscribers?: boolean }).hasSubscribers === true;
  return (
    channel.start.hasSubscribers ||
    channel.end.hasSubscribers ||
    channel.asyncStart.hasSubscribers ||
    channel.asyncEnd.hasSubscribers ||
    channel.error.hasSubscribers
  );
}

/** Whether anyone subscribes to the batch channel. Asked once per batch call. */
export function tracingBatches(): boolean {
  return hasSubscribers(batchChannel);
}

/**
 * Run one batch call traced on `context-cache:batch`; call only when `tracingBatches()`.
 * Returns the call's result as a promise; rejects with what it threw or rejected with.
 */
export function traceBatch(group: string, count: number, run: () => unknown): Promise<unknown> {
  const channel = batchChannel as dc.TracingChannel<unknown, BatchMessage>;
  const message: BatchMessage = { group, count };
  // Everything inside the start's stores, as Node's `tracePromise` does: a store bound
  // to `start` (a span) is the active one in `end`, `error`, `asyncStart` and `asyncEnd`.
  return runInStart(channel.start as unknown as Channel, message as never, () => {
    let result: unknown;
    try {
      result = run();
    } catch (err) {
      message.failed = true;
      message.error = err;
      channel.error.publish(message);
      channel.end.publish(message);
      return Promise.reject(err);
    }
    channel.end.publish(message);
    return publishSettled(
      channel as unknown as Tracing,
      message as never,
      Promise.resolve(result),
      false,
    );
  }) as Promise<unknown>;
}

/**
 * Publish `asyncStart`/`asyncEnd` (and `error`) when `promise` settles, on a separate
 * branch: it never changes what callers see, and its rejection handler keeps a failed
 * load or batch from ever being reported as unhandled here.
 */
function publishSettled(
  channel: Tracing,
  message: LoadMessage,
  promise: Promise<unknown>,
  withResult: boolean,
): Promise<unknown> {
  promise.then(
    (value) => {
      message.failed = false;
      if (withResult) message.result = value;
      channel.asyncStart.publish(message);
      channel.asyncEnd.publish(message);
    },
    (err: unknown) => {
      message.failed = true;
      message.error = err;
      channel.error.publish(message);
      channel.asyncStart.publish(message);
      channel.asyncEnd.publish(message);
    },
  );
  return promise;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}

function runInStart(start: Channel, message: LoadMessage, fn: () => unknown): unknown {
  // runStores publishes `start` and lets subscribers bind an AsyncLocalStorage (a span's
  // context) for the duration of the loader and the events that follow it.
  if (typeof start.runStores === 'function') return start.runStores(message, fn);
  start.publish(message);
  return fn();
}

/**
 * Run one loader traced on `context-cache:load`; call only when `tracingLoads()`.
 * Returns what the loader returned, except that a thenable comes back as the native
 * promise that follows it, so its `then` is called exactly once (the caller's
 * `Promise.resolve` returns that promise as it is). Throws what the loader threw.
 */
export function traceLoad(
  group: string,
  key: CacheKey,
  sync: boolean,
  stored: boolean,
  run: () => unknown,
): unknown {
  const channel = loadChannel as Tracing;
  const message: LoadMessage = { group, key, sync, stored };
  // Everything inside the start's stores, as Node's `tracePromise` does (see traceBatch).
  return runInStart(channel.start, message, () => {
    let result: unknown;
    try {
      result = run();
      if (sync || !isThenable(result)) {
        message.failed = false;
        message.result = result;
        return result;
      }
    } catch (err) {
      message.failed = true;
      message.error = err;
      channel.error.publish(message);
      throw err;
    } finally {
      channel.end.publish(message);
    }
    return publishSettled(channel, message, Promise.resolve(result), true);
  });
}

/** Whether anyone subscribes to `context-cache:end`. Asked once per request by the adapters. */
export function publishingEnds(): boolean {
  return endChannel?.hasSubscribers === true;
}

/** Publish a request cache's end on `context-cache:end`, if anyone listens. */
export function publishEnd(cache: { stats(): CacheStats }): void {
  if (endChannel?.hasSubscribers) endChannel.publish({ stats: cache.stats() } satisfies EndMessage);
}
