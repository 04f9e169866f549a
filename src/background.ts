/**
 * Background work: the `context.WithoutCancel` of Go 1.21 for AsyncLocalStorage.
 *
 * Work that outlives the response (a cache write-back, a publish to a queue) must not
 * be tied to the request: with the request's signal it is cancelled the moment the
 * response is written, and with the request's cache it keeps that cache alive for as
 * long as it runs. `detach()` runs such work in a scope with no request cache and a
 * fresh signal that aborts only on the task's own timeout; every other
 * AsyncLocalStorage (a tracing id, a logger's context) is still inherited.
 *
 * Every timer, promise and signal created here is created in a scope with no cache
 * (the task's own, or `BLANK` for the bookkeeping), so none of them keeps a finished
 * request's cache reachable: each async resource carries the scope it was created in.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import { isThenable } from './ephemeral.js';
import {
  currentExecutionContext,
  type ExecutionContext,
  runInScope,
  Scope,
  sharedBackgroundPool,
} from './scope.js';
import { checkOptionNames, describe, isCount, isDuration } from './warnings.js';

/**
 * The scope of the pools' bookkeeping: no cache, no signal. Running it in a scope of its
 * own (rather than `outsideScope`, which on Node 20 only switches the storage off until
 * a nested `run` switches it back on) keeps the caller's request scope out of every
 * promise, timer and async resource it creates.
 */
const BLANK = new Scope(undefined, undefined);

/** Default timeout of a detached or background task, in ms: 30 seconds. */
export const DEFAULT_TASK_TIMEOUT = 30_000;

/** Longest delay `setTimeout` honours; a longer timeout means "no timer at all". */
const MAX_TIMER = 2 ** 31 - 1;

/** Stable codes of {@link BackgroundError}. */
export type BackgroundErrorCode =
  /** The task ran past its own timeout; its signal was aborted. */
  | 'CONTEXT_CACHE_TASK_TIMEOUT'
  /** The pool's queue was full; the task was not run. */
  | 'CONTEXT_CACHE_QUEUE_FULL'
  /** `drainBackground()` timed out while the task was still running; its signal was aborted. */
  | 'CONTEXT_CACHE_DRAINED';

/**
 * The error of a background task that was cut short or never run. Check `code`, not
 * `instanceof`: an ESM and a CJS copy of this package each have their own class.
 *
 * @example
 * ```ts
 * try {
 *   await detach(() => publish(event), { timeout: 1000, name: 'publish' });
 * } catch (err) {
 *   if ((err as BackgroundError).code === 'CONTEXT_CACHE_TASK_TIMEOUT') metrics.timeouts++;
 * }
 * ```
 */
export class BackgroundError extends Error {
  override readonly name = 'BackgroundError';
  /** Why the task was cut short or not run. */
  readonly code: BackgroundErrorCode;
  /** The task's name: its `name` option, else its function's name, else `'anonymous'`. */
  readonly task: string;

  constructor(message: string, code: BackgroundErrorCode, task: string) {
    super(message);
    this.code = code;
    this.task = task;
  }
}

/** Options of `detach`. */
export interface DetachOptions {
  /**
   * Milliseconds before the task's signal aborts and its promise rejects with a
   * `BackgroundError` (code `CONTEXT_CACHE_TASK_TIMEOUT`). Default 30,000; `Infinity`
   * for none.
   */
  timeout?: number;
  /** Named in timeout errors and in `drainBackground()`'s `pending`. Default: `fn.name`. */
  name?: string;
}

/** The name a task is reported under: `name`, else the function's name, else `'anonymous'`. */
export function taskName(fn: () => unknown, name: string | undefined): string {
  return name ?? (fn.name || 'anonymous');
}

const TASK_OPTIONS = ['timeout', 'name'] as const;
const RUN_OPTIONS = ['timeout', 'name', 'onError'] as const;
const POOL_OPTIONS = ['concurrency', 'maxQueued', 'onError'] as const;
const DRAIN_OPTIONS = ['timeout'] as const;

