// A Nest app compiled by tsc as `nest new` sets it up (experimentalDecorators,
// emitDecoratorMetadata), served on 127.0.0.1 on the Express and the Fastify platform,
// with ContextCacheModule.forRoot() imported once in its root module.
import type { IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Options } from '../../src/adapters/nestjs/index.js';
import type { CacheStats, EphemeralCache } from '../../src/index.js';
import { noUnhandledRejections } from '../helpers/async.js';
import { type CompiledApp, compileNestApp } from './compile.js';

/** What the compiled app/http.ts exports (typed here: the app needs legacy decorators). */
interface HttpApp {
  startApp(
    platform: 'express' | 'fastify',
    options: Options | undefined,
  ): Promise<{
    app: { close(): Promise<void> };
    url: string;
    authors: { readonly instance: number; readonly loads: number[] };
  }>;
  seenCaches: EphemeralCache[];
  slowSignals: AbortSignal[];
  filterSawCache: boolean[];
}

noUnhandledRejections();

let compiled: CompiledApp | undefined;
let http: HttpApp;

beforeAll(async () => {
  compiled = compileNestApp(['test/nestjs/app/http.ts']);
  http = await compiled.load<HttpApp>('test/nestjs/app/http.ts');
}, 180_000);
afterAll(() => compiled?.remove());

interface AuthorResponse {
  author: { id: number; name: string };
  sameObject: boolean;
  stats: CacheStats;
  instance: number;
}

const SERVER_TIMING =
  /^context-cache;desc="hits=(\d+) joins=(\d+) misses=(\d+) loads=(\d+) batches=(\d+)"$/;

describe.each(['express', 'fastify'] as const)(
  'ContextCacheModule imported without forRoot() on %s',
  (platform) => {
    it('starts with the defaults and gives each request its cache', async () => {
      const started = await http.startApp(platform, undefined);
      try {
        const res = await fetch(`${started.url}/authors/3`);
        expect(res.status).toBe(200);
        const body = (await res.json()) as AuthorResponse;
        expect(body.stats).toMatchObject({ loads: 1, hits: 5 });
        expect(res.headers.get('server-timing')).toBeNull();
      } finally {
        await started.app.close();
      }
    });
  },
);

