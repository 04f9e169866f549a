/**
 * The behaviour every adapter must show, as one table run against each framework. A
 * driver turns a framework-neutral `AppSpec` into a real server on 127.0.0.1 (port 0);
 * every case then talks to it over real sockets.
 */

import dc from 'node:diagnostics_channel';
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type CacheStats,
  currentSignal,
  getContextCache,
  getContextData,
  getWithContextCache,
  setContextData,
  withCacheContext,
} from '../../src/index.js';

/** What a route sees of its request, whatever the framework. */
export interface RouteRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  /** The parsed JSON body of a POST, `undefined` otherwise. */
  readonly body: unknown;
}

/** What a route answers; `throw` to fail the request. */
export interface RouteReply {
  status?: number;
  json?: unknown;
  stream?: Readable;
  headers?: Record<string, string>;
}

export type Route = (req: RouteRequest) => Promise<RouteReply>;

/** A framework-neutral app. Drivers mount the parts in this order. */
export interface AppSpec {
  /** The adapter's options, passed as they are (possibly invalid on purpose). */
  options?: unknown;
  /** Code mounted before the adapter. */
  before?: () => void;
  /** Code mounted right after the adapter, before the body is parsed. */
  early?: (req: Pick<RouteRequest, 'method' | 'path' | 'query'>) => Promise<void>;
  /** Code after body parsing (Fastify: a `preHandler` hook), before the route. */
  middleware?: (req: RouteRequest) => Promise<void>;
  /** Path → handler, for GET and POST. */
  routes: Record<string, Route>;
}

export interface RunningApp {
  readonly port: number;
  close(): Promise<void>;
}

export interface Driver {
  readonly name: string;
  start(spec: AppSpec): Promise<RunningApp>;
  /** The path of the framework's own request object handed to `onEnd`. */
  pathOf(req: unknown): string;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Wait for `promise`, failing the test (rather than hanging) after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  reusedSocket: boolean;
}

interface RequestOptions {
  method?: string;
  json?: unknown;
  agent?: Agent;
  /**
   * Send the headers first and the body this many ms later, so the server parses the
   * body from a later packet, in the socket's async context rather than the request's.
   */
  bodyDelay?: number;
}

function send(port: number, path: string, options: RequestOptions = {}): Promise<Response> {
  const payload = options.json === undefined ? undefined : JSON.stringify(options.json);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: options.method ?? (payload === undefined ? 'GET' : 'POST'),
        agent: options.agent ?? false,
        headers:
          payload === undefined
            ? {}
            : {
                'content-type': 'application/json',
                'content-length': String(Buffer.byteLength(payload)),
              },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            reusedSocket: req.reusedSocket,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (options.bodyDelay === undefined || payload === undefined) {
      req.end(payload);
    } else {
      req.flushHeaders();
      setTimeout(() => req.end(payload), options.bodyDelay);
    }
  });
}

/** Open a request and hand it to `act` once `ready` resolves; settles when the socket is gone. */
function sendAndAbandon(
  port: number,
  path: string,
  ready: Promise<unknown>,
  onFirstChunk = false,
  json?: unknown,
): Promise<void> {
  const payload = json === undefined ? undefined : JSON.stringify(json);
  return new Promise((resolve) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        agent: false,
        method: payload === undefined ? 'GET' : 'POST',
        headers:
          payload === undefined
            ? {}
            : {
                'content-type': 'application/json',
                'content-length': String(Buffer.byteLength(payload)),
              },
      },
      (res) => {
        if (onFirstChunk) res.once('data', () => req.destroy());
      },
    );
    req.on('error', () => {});
    req.on('close', () => resolve());
    req.end(payload);
    if (!onFirstChunk) void ready.then(() => req.destroy());
  });
}

interface User {
  id: number;
  name: string;
}

/** A getter as an application would write it, counting its loads. */
function userGetter() {
  let loads = 0;
  const getUser = (id: number) =>
    getWithContextCache('user', id, async (key): Promise<User> => {
      loads++;
      await sleep(1);
      return { id: key, name: `user ${key}` };
    });
  return {
    getUser,
    get loads() {
      return loads;
    },
  };
}

interface EndRecord {
  stats: CacheStats;
  path: string;
}

