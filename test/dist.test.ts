import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const script = (name: string) => fileURLToPath(new URL(`./dist/${name}`, import.meta.url));

// These run the built package (npm test builds before it tests), loaded by name.
describe('the built package', () => {
  it('ESM import, CJS require and a second copy share one scope', async () => {
    const { stdout } = await run(process.execPath, [script('share-scope.mjs')]);
    expect(stdout).toContain('ok: ESM, CJS and a second copy share one scope');
  });

  it('every subpath loads by name with import and require', async () => {
    const esm = await run(process.execPath, [script('subpaths.mjs')]);
    expect(esm.stdout).toMatch(/^ok: imported context-cache/);
    const cjs = await run(process.execPath, [script('subpaths.cjs')]);
    expect(cjs.stdout).toMatch(/^ok: required context-cache/);
  });

  it('importing the root entry loads no framework and no ioredis', async () => {
    const probe = `
      const before = new Set(Object.keys(require.cache));
      require('context-cache');
      const loaded = Object.keys(require.cache).filter((f) => !before.has(f) && f.includes('node_modules'));
      console.log(JSON.stringify(loaded));`;
    const { stdout } = await run(process.execPath, ['-e', probe], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
    });
    const loaded: string[] = JSON.parse(stdout);
    const heavy = loaded.filter((f) =>
      /node_modules[\\/](express|fastify|koa|hono|@hono|@nestjs|ioredis)[\\/]/.test(f),
    );
    expect(heavy).toEqual([]);
  });
});
