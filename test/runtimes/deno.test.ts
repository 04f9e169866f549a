import { binary, runtimeSuite, startEntry } from './driver.js';

// Deno from the `deno` npm package (its binary comes as a per-platform optional dependency).
// --sloppy-imports lets the entry's `.js` imports find the `.ts` files beside it.
runtimeSuite('Deno (Deno.serve)', () =>
  startEntry('deno', binary('deno', 'deno'), [
    'run',
    '--sloppy-imports',
    '--allow-read',
    '--allow-net=127.0.0.1',
    '--allow-env',
    'test/runtimes/deno.ts',
  ]),
);
