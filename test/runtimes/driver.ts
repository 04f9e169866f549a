/**
 * Drives one runtime from vitest: starts it on its entry script (bounded by timeouts),
 * takes its conformance report, and checks the Hono app it serves on 127.0.0.1 from
 * outside, over real sockets. A runtime that cannot start is a failing test that says
 * why, never a skip.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EndRecord, PRECOMPRESSED_GZIP, PRECOMPRESSED_TEXT } from './app.js';
import { type ConformanceReport, conformanceCases } from './conformance.js';

export const root = fileURLToPath(new URL('../../', import.meta.url));

/** A runtime that is up: its report, the app's address, and how to stop it. */
export interface RunningRuntime {
  readonly version: string;
  readonly report: ConformanceReport;
  readonly base: string;
  stop(): Promise<void>;
}

/** The path of a binary installed by `npm ci` under node_modules/.bin, or why it is missing. */
export function binary(name: string, fromPackage: string): string {
  const path = fileURLToPath(new URL(`../../node_modules/.bin/${name}`, import.meta.url));
  if (!existsSync(path)) {
    throw new Error(
      `${name} is not installed: the npm package "${fromPackage}" (a devDependency) ships it; run npm ci.`,
    );
  }
  return path;
}

/** Lines a child prints on a stream, each to `onLine`. */
export function readLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    rest += chunk;
    let newline = rest.indexOf('\n');
    while (newline !== -1) {
      onLine(rest.slice(0, newline));
      rest = rest.slice(newline + 1);
      newline = rest.indexOf('\n');
    }
  });
}

/** Stop a child we started: close its stdin, then SIGKILL it if it is still there. */
export function stopChild(child: ChildProcess, grace = 2000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), grace);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.stdin?.end();
    child.kill('SIGTERM');
  });
}

/**
 * Start `command` and wait (at most `timeout` ms) for the `REPORT <json>` and
 * `LISTEN <port>` lines an entry script prints.
 */
