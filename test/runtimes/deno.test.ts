import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { binary, readLines, runtimeSuite, startEntry } from './driver.js';

// Deno from the `deno` npm package (its binary comes as a per-platform optional dependency).
// --sloppy-imports lets the entry's `.js` imports find the `.ts` files beside it.
runtimeSuite(
  'Deno (Deno.serve)',
  () =>
    startEntry('deno', binary('deno', 'deno'), [
      'run',
      '--sloppy-imports',
      '--allow-read',
      '--allow-net=127.0.0.1',
      '--allow-env',
      'test/runtimes/deno.ts',
    ]),
  // Deno gives `new Response(res.body, res)` a stream of its own for a body Deno made:
  // a response Hono remakes to set a header after the handler is watched like any other.
  { remadeBodyKept: false },
);

describe('Deno (Deno.serve(app.fetch)), an app that never reads the request signal', () => {
  it('serves through the adapter without Deno printing a notice about request.signal', async () => {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const child = spawn(
      binary('deno', 'deno'),
      [
        'run',
        '--sloppy-imports',
        '--allow-read',
        '--allow-net=127.0.0.1',
        '--allow-env',
        'test/runtimes/deno-quiet.ts',
      ],
      { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const errors: string[] = [];
    readLines(child.stderr!, (line) => errors.push(line));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no LISTEN line: ${errors.join('\n')}`)),
          60_000,
        );
        readLines(child.stdout!, (line) => {
          const listen = /^LISTEN (\d+)$/.exec(line);
          if (listen === null) return;
          clearTimeout(timer);
          resolve(Number(listen[1]));
        });
      });
      for (const id of ['1', '2', '3']) {
        const res = await fetch(`http://127.0.0.1:${port}/user/${id}`, {
          signal: AbortSignal.timeout(10_000),
        });
        expect(await res.json()).toEqual({ id });
      }
    } finally {
      child.stdin?.end();
      await new Promise((resolve) => {
        const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.once('exit', () => {
          clearTimeout(kill);
          resolve(undefined);
        });
      });
    }
    // Reading request.signal under Deno.serve prints a notice about its legacy abort.
    expect(errors.filter((line) => /request\.signal|legacy/i.test(line))).toEqual([]);
  });
});
