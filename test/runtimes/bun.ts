/**
 * Bun: runs the conformance cases on the built package (ESM and CJS), prints them as
 * `REPORT <json>`, then serves the test app with `Bun.serve` on 127.0.0.1 and prints
 * `LISTEN <port>`. Started by bun.test.ts; stops when its stdin closes.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import * as diagnostics from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import { type Adapter, makeApp } from './app.js';
import { type Lib, runConformance } from './conformance.js';

declare const Bun: {
  readonly version: string;
  serve(options: {
    port: number;
    hostname: string;
    fetch: (request: Request, server: unknown) => Response | Promise<Response>;
  }): { readonly port: number; stop(force?: boolean): void };
};

const dist = new URL('../../dist/', import.meta.url);
const lib = (await import(new URL('index.js', dist).href)) as Lib;
const adapter = (await import(new URL('hono.js', dist).href)) as Adapter;
const cjs = createRequire(import.meta.url)(new URL('index.cjs', dist).pathname) as Lib;

const report = await runConformance(lib, { cjs, AsyncLocalStorage, diagnostics });
console.log(`REPORT ${JSON.stringify({ version: `Bun ${Bun.version}`, report })}`);

const app = makeApp(lib, adapter);
const server = Bun.serve({
  port: 0,
  hostname: '127.0.0.1',
  // As `Bun.serve({ fetch: app.fetch })`: Hono gets the server as its env.
  fetch: (request, bunServer) => app.fetch(request, bunServer),
});
console.log(`LISTEN ${server.port}`);

process.stdin.on('data', () => {});
process.stdin.on('end', () => {
  server.stop(true);
  process.exit(0);
});
