// Every subpath in package.json "exports", imported by name from the built package.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const { exports: map } = createRequire(import.meta.url)('context-cache/package.json');
const loaded = [];
for (const subpath of Object.keys(map)) {
  if (subpath === './package.json') continue;
  const name = subpath === '.' ? 'context-cache' : `context-cache/${subpath.slice(2)}`;
  const mod = await import(name);
  assert.ok(Object.keys(mod).length > 0, `${name} exports something`);
  loaded.push(name);
}
// Importing the root entry must not load any framework or ioredis.
const root = await import('context-cache');
assert.equal(typeof root.withCacheContext, 'function');
console.log(`ok: imported ${loaded.join(', ')}`);
