/**
 * Per-getter timeouts. A loader that never settles would otherwise hang every later call
 * of its key for the rest of the request (they all join the stored load). With a
 * `timeout`, the load rejects with a `LoadTimeoutError` once the limit has passed: every
 * waiter gets that error, the entry is dropped like any failed load, and the next call
 * loads again.
 *
 * Only a load pays for this (a hit never sees it). The timer is made outside any scope,
 * so it carries no request's async context; it holds the load's rejection (and so what
 * waits on the load) until the load settles or the limit passes, never longer.
 */

import type { CacheKey } from './keys.js';
import { outsideScope } from './scope.js';
import { describe, isDuration } from './warnings.js';

/** Longest delay `setTimeout` honours. */
const MAX_TIMER = 2 ** 31 - 1;

/**
 * The error of a load that ran past its getter's `timeout`. Check `code`, not
 * `instanceof`: an ESM and a CJS copy of this package each have their own class.
 *
 * @example
 * ```ts
 * const getUser = contextCached('user', (id: number) => db.users.find(id), { timeout: 2000 });
 * try {
 *   await getUser(1);
 * } catch (err) {
 *   if ((err as LoadTimeoutError).code === 'CONTEXT_CACHE_LOAD_TIMEOUT') metrics.slowLoads++;
 * }
 * ```
 */
export class LoadTimeoutError extends Error {
  override readonly name = 'LoadTimeoutError';
  /** Always `'CONTEXT_CACHE_LOAD_TIMEOUT'`. */
  readonly code = 'CONTEXT_CACHE_LOAD_TIMEOUT';
  /** The group of the load. */
  readonly group: string;
  /** The key of the load. */
  readonly key: CacheKey;
  /** The limit it ran past, in ms. */
  readonly timeout: number;

  constructor(fn: string, group: string, key: CacheKey, timeout: number) {
    super(
      `${fn}('${group}'): the load of key ${formatKey(key)} did not settle within its ` +
        `timeout of ${timeout} ms. Its callers were rejected and the entry dropped, so the ` +
        'next call loads again.',
    );
    this.group = group;
    this.key = key;
    this.timeout = timeout;
  }
}

/** A key as code would write it: `42`, `"ada"`, `7n`, `[1, "a"]`. */
export function formatKey(key: unknown): string {
  if (Array.isArray(key)) return `[${key.map(formatKey).join(', ')}]`;
  if (typeof key === 'string') return JSON.stringify(key);
  if (typeof key === 'bigint') return `${key}n`;
  return String(key);
}

/**
 * Check a `timeout` option: a positive number of ms, or `Infinity` for none. Returns the
 * limit to apply, or `undefined` for no timer at all.
 */
export function checkTimeout(fn: string, timeout: unknown): number | undefined {
  if (timeout === undefined || timeout === Infinity) return undefined;
  if (!isDuration(timeout) || timeout > MAX_TIMER) {
    throw new TypeError(
      `${fn}(): options.timeout must be a positive number of milliseconds such as 5000 ` +
        `(at most ${MAX_TIMER}), or Infinity for none, got ${describe(timeout)}.`,
    );
  }
  return timeout;
}

/** The timer's callback: reject the load with the error naming it. */
function expire(
  reject: (err: Error) => void,
  fn: string,
  group: string,
  key: CacheKey,
  timeout: number,
): void {
  reject(new LoadTimeoutError(fn, group, key, timeout));
}

/**
 * `result`, or a `LoadTimeoutError` naming `fn`, `group`, `key` and the limit once
 * `timeout` ms have passed, whichever comes first. A late result is ignored.
 */
export function withDeadline<T>(
  result: PromiseLike<T>,
  timeout: number,
  fn: string,
  group: string,
  key: CacheKey,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    // Armed before `result` is subscribed to: a thenable that calls back at once clears
    // it. The timer holds the load's rejection strongly (a load nobody else holds, such
    // as one whose resolve was lost, must still time out) for at most `timeout` ms.
    const timer = outsideScope(() => setTimeout(expire, timeout, reject, fn, group, key, timeout));
    result.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
