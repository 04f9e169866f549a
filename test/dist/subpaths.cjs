// Every subpath in package.json "exports", required by name from the built package.
const assert = require('node:assert/strict');
const { exports: map } = require('context-cache/package.json');

const loaded = [];
for (const subpath of Object.keys(map)) {
  if (subpath === './package.json') continue;
  const name = subpath === '.' ? 'context-cache' : `context-cache/${subpath.slice(2)}`;
  const mod = require(name);
  assert.ok(Object.keys(mod).length > 0, `${name} exports something`);
  if (subpath === './nestjs') assert.equal(typeof mod.ContextCacheModule.forRoot, 'function', `${name} exports ContextCacheModule`);
  else if (subpath !== '.') assert.equal(typeof mod.contextCache === 'function' || subpath === './redis', true, `${name} exports contextCache`);
  loaded.push(name);
}
console.log(`ok: required ${loaded.join(', ')}`);
