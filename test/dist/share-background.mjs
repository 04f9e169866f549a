// Run against the built package (dist/), by name, as a user would load it.
// An ESM import and a CJS require of context-cache must share one default background
// pool: a drain through either waits for tasks started through the other.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as esm from 'context-cache';

const require = createRequire(import.meta.url);
const cjs = require('context-cache');

assert.notEqual(esm.runInBackground, cjs.runInBackground, 'two module instances expected');

let release;
const gate = new Promise((resolve) => {
  release = resolve;
});
const done = [];
cjs.runInBackground(
  async () => {
    await gate;
    done.push('cjs task');
  },
  { name: 'cjs task' },
);
// A timed-out drain names the task the other copy started.
assert.deepEqual(await esm.drainBackground({ timeout: 20 }), { pending: ['cjs task'] });

esm.runInBackground(
  async () => {
    await new Promise((resolve) => setTimeout(resolve, 20));
    done.push('esm task');
  },
  { name: 'esm task' },
);
assert.deepEqual(await cjs.drainBackground({ timeout: 5000 }), { pending: [] });
assert.deepEqual(done, ['esm task']);
release();
console.log('ok: ESM and CJS share one default background pool');
