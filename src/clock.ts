/**
 * A coarse process-wide clock. Reading `Date.now()` costs ~30 ns, a quarter of the
 * budget of a cache hit, so the time is read at most once per `RESOLUTION` window and
 * reused until a timer clears it. No timer exists while nothing reads the clock.
 */

import { outsideScope } from './scope.js';

/** How stale the clock may be, in ms. A cache may serve hits this long past its lifetime. */
export const RESOLUTION = 50;

let cached = 0;
let source: (() => number) | undefined;

function clear(): void {
  cached = 0;
}

function arm(): void {
  setTimeout(clear, RESOLUTION).unref();
}

function refresh(): number {
  if (source !== undefined) return source();
  cached = Date.now();
  // The timer must not capture the caller's async context (a request scope): it would
  // keep that request's cache reachable until the timer fires.
  outsideScope(arm);
  return cached;
}

/** Milliseconds since the epoch, at most `RESOLUTION` ms old. */
export function now(): number {
  return cached !== 0 ? cached : refresh();
}

/**
 * Replace the clock (tests only). With a source set, every read calls it, so tests can
 * move time without sleeping; pass `undefined` to go back to the real clock.
 */
export function setClock(fn: (() => number) | undefined): void {
  source = fn;
  cached = 0;
}
