/** Small async helpers shared by the tests: latches, polling, GC and rejection checks. */

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeEach, expect } from 'vitest';

export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Poll `check` until it returns true, at most `tries` times `every` ms apart. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  tries = 200,
  every = 25,
): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await sleep(every);
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** Fail the test if any promise rejection goes unhandled while it runs. */
export function noUnhandledRejections(): { readonly count: number } {
  const seen: unknown[] = [];
  const onUnhandled = (reason: unknown) => seen.push(reason);
  beforeEach(() => {
    seen.length = 0;
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(async () => {
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    process.off('unhandledRejection', onUnhandled);
    expect(seen).toEqual([]);
  });
  return {
    get count() {
      return seen.length;
    },
  };
}

let gc: (() => void) | undefined;

/**
 * Force garbage collection until `ref` is gone, or give up after a bounded number of
 * rounds; true when it was collected. Turns on `--expose-gc` from inside the worker.
 */
export async function collected(ref: WeakRef<object>): Promise<boolean> {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  for (let round = 0; round < 20 && ref.deref() !== undefined; round++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  return ref.deref() === undefined;
}