describe.each(['express', 'fastify'] as const)('ContextCacheModule on %s', (platform) => {
  const ended: { url: string | undefined; stats: CacheStats }[] = [];
  let started: Awaited<ReturnType<HttpApp['startApp']>>;

  beforeAll(async () => {
    started = await http.startApp(platform, {
      serverTiming: true,
      onEnd: (stats: CacheStats, req: IncomingMessage) => ended.push({ url: req.url, stats }),
    });
  });
  afterAll(() => started?.app.close());

  const get = (path: string) => fetch(`${started.url}${path}`);

  it('loads each id once per request while the service stays a singleton', async () => {
    const { authors } = started;
    const before = authors.loads.length;
    const bodies: AuthorResponse[] = [];
    for (const id of [3, 3, 4]) {
      const res = await get(`/authors/${id}`);
      expect(res.status).toBe(200);
      bodies.push((await res.json()) as AuthorResponse);
    }
    // The guard, the interceptor and the pipe read the getter once each, the handler
    // three times: one load, five hits, in every request.
    for (const [i, id] of [3, 3, 4].entries()) {
      expect(bodies[i]).toMatchObject({
        author: { id, name: `author ${id}` },
        sameObject: true,
        stats: { misses: 1, loads: 1, hits: 5, joins: 0 },
      });
    }
    // One instance, made at startup, served all three requests.
    expect(new Set(bodies.map((body) => body.instance))).toEqual(new Set([authors.instance]));
    // A new request is a new cache: id 3 loads again in the second request.
    expect(authors.loads.slice(before)).toEqual([3, 3, 4]);
  });

  it('adds the Server-Timing entry with the counts of the request', async () => {
    const res = await get('/authors/5');
    await res.body?.cancel();
    expect(res.headers.get('server-timing')).toMatch(SERVER_TIMING);
    expect(res.headers.get('server-timing')).toBe(
      'context-cache;desc="hits=5 joins=0 misses=1 loads=1 batches=0"',
    );
  });

  it('keeps 200 interleaved requests apart: each sees only its own values', async () => {
    const { authors } = started;
    const before = authors.loads.length;
    const tags = Array.from({ length: 200 }, (_, i) => `req-${i}`);
    const bodies = await Promise.all(
      tags.map(async (tag) => {
        const res = await get(`/isolation/${tag}`);
        expect(res.status).toBe(200);
        return (await res.json()) as { first: string; second: string; author: number };
      }),
    );
    bodies.forEach((body, i) => {
      expect(body).toEqual({ first: `req-${i}`, second: `req-${i}`, author: i % 10 });
    });
    // Every request loaded its author itself: nothing crossed from one cache to another.
    expect(authors.loads.length - before).toBe(200);
  });

  it('shares the request cache with GraphQL resolvers: 20 posts, each author loaded once', async () => {
    const { authors } = started;
    const before = authors.loads.length;
    const res = await fetch(`${started.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ posts { id title author { id name } } }' }),
    });
    expect(res.status).toBe(200);
    const { data } = (await res.json()) as {
      data: { posts: { id: number; title: string; author: { id: number; name: string } }[] };
    };
    expect(data.posts).toHaveLength(20);
    data.posts.forEach((post, i) => {
      expect(post).toEqual({
        id: i + 1,
        title: `post ${i + 1}`,
        author: { id: (i % 7) + 1, name: `author ${(i % 7) + 1}` },
      });
    });
    expect(authors.loads.slice(before).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const timing = SERVER_TIMING.exec(res.headers.get('server-timing') ?? '');
    expect(timing?.slice(3, 5)).toEqual(['7', '7']); // misses, loads
  });

  it('ends each cache after its response and calls onEnd once per request', async () => {
    const caches = http.seenCaches.length;
    const endedBefore = ended.length;
    const paths = ['/authors/8', '/authors/9', '/middleware'];
    for (const path of paths) {
      const res = await get(path);
      await res.text();
    }
    await vi.waitFor(() => expect(ended.length - endedBefore).toBe(paths.length));
    expect(ended.slice(endedBefore).map((entry) => entry.url)).toEqual(paths);
    expect(ended[endedBefore]?.stats).toMatchObject({ loads: 1, hits: 5 });
    const mine = http.seenCaches.slice(caches);
    expect(mine).toHaveLength(2);
    for (const cache of mine) expect(cache.ended).toBe(true);
    // And nothing ends twice: no more onEnd calls after a while of other requests.
    await (await get('/authors/1')).text();
    await vi.waitFor(() => expect(ended.length - endedBefore).toBe(paths.length + 1));
    expect(ended.slice(endedBefore).map((entry) => entry.url)).toEqual([...paths, '/authors/1']);
  });

  it('ends the cache once when the handler throws (Nest answers 500)', async () => {
    const endedBefore = ended.length;
    const res = await get('/fail/6');
    expect(res.status).toBe(500);
    await res.text();
    await vi.waitFor(() => expect(ended.length - endedBefore).toBe(1));
    expect(ended[endedBefore]).toMatchObject({ url: '/fail/6', stats: { loads: 1 } });
  });

  it('aborts the request signal and ends the cache when the client goes away', async () => {
    const endedBefore = ended.length;
    const signals = http.slowSignals.length;
    const client = new AbortController();
    const pending = fetch(`${started.url}/slow`, { signal: client.signal }).catch(
      (err: unknown) => err,
    );
    await vi.waitFor(() => expect(http.slowSignals.length).toBe(signals + 1));
    client.abort();
    expect(await pending).toBeInstanceOf(Error);
    const signal = http.slowSignals[signals] as AbortSignal;
    await vi.waitFor(() => expect(signal.aborted).toBe(true));
    expect((signal.reason as Error).message).toMatch(/client closed the connection/);
    await vi.waitFor(() => expect(ended.length - endedBefore).toBe(1));
    expect(ended[endedBefore]?.url).toBe('/slow');
  });

  it('gives a request whose body the parser refused its scope: filters see it, onEnd runs', async () => {
    const endedBefore = ended.length;
    const filtered = http.filterSawCache.length;
    const res = await fetch(`${started.url}/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{bad json',
    });
    expect(res.status).toBe(400);
    await res.text();
    await vi.waitFor(() => expect(ended.length - endedBefore).toBe(1));
    expect(ended[endedBefore]?.url).toBe('/echo');
    // Express hands the parser's error to Nest's exception filters; Fastify answers it
    // itself, before Nest's filters.
    expect(http.filterSawCache.slice(filtered)).toEqual(platform === 'express' ? [true] : []);
  });

  it("runs every module's middleware inside the request's scope", async () => {
    const res = await get('/middleware');
    expect(await res.json()).toEqual({ sawCache: true });
  });
});
