// Per-request query counting with an AsyncLocalStorage of the demo's own (and a second
// one for the comparison mode a page is rendered in). It is
// independent of context-cache's scope, which shows two things: the count follows
// every await of the request without being passed around, and work started with
// runInBackground() still sees it (detach drops only the request cache and signal),
// which is why a job opens a counter of its own.
import { AsyncLocalStorage } from 'node:async_hooks';

/** @typedef {{ queries: number }} Counter */

/**
 * How a page is rendered, for the comparison on every page:
 * - 'shared': request cache, then the shared tier, then SQL (what the demo serves);
 * - 'request': request cache, then SQL (the shared tier skipped);
 * - 'none': SQL every time (no request cache, no shared tier).
 * @typedef {'shared' | 'request' | 'none'} Mode
 */

/** @type {readonly Mode[]} */
export const MODES = ['shared', 'request', 'none'];

/** @type {AsyncLocalStorage<Counter>} */
const counters = new AsyncLocalStorage();

/** @type {AsyncLocalStorage<Mode>} */
const modes = new AsyncLocalStorage();

/**
 * Run `fn` in a mode (see `Mode`); getters read it with `currentMode()`.
 * @template T
 * @param {Mode} mode
 * @param {() => T} fn
 * @returns {T}
 */
export function inMode(mode, fn) {
  return modes.run(mode, fn);
}

/** The mode of the code running now: 'shared' unless `inMode` says otherwise. */
export function currentMode() {
  return modes.getStore() ?? 'shared';
}

/** Queries run since the process started, in every request and job. */
let total = 0;

/**
 * Run `fn` with a fresh query counter; the counter is returned with the result.
 * @template T
 * @param {() => Promise<T>} fn
 * @returns {Promise<{ result: T, queries: number }>}
 */
export async function counted(fn) {
  /** @type {Counter} */
  const counter = { queries: 0 };
  const result = await counters.run(counter, fn);
  return { result, queries: counter.queries };
}

/** Queries run so far by the current request or job (0 outside any). */
export function queriesSoFar() {
  return counters.getStore()?.queries ?? 0;
}

/** Called by the database layer once per statement. */
export function countQuery() {
  total++;
  const counter = counters.getStore();
  if (counter !== undefined) counter.queries++;
}

/** Queries run since the process started. */
export function totalQueries() {
  return total;
}