/** Collects `onEnd` calls; `next()` resolves on the next one. */
function endRecorder(driver: Driver) {
  const calls: EndRecord[] = [];
  let waiting: Deferred<EndRecord> | undefined;
  return {
    calls,
    onEnd(stats: CacheStats, req: unknown): void {
      const record = { stats, path: driver.pathOf(req) };
      calls.push(record);
      waiting?.resolve(record);
      waiting = undefined;
    },
    next(): Promise<EndRecord> {
      waiting = deferred<EndRecord>();
      return waiting.promise;
    },
  };
}

type WarningRecord = [message: string, code: string | undefined];

/** Record `process.emitWarning` calls (restored after each test). */
function recordWarnings(): WarningRecord[] {
  const original = process.emitWarning;
  const seen: WarningRecord[] = [];
  process.emitWarning = ((warning: string | Error, options?: unknown, code?: unknown) => {
    const message = typeof warning === 'string' ? warning : warning.message;
    const c =
      typeof options === 'object' && options !== null
        ? (options as { code?: string }).code
        : typeof code === 'string'
          ? code
          : undefined;
    seen.push([message, c]);
  }) as typeof process.emitWarning;
  restorers.push(() => {
    process.emitWarning = original;
  });
  return seen;
}

function recordUnhandled(): unknown[] {
  const seen: unknown[] = [];
  const listener = (reason: unknown) => {
    seen.push(reason);
  };
  process.on('unhandledRejection', listener);
  restorers.push(() => {
    process.off('unhandledRejection', listener);
  });
  return seen;
}

const restorers: (() => void | Promise<void>)[] = [];

