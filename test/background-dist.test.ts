import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

// Runs the built package (npm test builds before it tests), loaded by name.
describe('the built package', () => {
  it('ESM import and CJS require share one default background pool', async () => {
    const script = fileURLToPath(new URL('./dist/share-background.mjs', import.meta.url));
    const { stdout } = await run(process.execPath, [script]);
    expect(stdout).toContain('ok: ESM and CJS share one default background pool');
  });
});
