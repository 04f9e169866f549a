// Run against the built package (dist/), by name, as a user would load it.
// An ESM import and a CJS require of context-cache, and a second copy of the package
// installed elsewhere, must all share one scope.
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esm from 'context-cache';

const require = createRequire(import.meta.url);
const cjs = require('context-cache');

assert.notEqual(esm.withCacheContext, cjs.withCacheContext, 'two module instances expected');

// A second copy of the package, as if installed twice (two versions of one major). It
// lives under the project's node_modules so it resolves the same dependencies.
const root = new URL('../../', import.meta.url);
const cacheDir = fileURLToPath(new URL('node_modules/.cache/', root));
mkdirSync(cacheDir, { recursive: true });
const dir = mkdtempSync(join(cacheDir, 'context-cache-copy-'));
const copy = join(dir, 'node_modules', 'context-cache');
mkdirSync(copy, { recursive: true });
cpSync(new URL('dist', root), join(copy, 'dist'), { recursive: true });
writeFileSync(join(copy, 'package.json'), readFileSync(new URL('package.json', root)));
const other = await import(pathToFileURL(join(copy, 'dist', 'index.js')).href);
assert.notEqual(other.withCacheContext, esm.withCacheContext);

try {
  await esm.withCacheContext(async () => {
    let loads = 0;
    const load = async () => ++loads;
    await esm.getWithContextCache('user', 1, load);
    assert.equal(await cjs.getWithContextCache('user', 1, load), 1, 'CJS sees the ESM cache');
    assert.equal(await other.getWithContextCache('user', 1, load), 1, 'a copy sees it too');
    assert.equal(cjs.getContextCache(), esm.getContextCache());
    assert.equal(other.getContextCache(), esm.getContextCache());
    assert.equal(loads, 1);
    // Nesting across copies reuses the one cache.
    cjs.withCacheContext(() => assert.equal(cjs.getContextCache(), esm.getContextCache()));
    other.withNoCacheContext(() => assert.equal(esm.getContextCache(), undefined));
    assert.deepEqual(cjs.getContextCache().stats(), {
      hits: 2,
      joins: 0,
      misses: 1,
      loads: 1,
      errors: 0,
      evictions: 0,
      batches: 0,
    });
  });
  assert.equal(cjs.getContextCache(), undefined);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log('ok: ESM, CJS and a second copy share one scope');
