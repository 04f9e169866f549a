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
 * Every timer, promise and signal created here is created outside the request scope
 * (`outsideScope`), so none of them keeps a finished request's cache reachable.
 */

import { outsideScope, runInScope, Scope } from './scope.js';
import { describe } from './warnings.js';

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

/** Validate `fn` and the `timeout` / `name` options shared by `detach` and `runInBackground`. */
export function checkTask(api: string, fn: unknown, options: unknown): void {
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
  const { timeout, name } = options as Record<string, unknown>;
  if (timeout !== undefined && !(typeof timeout === 'number' && timeout > 0)) {
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
 * its result; abort the signal (and reject) at `timeout`. Must be called outside any
 * request scope: everything created here inherits the caller's async context.
 */
export function launch<T>(
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
      result = runInScope(new Scope(undefined, signal), fn);
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
  // Created outside the request scope: the timer, the signal and the promise chain must
  // not keep the request's cache reachable while the task runs.
  return outsideScope(() => launch(fn, name, timeout, new AbortController()));
}
