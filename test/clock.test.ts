/**
 * The coarse clock behind lifetimes: one `Date.now()` per period while something reads
 * it, and no timer left running once nothing does.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { now, RESOLUTION, timerRunning } from '../src/clock.js';

describe('the coarse clock', () => {
  it('stops its timer a period after the last read and starts it again on the next', async () => {
    const first = now();
    expect(timerRunning()).toBe(true);
    expect(Date.now() - first).toBeLessThanOrEqual(RESOLUTION);
    // Two ticks without a read: the first clears the reading, the second stops.
    await sleep(RESOLUTION * 4);
    expect(timerRunning()).toBe(false);
    const later = now(); // a fresh reading, not the one from before the pause
    expect(later - first).toBeGreaterThanOrEqual(RESOLUTION * 3);
    expect(timerRunning()).toBe(true);
  });

  it('stays within a period or so of the real time while it is read continuously', async () => {
    const until = Date.now() + RESOLUTION * 10;
    let reads = 0;
    while (Date.now() < until) {
      // One period, plus slack for ticks that run late on a busy machine; a clock that
      // stopped refreshing would be ten periods old by the end of the loop.
      expect(Date.now() - now()).toBeLessThanOrEqual(RESOLUTION * 4);
      reads++;
      await sleep(3);
    }
    expect(reads).toBeGreaterThan(10);
    expect(timerRunning()).toBe(true);
  });
});
