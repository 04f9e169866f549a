import { binary, runtimeSuite, startEntry } from './driver.js';

// Bun from the `bun` npm package (its binary comes as a per-platform optional dependency).
runtimeSuite('Bun (Bun.serve)', () =>
  startEntry('bun', binary('bun', 'bun'), ['test/runtimes/bun.ts']),
);
