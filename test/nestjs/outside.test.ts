// Work outside HTTP requests runs cache-free in a Nest app that imports
// ContextCacheModule: no scope is open there, so each read calls the loader, unless the
// job opens its own scope with withCacheContext. The app is compiled by tsc with
// experimentalDecorators and emitDecoratorMetadata.
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { noUnhandledRejections } from '../helpers/async.js';
import { type CompiledApp, compileNestApp } from './compile.js';

interface Run {
  sawCache: boolean;
  loads: number;
}
/** What the compiled app/outside.ts exports (typed here: the app needs legacy decorators). */
interface OutsideApp {
  startWorker(port: number): Promise<{
    jobs: { warmUp: Run[]; plainInterval: Run[]; ownScopeInterval: Run[] };
    send(id: number): Promise<Run>;
    close(): Promise<void>;
  }>;
}

noUnhandledRejections();

/** A port free on 127.0.0.1 right now (the TCP transport needs one named up front). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

let compiled: CompiledApp | undefined;
let worker: Awaited<ReturnType<OutsideApp['startWorker']>>;

beforeAll(async () => {
  compiled = compileNestApp(['test/nestjs/app/outside.ts']);
  const { startWorker } = await compiled.load<OutsideApp>('test/nestjs/app/outside.ts');
  worker = await startWorker(await freePort());
}, 180_000);
afterAll(async () => {
  await worker?.close();
  compiled?.remove();
});

describe('work outside requests in a Nest app with ContextCacheModule', () => {
  it('an OnModuleInit warm-up runs without a cache: each read loads', () => {
    expect(worker.jobs.warmUp).toEqual([{ sawCache: false, loads: 2 }]);
  });

  it('a @nestjs/schedule interval runs without a cache, unless it opens its own', async () => {
    await vi.waitFor(() => {
      expect(worker.jobs.plainInterval).toHaveLength(1);
      expect(worker.jobs.ownScopeInterval).toHaveLength(1);
    });
    expect(worker.jobs.plainInterval).toEqual([{ sawCache: false, loads: 2 }]);
    expect(worker.jobs.ownScopeInterval).toEqual([{ sawCache: true, loads: 1 }]);
  });

  it('a microservice message handler runs without a cache, message after message', async () => {
    expect(await worker.send(4)).toEqual({ sawCache: false, loads: 2 });
    expect(await worker.send(4)).toEqual({ sawCache: false, loads: 2 });
  });
});
