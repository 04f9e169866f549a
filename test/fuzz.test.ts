import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const script = fileURLToPath(new URL('./fuzz/request-cache.mjs', import.meta.url));

/** Run the fuzzer (see its header) on `count` seeds from `first`, within `budget` ms. */
function fuzz(first: number, count: number, budget: number) {
  return new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--no-warnings',
        '--unhandled-rejections=strict',
        script,
        String(first),
        String(count),
        `--budget=${budget}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

// Runs the build (npm test builds before it tests), on fixed seeds so every run checks
// the same cases; a failure prints the seed to replay with --verbose. Longer runs:
// node --unhandled-rejections=strict test/fuzz/request-cache.mjs 1 20000 --budget=600000
it('keeps every invariant of the request cache under random concurrent use', async () => {
  const { code, output } = await fuzz(1, 600, 30_000);
  const ran = Number(/ran (\d+) seeds/.exec(output)?.[1] ?? 0);
  expect(output, output).toMatch(/, 0 failing,/);
  expect(code, output).toBe(0);
  // The budget may cut the run short on a busy machine, never to nothing.
  expect(ran).toBeGreaterThanOrEqual(50);
}, 60_000);