export function startEntry(
  label: string,
  command: string,
  args: readonly string[],
  timeout = 60_000,
): Promise<RunningRuntime> {
  const child = spawn(command, args, { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
  const output: string[] = [];
  return new Promise((resolve, reject) => {
    let report: { version: string; report: ConformanceReport } | undefined;
    const fail = (why: string) => {
      clearTimeout(timer);
      void stopChild(child);
      reject(new Error(`${label}: ${why}\n--- its output ---\n${output.slice(-40).join('\n')}`));
    };
    const timer = setTimeout(() => fail(`no LISTEN line within ${timeout} ms`), timeout);
    child.once('error', (err) => fail(`could not start: ${err.message}`));
    child.once('exit', (code, signal) => fail(`exited early (code ${code}, signal ${signal})`));
    readLines(child.stderr!, (line) => output.push(line));
    readLines(child.stdout!, (line) => {
      output.push(line);
      if (line.startsWith('REPORT ')) report = JSON.parse(line.slice(7));
      const listen = /^LISTEN (\d+)$/.exec(line);
      if (listen === null) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      if (report === undefined) {
        fail('listened before it printed its REPORT line');
        return;
      }
      resolve({
        version: report.version,
        report: report.report,
        base: `http://127.0.0.1:${listen[1]}`,
        stop: () => stopChild(child),
      });
    });
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** `GET base+path` as JSON, bounded. */
async function getJson<T>(base: string, path: string): Promise<T> {
  const res = await fetch(base + path, { signal: AbortSignal.timeout(10_000) });
  expect(res.status, `GET ${path}`).toBe(200);
  return (await res.json()) as T;
}

/** Poll `/ended/:id` until the request's cache has ended (bounded). */
async function endOf(base: string, id: string): Promise<EndRecord> {
  for (let i = 0; i < 200; i++) {
    const record = await getJson<EndRecord | null>(base, `/ended/${id}`);
    if (record !== null) return record;
    await sleep(10);
  }
  throw new Error(`the cache of request ${id} never ended`);
}

/** Poll `/background-done/:id` until request `id`'s background task has finished (bounded). */
async function backgroundDone(base: string, id: string): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (await getJson<boolean>(base, `/background-done/${id}`)) return true;
    await sleep(20);
  }
  return false;
}

/**
 * The runtime's suite: one test per conformance case, then the Hono app checked over
 * HTTP. `start` launches the runtime; if it throws, every test fails with its message.
 */
export function runtimeSuite(
  name: string,
  start: () => Promise<RunningRuntime>,
  {
    app = true,
    nodeServer = false,
    remadeBodyKept = true,
  }: {
    app?: boolean;
    /** Hono on `@hono/node-server`: every cache ends when the Node response has been sent. */
    nodeServer?: boolean;
    /**
     * Whether `new Response(res.body, res)` keeps `res.body` (Deno makes a new stream for
     * a body it made itself): a response Hono remade over a complete body is then still
     * known to be complete.
     */
    remadeBodyKept?: boolean;
  } = {},
): void {
  describe(name, () => {
    let running: RunningRuntime | undefined;
    let failure: unknown;

    beforeAll(async () => {
      try {
        running = await start();
      } catch (err) {
        failure = err;
      }
    }, 120_000);

    afterAll(async () => {
      await running?.stop();
    });

    const up = (): RunningRuntime => {
      if (running === undefined) {
        throw new Error(
          `${name} could not run here, so nothing was tested on it: ${failure instanceof Error ? failure.message : String(failure)}`,
        );
      }
      return running;
    };

    for (const name of conformanceCases) {
      it(name, () => {
        const result = up().report[name];
        expect(result, 'the runtime reported no result for this case').toBeDefined();
        if (!result!.ok) throw new Error(`${up().version}: ${result!.error}`);
      });
    }

    if (!app) return;

    it('Hono app on 127.0.0.1: 100 interleaved requests each read only their own values, one load per key, the cache ended after the response', async () => {
      const { base } = up();
      const ids = Array.from({ length: 100 }, (_, i) => String(i + 1));
      const pages = await Promise.all(
        ids.map(async (id) => {
          const res = await fetch(`${base}/r/page/${id}`, { signal: AbortSignal.timeout(20_000) });
          expect(res.status).toBe(200);
          const timing = res.headers.get('server-timing');
          const body = (await res.json()) as {
            id: string;
            reads: string[];
            loads: Record<string, number>;
            open: boolean;
          };
          return { id, body, timing };
        }),
      );
      for (const { id, body, timing } of pages) {
        expect(body.id).toBe(id);
        expect(body.open).toBe(true);
        expect(body.reads.filter((value) => !value.startsWith(`${id}:`))).toEqual([]);
        expect(body.reads).toHaveLength(9);
        expect(body.loads).toEqual({ user: 1, repo: 1, settings: 1 });
        expect(timing).toMatch(
          /^context-cache;desc="hits=\d+ joins=\d+ misses=3 loads=3 batches=0"$/,
        );
      }
      for (const id of ids) {
        const end = await endOf(base, id);
        expect(end.calls).toBe(1);
        expect(end.closed).toBe(true);
        // The request's signal aborted because the response finished, not a disconnect.
        expect(end.reason).toBe('context-cache: the response finished');
        expect(end.stats.loads).toBe(3);
        expect(end.stats.hits + end.stats.joins + end.stats.misses).toBe(9);
      }
    });

    it('a streamed body keeps its cache until the runtime has read it all, then the cache ends', async () => {
      const { base } = up();
      const res = await fetch(`${base}/r/stream/s1`, { signal: AbortSignal.timeout(10_000) });
      const lines = (await res.text())
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line));
      expect(lines).toEqual([
        { value: 's1:user', open: true },
        { value: 's1:user', open: true },
        { value: 's1:user', open: true },
      ]);
      const end = await endOf(base, 's1');
      expect(end.chunks).toBe(3);
      expect(end.stats).toMatchObject({ hits: 3, misses: 1, loads: 1 });
      expect(end.reason).toBeUndefined();
    });

    it('a client that goes away mid-body ends the cache and aborts the request signal', async () => {
      const { base } = up();
      const controller = new AbortController();
      const res = await fetch(`${base}/r/hang/h1`, { signal: controller.signal });
      const reader = res.body!.getReader();
      const first = await reader.read();
      expect(new TextDecoder().decode(first.value)).toMatch(/^first chunk\n/);
      controller.abort();
      await reader.cancel().catch(() => {});
      const end = await endOf(base, 'h1');
      // Ended once, however many ways the runtime reports the disconnect.
      await sleep(100);
      expect((await endOf(base, 'h1')).calls).toBe(1);
      expect(end.chunks).toBe(1);
      expect(end.reason).toMatch(/client closed the connection/);
    });

    it(
      nodeServer
        ? 'every response ends its cache once the Node response has been sent'
        : "a response made with Hono's helpers from a complete body ends its cache when the handlers return; a body made by hand or streamed, once the runtime has read it",
      async () => {
        const { base } = up();
        const cases: [path: string, id: string, onReturn: boolean][] = [
          ['page', 'e1', !nodeServer],
          ['reheadered', 'e2', !nodeServer && remadeBodyKept],
          ['by-hand', 'e3', false],
          ['stream', 'e4', false],
        ];
        for (const [path, id, onReturn] of cases) {
          const res = await fetch(`${base}/r/${path}/${id}`, {
            signal: AbortSignal.timeout(10_000),
          });
          expect(res.status, path).toBe(200);
          expect(res.headers.get('x-ended-on-return'), path).toBe(String(onReturn));
          const body = await res.text();
          expect(body, path).toContain(`${id}:user`);
          if (path === 'reheadered')
            expect(res.headers.get('x-inner')).toBe('set after the handler');
          const end = await endOf(base, id);
          expect(end.calls, path).toBe(1);
          expect(end.closed, path).toBe(true);
          if (path !== 'stream')
            expect(end.reason, path).toBe('context-cache: the response finished');
        }
      },
    );

    it('a streamed body with a Content-Length keeps it, and ends its request at its last byte', async () => {
      const { base } = up();
      const res = await fetch(`${base}/r/sized/z1`, { signal: AbortSignal.timeout(10_000) });
      expect(res.headers.get('content-length')).toBe('12');
      expect(await res.text()).toBe('row 1\nrow 2\n');
      const end = await endOf(base, 'z1');
      expect(end.calls).toBe(1);
      expect(end.chunks).toBe(2);
      expect(end.reason).toBe('context-cache: the response finished');
    });

    it('a streamed body its handler compressed (Content-Encoding: gzip, encodeBody "manual") is sent as it is, with or without a Content-Length', async () => {
      const { base } = up();
      for (const [id, query] of [
        ['c1', ''],
        ['c2', '?sized'],
      ] as const) {
        const res = await fetch(`${base}/r/precompressed/${id}${query}`, {
          signal: AbortSignal.timeout(10_000),
        });
        expect(res.status, query).toBe(203);
        expect(res.headers.get('x-handler'), query).toBe('kept');
        expect(res.headers.get('content-encoding'), query).toBe('gzip');
        // The body went through the adapter, which waited for the runtime to read it.
        expect(res.headers.get('x-ended-on-return'), query).toBe('false');
        // fetch undoes one gzip: a body compressed a second time would come out as gzip.
        expect(await res.text(), query).toBe(PRECOMPRESSED_TEXT);
        if (query !== '')
          expect(res.headers.get('content-length')).toBe(String(PRECOMPRESSED_GZIP.length));
        const end = await endOf(base, id);
        expect(end.calls, query).toBe(1);
        expect(end.closed, query).toBe(true);
      }
    });

    it('background work started from onEnd of a streamed response finishes after it', async () => {
      const { base } = up();
      const res = await fetch(`${base}/r/background-on-end/o1`, {
        signal: AbortSignal.timeout(10_000),
      });
      expect(await res.text()).toBe('streamed');
      expect(await backgroundDone(base, 'o1')).toBe(true);
    });

    it('background work started by a request finishes after the response', async () => {
      const { base } = up();
      const res = await fetch(`${base}/r/background/b1`, { signal: AbortSignal.timeout(10_000) });
      expect(await res.text()).toBe('started');
      expect(await backgroundDone(base, 'b1')).toBe(true);
    });
  });
}
