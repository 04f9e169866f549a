/**
 * Cloudflare Workers with `nodejs_als` alone: `node:async_hooks` and nothing else of
 * Node's (no `Buffer`, no `process`, no `node:diagnostics_channel`). The root entry needs
 * no more, so the conformance cases pass here too. Bundled by workerd.test.ts.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
// The bundler (workerd.test.ts) swaps this for the built dist/index.js.
import * as lib from '../../src/index.js';
import { runConformance } from './conformance.js';

export default {
  async fetch(request: Request): Promise<Response> {
    if (new URL(request.url).pathname !== '/conformance')
      return new Response('not found', { status: 404 });
    const globals = ['Buffer', 'process', 'setImmediate'].filter((name) => name in globalThis);
    if (globals.length > 0) {
      // Then this would prove nothing: say so rather than pass.
      return new Response(
        `nodejs_als alone should leave out Node's globals, found ${globals.join(', ')}`,
        {
          status: 500,
        },
      );
    }
    const report = await runConformance(lib, {
      noCjs: 'Workers load ES modules only: there is no CJS copy to share a scope with',
      AsyncLocalStorage,
    });
    return Response.json({
      version: 'workerd, nodejs_als only (no Buffer, process or setImmediate)',
      report,
    });
  },
};