/** Validate `fn` and the `timeout` / `name` options shared by `detach` and `runInBackground`. */
export function checkTask(
  api: string,
  fn: unknown,
  options: unknown,
  known: readonly string[] = TASK_OPTIONS,
): void {
  if (typeof fn !== 'function') {
    throw new TypeError(
      `${api}(): fn must be the function to run, such as () => cache.set(key, value), got ${describe(fn)}.`,
    );
  }
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `${api}(): options must be an object such as { timeout: 5000, name: 'write-back' }, got ${describe(options)}.`,
    );
  }
  checkOptionNames(api, options, known);
  const { timeout, name } = options as Record<string, unknown>;
  if (timeout !== undefined && !isDuration(timeout)) {
    throw new TypeError(
      `${api}(): options.timeout must be a positive number of milliseconds (or Infinity), got ${describe(timeout)}.`,
    );
  }
  if (name !== undefined && !(typeof name === 'string' && name !== '')) {
    throw new TypeError(
      `${api}(): options.name must be a non-empty string such as 'write-back', got ${describe(name)}.`,
    );
  }
}

/**
 * Start `fn` detached, with `controller`'s signal as its scope's signal, and settle with
 * its result; abort the signal (and reject) at `timeout`. The promise, the timer and the
 * promise chain are all created inside the detached scope, so each of them carries that
 * scope (no cache, only the signal) rather than the caller's request scope.
 */
export function launch<T>(
  fn: () => T | PromiseLike<T>,
  name: string,
  timeout: number,
  controller: AbortController,
): Promise<T> {
  return runInScope(new Scope(undefined, controller.signal), () =>
    settle(fn, name, timeout, controller),
  );
}

function settle<T>(
  fn: () => T | PromiseLike<T>,
  name: string,
  timeout: number,
  controller: AbortController,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const { signal } = controller;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    };
    // The signal aborts on the task's own timeout, or when a pool drain gives up on it:
    // either way the task is cut at once, even if `fn` ignores its signal.
    function onAbort(): void {
      done();
      reject(signal.reason);
    }
    signal.addEventListener('abort', onAbort);
    if (timeout <= MAX_TIMER) {
      timer = setTimeout(() => {
        controller.abort(
          new BackgroundError(
            `Background task "${name}" did not finish within its timeout of ${timeout} ms; its signal was aborted.`,
            'CONTEXT_CACHE_TASK_TIMEOUT',
            name,
          ),
        );
      }, timeout);
    }
    let result: T | PromiseLike<T>;
    try {
      result = fn();
    } catch (err) {
      done();
      reject(err);
      return;
    }
    Promise.resolve(result).then(
      (value) => {
        done();
        resolve(value);
      },
      (err: unknown) => {
        done();
        reject(err);
      },
    );
  });
}

/**
 * Run `fn` outside the request: with no request cache (lookups inside call their
 * loaders) and a fresh `AbortSignal` (`currentSignal()` inside) that aborts only on the
 * task's own timeout, not when the request ends. Every other AsyncLocalStorage value is
 * still visible inside. Resolves with what `fn` returns; rejects with its error, or with
 * a `BackgroundError` (code `CONTEXT_CACHE_TASK_TIMEOUT`) naming the task and the limit.
 * Belongs to no pool: the caller awaits it.
 *
 * @example
 * ```ts
 * app.post('/orders', async (req, res) => {
 *   const order = await createOrder(req.body);
 *   res.status(201).json(order);
 *   // not cancelled when the response is sent, and not holding the request cache:
 *   await detach(() => queue.publish('order.created', order, { signal: currentSignal() }), {
 *     timeout: 5000,
 *     name: 'publish order',
 *   });
 * });
 * ```
 */
export function detach<T>(fn: () => T | PromiseLike<T>, options?: DetachOptions): Promise<T> {
  checkTask('detach', fn, options);
  const name = taskName(fn, options?.name);
  const timeout = options?.timeout ?? DEFAULT_TASK_TIMEOUT;
  return launch(fn, name, timeout, new AbortController());
}

/** Options of `runInBackground` and of a pool's `run`. */
export interface BackgroundTaskOptions extends DetachOptions {
  /**
   * Told once if the task fails or times out, or is refused because the queue is full.
   * Default: the pool's `onError`, else `console.error`. A throw inside is caught and
   * written with `console.error`.
   */
  onError?: (err: Error) => void;
}

/** Options of `drainBackground` and of a pool's `drain`. */
export interface DrainOptions {
  /**
   * Milliseconds to wait for running and queued tasks before the stragglers' signals
   * are aborted and the queued tasks dropped. Default 10,000.
   */
  timeout?: number;
}

