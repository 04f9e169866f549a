import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build, type Plugin } from 'esbuild';
import { binary, type RunningRuntime, readLines, root, runtimeSuite, stopChild } from './driver.js';

/** The compatibility date the test workers run with. */
const COMPATIBILITY_DATE = '2025-09-01';

/** Point the entry's imports of the sources at the built package, as a user's bundle would. */
const useDist: Plugin = {
  name: 'use-dist',
  setup(b) {
    b.onResolve({ filter: /\/src\/index\.js$/ }, () => ({ path: join(root, 'dist/index.js') }));
    b.onResolve({ filter: /\/src\/adapters\/hono\/index\.js$/ }, () => ({
      path: join(root, 'dist/hono.js'),
    }));
  },
};

/** Bundle the worker as wrangler would: ESM, Node's modules left to `nodejs_compat`. */
async function bundle(dir: string, entry: string, flags: readonly string[]): Promise<void> {
  await build({
    entryPoints: [join(root, 'test/runtimes', entry)],
    outfile: join(dir, 'worker.js'),
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    conditions: ['workerd', 'worker', 'import'],
    mainFields: ['module', 'main'],
    external: ['node:*'],
    plugins: [useDist],
    logLevel: 'silent',
  });
  writeFileSync(
    join(dir, 'config.capnp'),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .worker) ],
  sockets = [ (name = "http", address = "127.0.0.1:0", http = (), service = "main") ],
);
const worker :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js") ],
  compatibilityDate = "${COMPATIBILITY_DATE}",
  compatibilityFlags = [${flags.map((flag) => `"${flag}"`).join(', ')}],
);
`,
  );
}

/**
 * Start workerd on the bundle; it reports the port it listens on through its control
 * file descriptor (fd 3), then the conformance cases run inside a request.
 */
async function startWorkerd(entry: string, flags: readonly string[]): Promise<RunningRuntime> {
  const workerd = binary('workerd', 'workerd');
  mkdirSync(join(root, 'node_modules/.cache'), { recursive: true });
  const dir = mkdtempSync(join(root, 'node_modules/.cache/workerd-'));
  await bundle(dir, entry, flags);
  const child = spawn(workerd, ['serve', join(dir, 'config.capnp'), '--control-fd=3'], {
    cwd: dir,
    stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  readLines(child.stdout!, (line) => output.push(line));
  readLines(child.stderr!, (line) => output.push(line));
  const port = await new Promise<number>((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      void stopChild(child);
      reject(new Error(`workerd: ${why}\n--- its output ---\n${output.slice(-40).join('\n')}`));
    };
    const timer = setTimeout(() => fail('did not listen within 60 s'), 60_000);
    child.once('error', (err) => fail(`could not start: ${err.message}`));
    child.once('exit', (code, signal) => fail(`exited early (code ${code}, signal ${signal})`));
    readLines(child.stdio[3] as NodeJS.ReadableStream, (line) => {
      const event = JSON.parse(line) as { event?: string; socket?: string; port?: number };
      if (event.event === 'listen' && event.socket === 'http' && event.port !== undefined) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve(event.port);
      }
    });
  });
  const base = `http://127.0.0.1:${port}`;
  const stop = () => stopChild(child);
  try {
    const res = await fetch(`${base}/conformance`, { signal: AbortSignal.timeout(60_000) });
    if (res.status !== 200) {
      throw new Error(
        `GET /conformance answered ${res.status}: ${await res.text()}\n${output.join('\n')}`,
      );
    }
    const { version, report } = (await res.json()) as Pick<RunningRuntime, 'version' | 'report'>;
    return { version, report, base, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

// workerd from the `workerd` npm package (its binary comes as a per-platform optional
// dependency), the runtime of Cloudflare Workers, with `nodejs_compat`.
runtimeSuite('Cloudflare Workers (workerd, nodejs_compat)', () =>
  startWorkerd('worker.ts', ['nodejs_compat']),
);

// The root entry needs nothing of Node's but AsyncLocalStorage: with `nodejs_als` alone
// there is no Buffer, process or node:diagnostics_channel, and the core cases still pass.
runtimeSuite(
  'Cloudflare Workers (workerd, nodejs_als only): the root entry alone',
  () => startWorkerd('worker-als.ts', ['nodejs_als']),
  { app: false },
);
