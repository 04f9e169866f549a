/**
 * Deno: runs the conformance cases on the built package (ESM and CJS), prints them as
 * `REPORT <json>`, then serves the test app with `Deno.serve` on 127.0.0.1 and prints
 * `LISTEN <port>`. Started by deno.test.ts; stops when its stdin closes.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import * as diagnostics from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { type Adapter, makeApp } from './app.js';
import { type Lib, runConformance } from './conformance.js';

const dist = new URL('../../dist/', import.meta.url);
const lib = (await import(new URL('index.js', dist).href)) as Lib;
const adapter = (await import(new URL('hono.js', dist).href)) as Adapter;
const cjs = createRequire(import.meta.url)(fileURLToPath(new URL('index.cjs', dist))) as Lib;

const report = await runConformance(lib, { cjs, AsyncLocalStorage, diagnostics });
console.log(`REPORT ${JSON.stringify({ version: `Deno ${Deno.version.deno}`, report })}`);

const app = makeApp(lib, adapter);
const server = Deno.serve(
  { port: 0, hostname: '127.0.0.1', onListen: ({ port }) => console.log(`LISTEN ${port}`) },
  // As `Deno.serve(app.fetch)`: Hono gets the serve info (`remoteAddr`, `completed`).
  (request, info) => app.fetch(request, info),
);

process.stdin.on('data', () => {});
process.stdin.on('end', async () => {
  await server.shutdown();
  Deno.exit(0);
});