/** What `drainBackground` resolves with. */
export interface DrainResult {
  /** Names of the tasks still running or queued at the drain's timeout (empty if all finished). */
  pending: string[];
}

/** Options of `createBackgroundPool`. */
export interface BackgroundPoolOptions {
  /** Tasks running at once; more wait in a FIFO queue. Default 64. */
  concurrency?: number;
  /** Tasks waiting at most; past it a task is not run and its `onError` is told. Default 10,000. */
  maxQueued?: number;
  /** Told of a failed, timed-out or refused task that has no `onError` of its own. */
  onError?: (err: Error, name: string) => void;
}

/** A bounded set of background tasks, made by `createBackgroundPool`. */
export interface BackgroundPool {
  /** Start `fn` detached in this pool, or queue it; as `runInBackground`. */
  run(fn: () => unknown, options?: BackgroundTaskOptions): void;
  /** Wait for this pool's tasks; as `drainBackground`. */
  drain(options?: DrainOptions): Promise<DrainResult>;
  /** Tasks running now. */
  readonly running: number;
  /** Tasks waiting for a free slot. */
  readonly queued: number;
}

/** Default `concurrency` of a pool: enough for write-backs, bounded against bursts. */
export const DEFAULT_CONCURRENCY = 64;

/** Default `maxQueued` of a pool. */
export const DEFAULT_MAX_QUEUED = 10_000;

/** Default timeout of a drain, in ms: 10 seconds, within a typical shutdown grace period. */
export const DEFAULT_DRAIN_TIMEOUT = 10_000;

interface Task {
  readonly fn: () => unknown;
  readonly name: string;
  readonly timeout: number;
  readonly onError: ((err: Error) => void) | undefined;
  /** The submitter's async context without the request scope: the task starts in it. */
  readonly resource: <R>(fn: () => R) => R;
  controller?: AbortController;
  /**
   * Settles the promise handed to the request's `waitUntil` (Workers), once the task
   * has finished, failed, timed out, or was dropped.
   */
  release?: (() => void) | undefined;
}

function checkPoolOptions(options: unknown): void {
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `createBackgroundPool(): options must be an object such as { concurrency: 8 }, got ${describe(options)}.`,
    );
  }
  checkOptionNames('createBackgroundPool', options, POOL_OPTIONS);
  const { concurrency, maxQueued, onError } = options as Record<string, unknown>;
  if (concurrency !== undefined && !isCount(concurrency, 1)) {
    throw new TypeError(
      `createBackgroundPool(): options.concurrency must be a positive integer, got ${describe(concurrency)}.`,
    );
  }
  if (maxQueued !== undefined && !isCount(maxQueued, 0)) {
    throw new TypeError(
      `createBackgroundPool(): options.maxQueued must be a non-negative integer, got ${describe(maxQueued)}.`,
    );
  }
  if (onError !== undefined && typeof onError !== 'function') {
    throw new TypeError(
      `createBackgroundPool(): options.onError must be a function (err, name) => void, got ${describe(onError)}.`,
    );
  }
}

function checkRunOptions(api: string, fn: unknown, options: unknown): void {
  checkTask(api, fn, options, RUN_OPTIONS);
  const onError = (options as { onError?: unknown } | undefined)?.onError;
  if (onError !== undefined && typeof onError !== 'function') {
    throw new TypeError(
      `${api}(): options.onError must be a function (err) => void, got ${describe(onError)}.`,
    );
  }
}

function checkDrainOptions(api: string, options: unknown): void {
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `${api}(): options must be an object such as { timeout: 5000 }, got ${describe(options)}.`,
    );
  }
  checkOptionNames(api, options, DRAIN_OPTIONS);
  const { timeout } = options as Record<string, unknown>;
  if (timeout !== undefined && !isDuration(timeout)) {
    throw new TypeError(
      `${api}(): options.timeout must be a positive number of milliseconds (or Infinity), got ${describe(timeout)}.`,
    );
  }
}

/**
 * Hand the request's runtime a promise that settles when `task` is over, so a task that
 * outlives the response is not cut off with the request's invocation (Workers'
 * `waitUntil`). The task's own timeout still bounds it. A `waitUntil` that throws (the
 * invocation is already over) changes nothing for the task.
 */
function keepAlive(execution: ExecutionContext, task: Task): void {
  const done = new Promise<void>((resolve) => {
    task.release = resolve;
  });
  try {
    execution.waitUntil(done);
  } catch {
    // Nothing to keep alive any more; the task runs as it would anywhere else.
  }
}

