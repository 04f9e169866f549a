/**
 * The Hono app every runtime serves for the runtime tests, written without anything of
 * the runtime's own. It records what the test driver checks from outside: the loads of
 * each request, when each request's cache ended (and how much of its body had been
 * produced by then), and which background tasks finished.
 */

import { Hono } from 'hono';
import type * as HonoAdapter from '../../src/adapters/hono/index.js';
import type { Lib } from './conformance.js';

export type Adapter = typeof HonoAdapter;

/** What `/ended/:id` answers once a request's cache has ended. */
export interface EndRecord {
  readonly stats: { hits: number; joins: number; misses: number; loads: number };
  /** Body chunks the request had produced when its cache ended. */
  readonly chunks: number;
  /** The request's signal's reason, if it aborted before the cache ended. */
  readonly reason: string | undefined;
  /** Whether `getContextCache()` answered `undefined` right after the end. */
  readonly closed: boolean;
  /** How many times `onEnd` ran for this request (must be once). */
  readonly calls: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** What `/r/precompressed/:id` answers once its client has undone the gzip. */
export const PRECOMPRESSED_TEXT = 'a body compressed by its handler\n'.repeat(8);

/** `PRECOMPRESSED_TEXT` gzipped beforehand, so every runtime sends the same bytes. */
export const PRECOMPRESSED_GZIP = Uint8Array.from(
  atob('H4sIAAAAAAACA0tUSMpPqVRIzs8tKEotLk5NUUiqVMgsKVbISMxLyUkt4kocGQoAbhAxAggBAAA='),
  (char) => char.charCodeAt(0),
);

export function makeApp(lib: Lib, adapter: Adapter): Hono {
  const loads = new Map<string, Record<string, number>>();
  const chunks = new Map<string, number>();
  const reasons = new Map<string, string>();
  const ended = new Map<string, EndRecord>();
  const background = new Set<string>();
  const encoder = new TextEncoder();

  const getValue = (id: string, key: string) =>
    lib.getWithContextCache('value', key, async () => {
      const counts = loads.get(id) ?? {};
      counts[key] = (counts[key] ?? 0) + 1;
      loads.set(id, counts);
      await sleep((id.length + key.length) % 4);
      return `${id}:${key}`;
    });

  /** Record the reason of request `id`'s signal when it aborts. */
  const watchReason = (id: string) => {
    const signal = lib.currentSignal();
    signal?.addEventListener('abort', () => {
      reasons.set(id, String((signal.reason as Error | undefined)?.message ?? signal.reason));
    });
  };

  const app = new Hono();
  // Mounted before the adapter: whether the request's cache had ended by the time the
  // adapter returned (a complete body, on the runtimes' own servers) or not (a body the
  // runtime has yet to read, or a Node response that has yet to be sent).
  app.use('/r/*', async (c, next) => {
    await next();
    const id = c.req.path.split('/').pop() ?? '';
    c.header('x-ended-on-return', String(ended.has(id)));
  });
  app.use(
    '/r/*',
    adapter.contextCache({
      serverTiming: true,
      onEnd(stats, c) {
        const id = c.req.path.split('/').pop() ?? '';
        // Work started from onEnd, which runs in the request's context whatever its body
        // (on Workers: handed to the request's waitUntil).
        if (c.req.path.startsWith('/r/background-on-end/')) {
          lib.runInBackground(
            async () => {
              await sleep(150);
              background.add(id);
            },
            { name: `background from onEnd ${id}` },
          );
        }
        ended.set(id, {
          calls: (ended.get(id)?.calls ?? 0) + 1,
          stats,
          chunks: chunks.get(id) ?? 0,
          reason: reasons.get(id),
          closed: lib.getContextCache() === undefined,
        });
      },
    }),
  );

  // Nine lookups of three keys, interleaved with other requests' awaits.
  app.get('/r/page/:id', async (c) => {
    const id = c.req.param('id');
    const signal = lib.currentSignal();
    signal?.addEventListener('abort', () => {
      reasons.set(id, String((signal.reason as Error | undefined)?.message ?? signal.reason));
    });
    const keys = ['user', 'repo', 'settings'];
    const reads = await Promise.all(
      Array.from({ length: 9 }, async (_, i) => {
        await sleep((Number(id) * 7 + i) % 5);
        return getValue(id, keys[i % 3]!);
      }),
    );
    return c.json({ id, reads, loads: loads.get(id), open: lib.getContextCache() !== undefined });
  });

  // A body produced after the handler returned, with a cache lookup before each chunk.
  app.get('/r/stream/:id', async (c) => {
    const id = c.req.param('id');
    await getValue(id, 'user');
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        for (let i = 0; i < 3; i++) {
          await sleep(5);
          const value = await getValue(id, 'user');
          const open = lib.getContextCache() !== undefined;
          chunks.set(id, i + 1);
          controller.enqueue(encoder.encode(`${JSON.stringify({ value, open })}\n`));
        }
        controller.close();
      },
    });
    return c.body(body, 200, { 'content-type': 'application/x-ndjson' });
  });

  // One chunk, then a heartbeat every 50 ms (as a server-sent-events stream would) until
  // the client goes away. A runtime that learns of a disconnect only when it writes (workerd)
  // learns of it at the next heartbeat.
  app.get('/r/hang/:id', (c) => {
    const id = c.req.param('id');
    const signal = lib.currentSignal();
    signal?.addEventListener('abort', () => {
      reasons.set(id, String((signal.reason as Error | undefined)?.message ?? signal.reason));
    });
    let timer: ReturnType<typeof setInterval> | undefined;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        chunks.set(id, 1);
        controller.enqueue(encoder.encode('first chunk\n'));
        let beats = 0;
        // Bounded: the stream ends by itself if the client never goes away.
        timer = setInterval(() => {
          if (++beats > 200) {
            clearInterval(timer);
            controller.close();
          } else {
            controller.enqueue(encoder.encode('\n'));
          }
        }, 50);
      },
      cancel() {
        clearInterval(timer);
      },
    });
    return c.body(body);
  });

  // The same JSON as a response made by hand: the adapter cannot tell that its body is
  // complete, and waits until the runtime has read it.
  app.get('/r/by-hand/:id', async (c) => {
    const id = c.req.param('id');
    watchReason(id);
    const value = await getValue(id, 'user');
    return new Response(JSON.stringify({ value }), {
      headers: { 'content-type': 'application/json' },
    });
  });

  // `c.json` with a header set after the handler returned: Hono makes a new response
  // over the same body, which is still complete.
  app.get(
    '/r/reheadered/:id',
    async (c, next) => {
      await next();
      c.header('x-inner', 'set after the handler');
    },
    async (c) => {
      const id = c.req.param('id');
      watchReason(id);
      return c.json({ value: await getValue(id, 'user') });
    },
  );

  // A streamed body with the Content-Length its handler set: the runtime sends that
  // length (not chunked), and the request ends at its last byte as "the response
  // finished" (Deno completes such a response without reading the stream's end).
  app.get('/r/sized/:id', async (c) => {
    const id = c.req.param('id');
    watchReason(id);
    await getValue(id, 'user');
    const rows = ['row 1\n', 'row 2\n'];
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const row = rows.shift();
        if (row === undefined) {
          controller.close();
          return;
        }
        await getValue(id, 'user');
        chunks.set(id, 2 - rows.length);
        controller.enqueue(encoder.encode(row));
      },
    });
    return new Response(body, { headers: { 'content-length': '12' } });
  });

  // A body its handler compressed already, streamed in two chunks after the handler has
  // returned (with `?sized`, with its Content-Length too). `encodeBody: 'manual'` tells
  // Workers to send the bytes as they are: without it, a Content-Encoding makes Workers
  // compress the body itself. Other runtimes send a body that has a Content-Encoding as
  // it is, and ignore the key.
  app.get('/r/precompressed/:id', async (c) => {
    const id = c.req.param('id');
    watchReason(id);
    await getValue(id, 'user');
    const bytes = PRECOMPRESSED_GZIP;
    const half = bytes.length >> 1;
    const parts = [bytes.subarray(0, half), bytes.subarray(half)];
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const part = parts.shift();
        if (part === undefined) {
          controller.close();
          return;
        }
        await getValue(id, 'user');
        controller.enqueue(part.slice());
      },
    });
    const headers = new Headers({
      'content-type': 'text/plain',
      'content-encoding': 'gzip',
      'x-handler': 'kept',
    });
    if (c.req.query('sized') !== undefined) headers.set('content-length', String(bytes.length));
    return new Response(body, {
      status: 203,
      headers,
      encodeBody: 'manual',
    } as ResponseInit);
  });

  // onEnd of a streamed response starts background work (see the adapter's onEnd).
  app.get('/r/background-on-end/:id', (c) => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode('streamed'));
        controller.close();
      },
    });
    return c.body(body);
  });

  // Work that outlives the response.
  app.get('/r/background/:id', (c) => {
    const id = c.req.param('id');
    lib.runInBackground(
      async () => {
        await sleep(150);
        background.add(id);
      },
      { name: `background ${id}` },
    );
    return c.text('started');
  });

  app.get('/ended/:id', (c) => c.json(ended.get(c.req.param('id')) ?? null));
  app.get('/background-done/:id', (c) => c.json(background.has(c.req.param('id'))));
  return app;
}
