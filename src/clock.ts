/**
 * A coarse process-wide clock. Reading `Date.now()` costs ~30 ns, a quarter of the
 * budget of a cache hit, so the time is read at most once per `RESOLUTION` window and
 * reused until a timer clears it; the timer stops a period after the last read.
 */

import { unrefTimer } from './runtime.js';
import { outsideScope } from './scope.js';

/** The epoch while no reading is kept. */
const NONE = -2;
/** A mark that matches no epoch: check again next time. */
export const STALE = -1;

/** How stale the clock may be, in ms. A cache may serve hits this long past its lifetime. */
export const RESOLUTION = 50;

let cached = 0;
/**
 * Which reading `cached` holds: a new number each time a reading is kept, and `NONE`
 * while none is. Within one epoch `now()` returns one value, so a comparison with it
 * made once holds for the whole epoch (see `epoch()` and `readEpoch()`).
 */
let current = NONE;
let epochs = 0;
let source: (() => number) | undefined;

/**
 * Whether readings may be reused. Only where the clearing timer can be unref'd (Node,
 * Bun, Deno): a timer that held the process open would be a bug, and on Workers a timer
 * made during one request need not outlive it (and `Date.now()` only moves between I/O
 * there anyway), so every read asks `Date.now()`.
 */
let coarse = true;

/**
 * Clears the reading every `RESOLUTION` ms while the clock is in use, and stops itself
 * after a whole period in which nothing read it. A repeating timer keeps the async
 * context it was made in, so it is made outside any scope (a request's scope would stay
 * reachable as long as the timer runs) and the hot path never has to open one.
 */
let timer: ReturnType<typeof setInterval> | undefined;

function tick(): void {
  if (cached === 0) {
    clearInterval(timer);
    timer = undefined;
  } else {
    cached = 0;
    current = NONE;
  }
}

function start(): ReturnType<typeof setInterval> | undefined {
  const made = setInterval(tick, RESOLUTION);
  if (unrefTimer(made)) return made;
  clearInterval(made);
  coarse = false;
  return undefined;
}

function refresh(): number {
  if (source !== undefined) return source();
  if (!coarse) return Date.now();
  const time = Date.now();
  if (timer === undefined) timer = outsideScope(start);
  if (timer !== undefined) {
    cached = time;
    // Small integers (V8 compares them without unboxing), never NONE or STALE. They
    // come round again after 2^30 readings, 50 ms or more apart: a mark could only match
    // a later epoch by chance in a cache left unused for over a year and a half.
    epochs = (epochs + 1) & 0x3fffffff;
    current = epochs;
  }
  return time;
}

/** Unix time in milliseconds, at most `RESOLUTION` ms old. */
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
  current = NONE;
}

/**
 * The clock's current epoch: while it equals a mark taken with `readEpoch()`, `now()`
 * still returns the reading the mark was taken after. One integer comparison on a hot
 * path stands in for reading the clock and comparing times.
 */
export function epoch(): number {
  return current;
}

/**
 * The mark of the reading `now()` just returned: its epoch if the reading is kept for
 * reuse, else `STALE`, which no epoch equals (Workers, a replaced clock: every check
 * must read the clock again).
 */
export function readEpoch(): number {
  return cached !== 0 ? current : STALE;
}

/** Whether the clock's timer is running (tests only). */
export function timerRunning(): boolean {
  return timer !== undefined;
}
