/** Small helpers of the shared-tier tests. */

import { afterEach, beforeEach, expect } from 'vitest';

export function deferred<T>() {
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
