// The demo tracker (`npm start`) as a child process on a free loopback port, for the
// end-to-end tests: start it, read its pages over real HTTP, stop it with SIGTERM.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const serverPath = fileURLToPath(new URL('../../examples/tracker/server.js', import.meta.url));

export interface Demo {
  url: string;
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

export async function startDemo(env: Record<string, string>): Promise<Demo> {
  if (!existsSync(new URL('../../dist/index.js', import.meta.url))) {
    throw new Error(
      'dist/ is missing: build the package first (npx tsup), the demo imports it by name',
    );
  }
  const child = spawn(process.execPath, [serverPath], {
    cwd: root,
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', JOB_PAUSE_MS: '50', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the demo did not start in 90 s:\n${output}`)),
      90_000,
    );
    const check = () => {
      const match = output.match(/Listening on (http:\/\/127\.0\.0\.1:\d+)\//);
      if (match?.[1]) {
        clearTimeout(timer);
        child.stdout?.off('data', check);
        resolve(match[1]);
      }
    };
    child.stdout?.on('data', check);
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the demo exited with code ${code} before listening:\n${output}`));
    });
  });
  return { url, child, output: () => output, exited };
}

export async function get(demo: Demo, path: string, init?: RequestInit) {
  const response = await fetch(demo.url + path, init);
  return {
    status: response.status,
    headers: response.headers,
    queries: Number(response.headers.get('x-sql-queries')),
    cache: response.headers.get('x-cache-stats'),
    body: await response.text(),
  };
}

export async function stop(demo: Demo) {
  if (demo.child.exitCode !== null || demo.child.signalCode !== null) return demo.exited;
  demo.child.kill('SIGTERM');
  return demo.exited;
}