/** Run the whole table against `driver`. */
export function adapterTable(driver: Driver): void {
  describe(driver.name, () => {
    afterEach(async () => {
      for (const restore of restorers.splice(0).reverse()) await restore();
    });

    async function start(spec: AppSpec): Promise<RunningApp> {
      const app = await driver.start(spec);
      restorers.push(() => app.close());
      return app;
    }

    it('loads once for three unrelated code paths in a request, and again in the next request', async () => {
      const users = userGetter();
      const ends = endRecorder(driver);
      const renderName = async (id: number) => `<b>${(await users.getUser(id)).name}</b>`; // template helper
      const app = await start({
        options: { onEnd: ends.onEnd },
        middleware: async () => {
          await users.getUser(1);
        },
        routes: {
          '/page': async () => {
            const owner = await users.getUser(1); // service
            return { json: { owner: owner.name, html: await renderName(1) } };
          },
        },
      });
      const first = await send(app.port, '/page');
      expect(first.status).toBe(200);
      expect(JSON.parse(first.body)).toEqual({ owner: 'user 1', html: '<b>user 1</b>' });
      expect(users.loads).toBe(1);
      await send(app.port, '/page');
      expect(users.loads).toBe(2);
      await within(
        (async () => {
          while (ends.calls.length < 2) await sleep(2);
        })(),
        2000,
        'onEnd',
      );
      expect(ends.calls.map((c) => [c.path, c.stats.loads, c.stats.hits + c.stats.joins])).toEqual([
        ['/page', 1, 2],
        ['/page', 1, 2],
      ]);
    });

    it('keeps 1,000 concurrent requests with random delays apart', async () => {
      const app = await start({
        early: async (req) => {
          const id = req.query.get('id');
          setContextData('iso', 'id', id);
          await sleep(Math.floor(Math.random() * 4));
          await getWithContextCache('iso', 'me', async () => {
            await sleep(Math.floor(Math.random() * 4));
            return id;
          });
        },
        routes: {
          '/iso': async (req) => {
            await sleep(Math.floor(Math.random() * 4));
            const me = await getWithContextCache('iso', 'me', async () => 'loaded again');
            return { json: { me, data: getContextData('iso', 'id'), query: req.query.get('id') } };
          },
        },
      });
      const agent = new Agent({ keepAlive: true, maxSockets: 32 });
      restorers.push(() => agent.destroy());
      const ids = Array.from({ length: 1000 }, (_, i) => String(i));
      const replies = await Promise.all(
        ids.map((id) => send(app.port, `/iso?id=${id}`, { agent })),
      );
      const wrong = replies.filter((r, i) => {
        const body = JSON.parse(r.body) as Record<string, string>;
        return body.me !== ids[i] || body.data !== ids[i] || body.query !== ids[i];
      });
      expect(wrong).toEqual([]);
    });

    it('sees the cache in the handler of a POST with a JSON body', async () => {
      const users = userGetter();
      const app = await start({
        middleware: async (req) => {
          await users.getUser((req.body as { id: number }).id);
        },
        routes: {
          '/users': async (req) => {
            const user = await users.getUser((req.body as { id: number }).id);
            return { json: { user, cached: getContextCache() !== undefined } };
          },
        },
      });
      const reply = await send(app.port, '/users', { json: { id: 7 }, bodyDelay: 20 });
      expect(JSON.parse(reply.body)).toEqual({ user: { id: 7, name: 'user 7' }, cached: true });
      expect(users.loads).toBe(1);
    });

    it('keeps two interleaved POST requests apart across body parsing', async () => {
      const latches = { a: deferred(), b: deferred() };
      const app = await start({
        early: async (req) => {
          const name = req.query.get('name');
          setContextData('race', 'who', name);
          await getWithContextCache('race', 'k', async () => `value of ${name}`);
        },
        routes: {
          '/race': async (req) => {
            const name = (req.body as { name: 'a' | 'b' }).name;
            latches[name].resolve();
            await within(latches[name === 'a' ? 'b' : 'a'].promise, 5000, 'the other request');
            const value = await getWithContextCache('race', 'k', async () => 'loaded again');
            return { json: { who: getContextData('race', 'who'), value } };
          },
        },
      });
      const [a, b] = await Promise.all([
        send(app.port, '/race?name=a', { json: { name: 'a' }, bodyDelay: 20 }),
        send(app.port, '/race?name=b', { json: { name: 'b' }, bodyDelay: 10 }),
      ]);
      expect(JSON.parse(a.body)).toEqual({ who: 'a', value: 'value of a' });
      expect(JSON.parse(b.body)).toEqual({ who: 'b', value: 'value of b' });
    });

    it('aborts the loader signal when the client disconnects, and calls onEnd once', async () => {
      const ends = endRecorder(driver);
      const started = deferred();
      const reason = deferred<unknown>();
      const ended = ends.next();
      const app = await start({
        options: { onEnd: ends.onEnd },
        routes: {
          '/slow': async () => {
            const value = await getWithContextCache('slow', 1, (_key, { signal }) => {
              started.resolve();
              return new Promise<string>((resolve) => {
                const timer = setTimeout(() => resolve('not aborted'), 5000);
                signal?.addEventListener('abort', () => {
                  clearTimeout(timer);
                  reason.resolve(signal.reason);
                  resolve('aborted');
                });
              });
            });
            return { json: { value } };
          },
        },
      });
      await sendAndAbandon(app.port, '/slow', started.promise);
      const why = await within(reason.promise, 3000, 'the abort');
      expect(why).toBeInstanceOf(Error);
      expect((why as Error).message).toMatch(/client closed the connection/);
      expect((await within(ended, 3000, 'onEnd')).path).toBe('/slow');
      await sleep(50);
      expect(ends.calls).toHaveLength(1);
    });

    it('lets a leftover timer pass through after the response, with one CONTEXT_CACHE_ENDED warning', async () => {
      const users = userGetter();
      const ends = endRecorder(driver);
      const ended = ends.next();
      const leftover = deferred<{ names: string[]; cache: boolean; aborted: unknown }>();
      const warnings = recordWarnings();
      const app = await start({
        options: { onEnd: ends.onEnd },
        routes: {
          '/leftover': async () => {
            await users.getUser(3);
            setTimeout(async () => {
              await ended;
              const a = await users.getUser(3);
              const b = await users.getUser(3);
              leftover.resolve({
                names: [a.name, b.name],
                cache: getContextCache() !== undefined,
                aborted: (currentSignal()?.reason as Error | undefined)?.message,
              });
            }, 1);
            return { json: { ok: true } };
          },
        },
      });
      expect((await send(app.port, '/leftover')).status).toBe(200);
      const seen = await within(leftover.promise, 3000, 'the leftover timer');
      expect(seen.names).toEqual(['user 3', 'user 3']);
      expect(seen.cache).toBe(false);
      expect(seen.aborted).toMatch(/response finished/);
      expect(users.loads).toBe(3);
      const endedWarnings = warnings.filter(([, code]) => code === 'CONTEXT_CACHE_ENDED');
      expect(endedWarnings).toHaveLength(1);
      // Work left over after the response: the advice is detach() / runInBackground().
      expect(endedWarnings[0]?.[0]).toMatch(/this code outlives the response.*detach\(\)/);
    });

    // Without onEnd or a context-cache:end subscriber, nothing waits for the request's end:
    // the adapters on a Node response watch for it only from the cache's first use.
    it('ends the cache at the response also when nothing asks for the end, whenever it is first used', async () => {
      const users = userGetter();
      const warnings = recordWarnings();
      const closed = deferred();
      const seen: {
        path: string;
        before: boolean;
        names: string[];
        cache: boolean;
        aborted: unknown;
      }[] = [];
      const done = deferred();
      const leftover = (path: string) =>
        setTimeout(async () => {
          await closed.promise;
          // Asked before any lookup: the response has closed, so there is no cache.
          const before = getContextCache() !== undefined;
          const a = await users.getUser(4);
          const b = await users.getUser(4);
          seen.push({
            path,
            before,
            names: [a.name, b.name],
            cache: getContextCache() !== undefined,
            aborted: (currentSignal()?.reason as Error | undefined)?.message,
          });
          if (seen.length === 2) done.resolve();
        }, 1);
      const app = await start({
        routes: {
          // First used by the timer, after the response has closed.
          '/untouched': async () => {
            leftover('/untouched');
            return { json: { ok: true } };
          },
          // First used by the handler, while the response is open.
          '/used': async () => {
            await users.getUser(4);
            leftover('/used');
            return { json: { ok: true } };
          },
        },
      });
      expect((await send(app.port, '/untouched')).status).toBe(200);
      expect((await send(app.port, '/used')).status).toBe(200);
      // 'close' follows 'finish' on the server by a tick or so.
      await sleep(30);
      closed.resolve();
      await within(done.promise, 3000, 'the leftover timers');
      seen.sort((x, y) => x.path.localeCompare(y.path));
      for (const [i, path] of ['/untouched', '/used'].entries()) {
        expect(seen[i]).toEqual({
          path,
          before: false,
          names: ['user 4', 'user 4'],
          cache: false,
          aborted: expect.stringMatching(/response finished/),
        });
      }
      // /used loaded once in its handler; each timer loaded twice, nothing cached.
      expect(users.loads).toBe(5);
      expect(warnings.filter(([, code]) => code === 'CONTEXT_CACHE_ENDED')).toHaveLength(2);
    });

    it('gives code that first uses the cache after the client left an aborted signal and no caching', async () => {
      const warnings = recordWarnings();
      const started = deferred();
      const gone = deferred();
      const result = deferred<{ loads: number; reasons: unknown[] }>();
      const reasons: unknown[] = [];
      let loads = 0;
      const load = () =>
        getWithContextCache('gone', 1, async (_key, { signal }) => {
          loads++;
          reasons.push((signal?.reason as Error | undefined)?.message);
          return 'value';
        });
      const app = await start({
        routes: {
          '/gone': async () => {
            started.resolve();
            await gone.promise;
            await load();
            await load();
            result.resolve({ loads, reasons });
            return { json: { ok: true } };
          },
        },
      });
      await sendAndAbandon(app.port, '/gone', started.promise);
      await sleep(30);
      gone.resolve();
      const seen = await within(result.promise, 3000, 'the handler');
      expect(seen.loads).toBe(2);
      expect(seen.reasons).toEqual([
        expect.stringMatching(/client closed the connection/),
        expect.stringMatching(/client closed the connection/),
      ]);
      const endedWarnings = warnings.filter(([, code]) => code === 'CONTEXT_CACHE_ENDED');
      expect(endedWarnings).toHaveLength(1);
      // Not leftover work but a request whose client left: the advice is its signal.
      expect(endedWarnings[0]?.[0]).toMatch(
        /^getWithContextCache\(\) ran after its request's client had closed the connection.*currentSignal\(\).*detach\(\)/,
      );
    });

    it('publishes one context-cache:end per request, also for requests that never use their cache', async () => {
      const messages: { stats: CacheStats }[] = [];
      const onMessage = (message: unknown) => {
        messages.push(message as { stats: CacheStats });
      };
      dc.subscribe('context-cache:end', onMessage);
      restorers.push(() => {
        dc.unsubscribe('context-cache:end', onMessage);
      });
      const app = await start({
        routes: {
          '/plain': async () => ({ json: { ok: true } }),
          '/cached': async () => ({
            json: { value: await getWithContextCache('plain', 1, async () => 'v') },
          }),
        },
      });
      for (const path of ['/plain', '/cached', '/plain']) {
        expect((await send(app.port, path)).status).toBe(200);
      }
      await expect.poll(() => messages.length).toBe(3);
      await sleep(30);
      expect(messages.map((m) => m.stats.loads).sort()).toEqual([0, 0, 1]);
    });

    it('keeps the cache for a streaming response until its last chunk', async () => {
      const users = userGetter();
      const ends = endRecorder(driver);
      const ended = ends.next();
      const events: string[] = [];
      const app = await start({
        options: { onEnd: ends.onEnd },
        routes: {
          '/stream': async () => {
            const out = new PassThrough();
            void (async () => {
              for (let i = 0; i < 3; i++) {
                const user = await users.getUser(5);
                const state = getContextCache() === undefined ? 'ended' : 'open';
                events.push(`chunk ${i} ${state}`);
                out.write(`${i}:${user.name}:${state}\n`);
                await sleep(15);
              }
              out.end();
            })();
            return { stream: out, headers: { 'content-type': 'text/plain' } };
          },
        },
      });
      const reply = await send(app.port, '/stream');
      expect(reply.body).toBe('0:user 5:open\n1:user 5:open\n2:user 5:open\n');
      const end = await within(ended, 3000, 'onEnd');
      events.push('end');
      expect(events).toEqual(['chunk 0 open', 'chunk 1 open', 'chunk 2 open', 'end']);
      expect(users.loads).toBe(1);
      expect(end.stats).toMatchObject({ loads: 1, misses: 1, hits: 2 });
    });

    it('ends the cache once when the client leaves in the middle of a stream', async () => {
      const ends = endRecorder(driver);
      const ended = ends.next();
      const stopped = deferred<unknown>();
      const app = await start({
        options: { onEnd: ends.onEnd },
        routes: {
          '/endless': async () => {
            const out = new PassThrough();
            out.on('error', () => {});
            const signal = currentSignal();
            void (async () => {
              for (let i = 0; i < 200 && !signal?.aborted && !out.destroyed; i++) {
                out.write(`chunk ${i}\n`);
                await sleep(10);
              }
              stopped.resolve(signal?.reason);
              out.end();
            })();
            return { stream: out, headers: { 'content-type': 'text/plain' } };
          },
        },
      });
      await sendAndAbandon(app.port, '/endless', Promise.resolve(), true);
      await within(ended, 3000, 'onEnd');
      const reason = await within(stopped.promise, 3000, 'the producer to stop');
      expect((reason as Error).message).toMatch(/client closed the connection/);
      await sleep(50);
      expect(ends.calls).toHaveLength(1);
    });

    it('ends the cache once when the client leaves in the middle of a stream answering a POST', async () => {
      // The request body has been read in full here, so only the response's own end can
      // tell that the client went away.
      const ends = endRecorder(driver);
      const ended = ends.next();
      const stopped = deferred<unknown>();
      const app = await start({
        options: { onEnd: ends.onEnd },
        routes: {
          '/upload': async (req) => {
            const out = new PassThrough();
            out.on('error', () => {});
            const signal = currentSignal();
            const got = JSON.stringify(req.body);
            void (async () => {
              for (let i = 0; i < 200 && !signal?.aborted && !out.destroyed; i++) {
                out.write(`${got} ${i}\n`);
                await sleep(10);
              }
              stopped.resolve(signal?.reason);
              out.end();
            })();
            return { stream: out, headers: { 'content-type': 'text/plain' } };
          },
        },
      });
      await sendAndAbandon(app.port, '/upload', Promise.resolve(), true, { rows: [1, 2, 3] });
      const end = await within(ended, 3000, 'onEnd');
      expect(end.path).toBe('/upload');
      const reason = await within(stopped.promise, 3000, 'the producer to stop');
      expect((reason as Error).message).toMatch(/client closed the connection/);
      await sleep(50);
      expect(ends.calls).toHaveLength(1);
    });

    it('shows no scope to code mounted before it, also on a reused keep-alive connection', async () => {
      const seenBefore: boolean[] = [];
      const app = await start({
        before: () => {
          seenBefore.push(getContextCache() === undefined && currentSignal() === undefined);
        },
        routes: {
          '/n': async () => {
            const loads = getContextCache()?.stats().loads;
            await getWithContextCache('n', 1, async () => 1);
            return { json: { loadsBefore: loads } };
          },
        },
      });
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      restorers.push(() => agent.destroy());
      const replies: Response[] = [];
      for (let i = 0; i < 3; i++) replies.push(await send(app.port, '/n', { agent }));
      expect(replies.map((r) => r.reusedSocket)).toEqual([false, true, true]);
      expect(replies.map((r) => JSON.parse(r.body))).toEqual([
        { loadsBefore: 0 },
        { loadsBefore: 0 },
        { loadsBefore: 0 },
      ]);
      expect(seenBefore).toEqual([true, true, true]);
    });

    it('appends a Server-Timing entry when serverTiming is on', async () => {
      const users = userGetter();
      const routes: Record<string, Route> = {
        '/timed': async () => {
          await users.getUser(1);
          await users.getUser(1);
          return { json: { ok: true } };
        },
        '/timed-db': async () => {
          await users.getUser(1);
          return { json: { ok: true }, headers: { 'server-timing': 'db;dur=12' } };
        },
      };
      const on = await start({ options: { serverTiming: true }, routes });
      const timed = await send(on.port, '/timed');
      expect(timed.headers['server-timing']).toBe(
        'context-cache;desc="hits=1 joins=0 misses=1 loads=1 batches=0"',
      );
      const withDb = await send(on.port, '/timed-db');
      expect(withDb.headers['server-timing']).toBe(
        'db;dur=12, context-cache;desc="hits=0 joins=0 misses=1 loads=1 batches=0"',
      );
      const off = await start({ options: { serverTiming: false }, routes });
      expect((await send(off.port, '/timed')).headers['server-timing']).toBeUndefined();
      const unset = await start({ routes });
      expect((await send(unset.port, '/timed')).headers['server-timing']).toBeUndefined();
      expect((await send(unset.port, '/timed-db')).headers['server-timing']).toBe('db;dur=12');
    });

    it('reports an onEnd that throws as a warning and leaves the response alone', async () => {
      const warnings = recordWarnings();
      const thrown = deferred();
      const app = await start({
        options: {
          onEnd: () => {
            thrown.resolve();
            throw new Error('logger is down');
          },
        },
        routes: { '/ok': async () => ({ json: { fine: true } }) },
      });
      const reply = await send(app.port, '/ok');
      expect(reply.status).toBe(200);
      expect(JSON.parse(reply.body)).toEqual({ fine: true });
      await within(thrown.promise, 3000, 'onEnd');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]?.[1]).toBe('CONTEXT_CACHE_ON_END_FAILED');
      expect(warnings[0]?.[0]).toMatch(/logger is down/);
    });

    it('reports an async onEnd that rejects as a warning, never an unhandled rejection', async () => {
      const warnings = recordWarnings();
      const unhandled = recordUnhandled();
      const rejected = deferred();
      const app = await start({
        options: {
          onEnd: async () => {
            await sleep(1);
            rejected.resolve();
            throw new Error('metrics backend down');
          },
        },
        routes: { '/ok': async () => ({ json: { fine: true } }) },
      });
      const reply = await send(app.port, '/ok');
      expect(reply.status).toBe(200);
      await within(rejected.promise, 3000, 'onEnd');
      await expect.poll(() => warnings.map((w) => w[1])).toEqual(['CONTEXT_CACHE_ON_END_FAILED']);
      expect(warnings[0]?.[0]).toMatch(/metrics backend down/);
      await sleep(20);
      expect(unhandled).toEqual([]);
    });

    it('gives every request its own cache when the server was started inside withCacheContext', async () => {
      const ends = endRecorder(driver);
      let loads = 0;
      // A bootstrap that caches while it starts the server: every connection starts in
      // that scope, whose cache must not become one cache for all requests.
      const app = await withCacheContext(async () => {
        await getWithContextCache('config', 'boot', async () => 'config');
        return start({
          options: { onEnd: ends.onEnd },
          routes: {
            '/me': async (req) => {
              const me = await getWithContextCache('session', 'me', async () => {
                loads++;
                return req.query.get('user');
              });
              return { json: { me } };
            },
          },
        });
      });
      const alice = await send(app.port, '/me?user=alice');
      const bob = await send(app.port, '/me?user=bob');
      expect(JSON.parse(alice.body)).toEqual({ me: 'alice' });
      expect(JSON.parse(bob.body)).toEqual({ me: 'bob' });
      expect(loads).toBe(2);
      await expect.poll(() => ends.calls.map((call) => call.path)).toEqual(['/me', '/me']);
    });

    it('ends a pipelined request whose connection closes while it waits its turn', async () => {
      const ends = endRecorder(driver);
      const later: Record<string, boolean> = {};
      const slowStarted = deferred();
      const work = async (path: string) => {
        await getWithContextCache('pipelined', path, async () => path);
        // Still in the request's scope after the client has gone.
        setTimeout(() => {
          later[path] = getContextCache() !== undefined;
        }, 300);
      };
      const app = await start({
        options: { onEnd: ends.onEnd },
        routes: {
          '/slow': async () => {
            await work('/slow');
            slowStarted.resolve();
            await sleep(200);
            return { json: { ok: true } };
          },
          '/fast': async () => {
            await work('/fast');
            return { json: { ok: true } };
          },
        },
      });
      // Two requests in one packet: the second one's response waits behind the first's,
      // and the client leaves before the first is answered.
      const socket = connect(app.port, '127.0.0.1');
      socket.on('error', () => {});
      socket.write(
        'GET /slow HTTP/1.1\r\nHost: test\r\n\r\nGET /fast HTTP/1.1\r\nHost: test\r\n\r\n',
      );
      await within(slowStarted.promise, 3000, 'the first request');
      await sleep(20);
      socket.destroy();
      await expect
        .poll(() => ends.calls.map((call) => call.path).sort(), { timeout: 3000 })
        .toEqual(['/fast', '/slow']);
      await expect.poll(() => later, { timeout: 3000 }).toEqual({ '/slow': false, '/fast': false });
      await sleep(50);
      expect(ends.calls).toHaveLength(2);
    });

    it('ends the scope once when a handler throws, with no unhandled rejection', async () => {
      const unhandled = recordUnhandled();
      const ends = endRecorder(driver);
      const signals: (AbortSignal | undefined)[] = [];
      const app = await start({
        options: { onEnd: ends.onEnd },
        routes: {
          '/throws': async () => {
            signals.push(currentSignal());
            throw new Error('boom');
          },
          '/rejects-later': async () => {
            signals.push(currentSignal());
            await getWithContextCache('broken', 1, async () => {
              await sleep(2);
              throw new Error('database down');
            });
            return { json: { unreachable: true } };
          },
        },
      });
      for (const path of ['/throws', '/rejects-later']) {
        const ended = ends.next();
        const reply = await send(app.port, path);
        expect(reply.status).toBe(500);
        expect((await within(ended, 3000, 'onEnd')).path).toBe(path);
      }
      await sleep(50);
      expect(ends.calls.map((c) => c.path)).toEqual(['/throws', '/rejects-later']);
      expect(ends.calls[1]?.stats).toMatchObject({ loads: 1, errors: 1 });
      expect(signals.map((s) => s?.aborted)).toEqual([true, true]);
      expect(unhandled).toEqual([]);
    });

    it('rejects invalid options with a TypeError that says what to pass', async () => {
      await expect(driver.start({ options: { onEnd: 'log' }, routes: {} })).rejects.toThrow(
        /options\.onEnd must be a function.*got a string \("log"\)/,
      );
      await expect(driver.start({ options: { lifetime: -1 }, routes: {} })).rejects.toThrow(
        TypeError,
      );
      await expect(driver.start({ options: { serverTiming: 'yes' }, routes: {} })).rejects.toThrow(
        /options\.serverTiming must be true or false/,
      );
    });
  });
}
