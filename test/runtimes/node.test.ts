import { AsyncLocalStorage } from 'node:async_hooks';
import * as diagnostics from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { type Adapter, makeApp } from './app.js';
import { type Lib, runConformance } from './conformance.js';
import { type RunningRuntime, runtimeSuite } from './driver.js';

// Node, whichever version runs vitest (CI runs the whole suite on 20, 22 and 24): the
// built package loaded by name, the app on @hono/node-server.
async function startNode(): Promise<RunningRuntime> {
  const name = 'context-cache';
  const lib = (await import(name)) as Lib;
  const adapter = (await import(`${name}/hono`)) as Adapter;
  const cjs = createRequire(import.meta.url)(name) as Lib;
  const report = await runConformance(lib, { cjs, AsyncLocalStorage, diagnostics });
  const app = makeApp(lib, adapter);
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    version: `Node ${process.version}`,
    report,
    base: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

runtimeSuite(`Node ${process.versions.node} (@hono/node-server)`, startNode, { nodeServer: true });