/** A rejection value as an `Error`, for `onError(err: Error)`. */
function asError(name: string, value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(`Background task "${name}" failed with a non-Error value: ${describe(value)}.`, {
    cause: value,
  });
}

function makePool(options: BackgroundPoolOptions | undefined, run: string, drain: string) {
  const concurrency = options?.concurrency ?? DEFAULT_CONCURRENCY;
  const maxQueued = options?.maxQueued ?? DEFAULT_MAX_QUEUED;
  const poolOnError = options?.onError;
  const running = new Set<Task>();
  // FIFO queue as an array and a head index: `shift()` is O(n) on a 10,000-task queue.
  let queue: Task[] = [];
  let head = 0;
  const idleWaiters = new Set<() => void>();

  function queued(): number {
    return queue.length - head;
  }

  /** Report a task's failure exactly once: its `onError`, else the pool's, else the console. */
  function report(task: Task, err: Error): void {
    const reportFailed = (thrown: unknown): void => {
      console.error(
        `context-cache: the onError handler of background task "${task.name}" threw:`,
        thrown,
      );
    };
    try {
      let reported: unknown;
      if (task.onError !== undefined) reported = task.onError(err);
      else if (poolOnError !== undefined) reported = poolOnError(err, task.name);
      else console.error(`context-cache: background task "${task.name}" failed:`, err);
      // An async handler's rejection is written the same way, never left unhandled.
      if (isThenable(reported)) reported.then(undefined, reportFailed);
    } catch (thrown) {
      reportFailed(thrown);
    }
  }

  function settled(task: Task, err: unknown, failed: boolean): void {
    task.release?.();
    // A task dropped by a drain's timeout is already gone: `pending` was its report.
    if (!running.delete(task)) return;
    if (failed) report(task, asError(task.name, err));
    pump();
  }

  function start(task: Task): void {
    const controller = new AbortController();
    task.controller = controller;
    running.add(task);
    // Runs in the submitter's context minus the request scope, whoever starts it (the
    // submitter itself, or a finishing task freeing a slot).
    task.resource(() => {
      launch(task.fn, task.name, task.timeout, controller).then(
        () => settled(task, undefined, false),
        (err: unknown) => settled(task, err, true),
      );
    });
  }

  function pump(): void {
    while (running.size < concurrency && head < queue.length) {
      const next = queue[head]!;
      queue[head++] = undefined as never;
      if (head === queue.length) {
        queue = [];
        head = 0;
      }
      start(next);
    }
    if (running.size === 0 && head === queue.length) {
      for (const wake of idleWaiters) wake();
    }
  }

  function submit(task: Task): void {
    if (running.size < concurrency) start(task);
    else if (queued() < maxQueued) queue.push(task);
    else {
      const err = new BackgroundError(
        `Background task "${task.name}" was not run: the queue is full (${maxQueued} tasks waiting, ${concurrency} running).`,
        'CONTEXT_CACHE_QUEUE_FULL',
        task.name,
      );
      // Reported asynchronously, like every other outcome: `run()` never calls back
      // before it returns.
      task.resource(() =>
        queueMicrotask(() => {
          report(task, err);
          task.release?.();
        }),
      );
    }
  }

  function runTask(fn: () => unknown, taskOptions?: BackgroundTaskOptions): void {
    checkRunOptions(run, fn, taskOptions);
    const name = taskName(fn, taskOptions?.name);
    const timeout = taskOptions?.timeout ?? DEFAULT_TASK_TIMEOUT;
    const onError = taskOptions?.onError;
    const execution = currentExecutionContext();
    // The bookkeeping runs in the blank scope, not the request's: a finished request's
    // cache stays collectable while its tasks still run.
    runInScope(BLANK, () => {
      const task: Task = { fn, name, timeout, onError, resource: AsyncLocalStorage.snapshot() };
      if (execution !== undefined) keepAlive(execution, task);
      submit(task);
    });
  }

  function drainPool(drainOptions?: DrainOptions): Promise<DrainResult> {
    checkDrainOptions(drain, drainOptions);
    const timeout = drainOptions?.timeout ?? DEFAULT_DRAIN_TIMEOUT;
    return runInScope(
      BLANK,
      () =>
        new Promise<DrainResult>((resolve) => {
          if (running.size === 0 && head === queue.length) {
            resolve({ pending: [] });
            return;
          }
          let timer: ReturnType<typeof setTimeout> | undefined;
          const wake = (): void => {
            idleWaiters.delete(wake);
            if (timer !== undefined) clearTimeout(timer);
            resolve({ pending: [] });
          };
          idleWaiters.add(wake);
          if (timeout > MAX_TIMER) return;
          timer = setTimeout(() => {
            idleWaiters.delete(wake);
            const stragglers = [...running];
            const dropped = queue.slice(head);
            queue = [];
            head = 0;
            running.clear();
            const reason = (task: Task) =>
              new BackgroundError(
                `Background task "${task.name}" was still running when ${drain}() timed out after ${timeout} ms; its signal was aborted.`,
                'CONTEXT_CACHE_DRAINED',
                task.name,
              );
            for (const task of stragglers) task.controller?.abort(reason(task));
            for (const task of dropped) task.release?.();
            resolve({ pending: [...stragglers, ...dropped].map((task) => task.name) });
            // Other drains waiting on this pool see it idle now.
            for (const other of idleWaiters) other();
          }, timeout);
        }),
    );
  }

  const pool: BackgroundPool = {
    run: runTask,
    drain: drainPool,
    get running() {
      return running.size;
    },
    get queued() {
      return queued();
    },
  };
  return pool;
}

