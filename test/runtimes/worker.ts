/**
 * Cloudflare Workers (workerd, `nodejs_compat`): bundled with the built package by
 * workerd.test.ts. `GET /conformance` runs the conformance cases inside a request and
 * answers their report; every other path goes to the test app, with the Workers
 * execution context (`ctx`) that Hono keeps as `c.executionCtx`.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import type { ExecutionContext } from 'hono';
// The bundler (workerd.test.ts) swaps these for the built dist/hono.js and dist/index.js.
import * as adapter from '../../src/adapters/hono/index.js';
import * as lib from '../../src/index.js';
import { makeApp } from './app.js';
import { runConformance } from './conformance.js';

const app = makeApp(lib, adapter);

export default {
  async fetch(request: Request, env: unknown, ctx: ExecutionContext): Promise<Response> {
    if (new URL(request.url).pathname === '/conformance') {
      const diagnostics = await import('node:diagnostics_channel').catch(() => undefined);
      const report = await runConformance(lib, {
        diagnostics,
        noCjs: 'Workers load ES modules only: there is no CJS copy to share a scope with',
        AsyncLocalStorage,
      });
      const compat = (globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent;
      return Response.json({ version: `workerd (${compat ?? 'unknown'})`, report });
    }
    return app.fetch(request, env, ctx);
  },
};