/**
 * Make a pool of background tasks: at most `concurrency` run at once (default 64), at
 * most `maxQueued` wait in a FIFO queue (default 10,000), and past that a task is not
 * run and its `onError` gets a `BackgroundError` (code `CONTEXT_CACHE_QUEUE_FULL`)
 * saying the queue is full. A burst of requests can never start unbounded work.
 * A task's timeout starts when it starts running, not while it waits.
 *
 * @example
 * ```ts
 * const mail = createBackgroundPool({ concurrency: 4, onError: (err, name) => log.error({ err, name }) });
 * mail.run(() => sendWelcomeMail(user), { name: 'welcome mail', timeout: 10_000 });
 * process.on('SIGTERM', async () => {
 *   const { pending } = await mail.drain({ timeout: 5000 });
 *   if (pending.length > 0) log.warn({ pending }, 'mails not sent');
 * });
 * ```
 */
export function createBackgroundPool(options?: BackgroundPoolOptions): BackgroundPool {
  checkPoolOptions(options);
  return makePool(options, 'pool.run', 'pool.drain');
}

/** The default pool, shared by every copy of this package (ESM and CJS) in the process. */
function defaultPool(): BackgroundPool {
  return sharedBackgroundPool(() => makePool(undefined, 'runInBackground', 'drainBackground'));
}

/**
 * Fire-and-forget `detach`: start `fn` in the default pool (64 at once, 10,000 queued),
 * with no request cache and a signal of its own (default timeout 30 s), and return at
 * once. A failure, a timeout or a full queue is reported exactly once — to `onError`,
 * else `console.error` — and never thrown, never an unhandled rejection. Bad arguments
 * throw a `TypeError` at once. `drainBackground()` waits for these tasks.
 *
 * @example
 * ```ts
 * const user = await getUser(id);
 * // the write-back survives the response and does not keep the request cache alive:
 * runInBackground(() => sharedCache.set(`user:${id}`, user), {
 *   name: 'user write-back',
 *   timeout: 1000,
 *   onError: (err) => log.warn(err),
 * });
 * ```
 */
export function runInBackground(fn: () => unknown, options?: BackgroundTaskOptions): void {
  defaultPool().run(fn, options);
}

/**
 * Wait for the default pool's tasks (graceful shutdown), including tasks started while
 * draining. At `timeout` (default 10 s) the signals of the tasks still running are
 * aborted, queued tasks are dropped, and the promise resolves with their names in
 * `pending`; those tasks are not reported again to `onError`. Never rejects for a task.
 *
 * @example
 * ```ts
 * process.on('SIGTERM', () => {
 *   server.close(async () => {
 *     const { pending } = await drainBackground({ timeout: 5000 });
 *     if (pending.length > 0) console.warn('background tasks cut at shutdown:', pending);
 *     process.exit(0);
 *   });
 * });
 * ```
 */
export function drainBackground(options?: DrainOptions): Promise<DrainResult> {
  return defaultPool().drain(options);
}
