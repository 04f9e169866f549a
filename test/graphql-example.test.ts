// The GraphQL example (examples/graphql) on a real server: graphql-yoga on node:http with
// context-cache/http, over PGlite. The query for 50 posts with their authors, the
// authors' organisations and the posts' tags costs 4 SQL statements with contextBatched
// getters, against 1 + 50 + 50 + 50 with one query per row.
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error a JavaScript example without declarations
import { createGraphQLServer, POSTS_QUERY } from '../examples/graphql/app.js';
// @ts-expect-error a JavaScript example without declarations
import { openDatabase } from '../examples/graphql/db.js';

interface Database {
  statements(): number;
  close(): Promise<void>;
}
interface Post {
  id: number;
  title: string;
  author: { id: number; name: string; organisation: { id: number; name: string } };
  tags: { id: number; name: string }[];
}
type Mode = 'batched' | 'dataloader' | 'plain';

let db: Database;
const servers = new Map<Mode, { url: string; close(): Promise<void> }>();

beforeAll(async () => {
  db = (await openDatabase()) as Database;
  for (const mode of ['batched', 'dataloader', 'plain'] as const) {
    const server = createGraphQLServer({
      db,
      mode,
      serverTiming: true,
    }) as import('node:http').Server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    servers.set(mode, {
      url: `http://127.0.0.1:${port}/graphql`,
      close: () =>
        new Promise<void>((resolve) => {
          server.closeIdleConnections();
          server.close(() => resolve());
        }),
    });
  }
});
afterAll(async () => {
  for (const server of servers.values()) await server.close();
  await db?.close();
});

async function ask(mode: Mode, query = POSTS_QUERY as string) {
  const response = await fetch(servers.get(mode)!.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query }),
  });
  const body = (await response.json()) as { data?: { posts: Post[] }; errors?: unknown };
  expect(body.errors).toBeUndefined();
  return { posts: body.data!.posts, timing: response.headers.get('server-timing') };
}

/** The statements one request costs (requests are sent one at a time here). */
async function counted(mode: Mode) {
  const before = db.statements();
  const result = await ask(mode);
  return { ...result, statements: db.statements() - before };
}

describe('GraphQL: posts → author → organisation, posts → tags', () => {
  it('runs 1 + 50 + 50 + 50 statements with one query per row', async () => {
    const { posts, statements } = await counted('plain');
    expect(posts).toHaveLength(50);
    expect(statements).toBe(151);
  });

  it('runs at most 4 statements with contextBatched getters, and answers the same data', async () => {
    const plain = await ask('plain');
    const { posts, statements, timing } = await counted('batched');
    expect(statements).toBeLessThanOrEqual(4);
    expect(statements).toBe(4);
    expect(posts).toEqual(plain.posts);
    // Spot-check the data itself: post 1 is by user 8 of organisation 4, tagged 2, 5, 8.
    expect(posts[0]).toEqual({
      id: 1,
      title: 'Post 1',
      author: { id: 8, name: 'User 8', organisation: { id: 4, name: 'Organisation 4' } },
      tags: [
        { id: 2, name: 'tag-2' },
        { id: 5, name: 'tag-5' },
        { id: 8, name: 'tag-8' },
      ],
    });
    // 50 author lookups of 20 authors (30 join a queued key), 50 organisation lookups of
    // 5 organisations (45 join), 50 tag lists: 75 keys loaded in one batch call per getter.
    expect(timing).toBe('context-cache;desc="hits=0 joins=75 misses=75 loads=75 batches=3"');
  });

  it('costs the same 4 statements as one DataLoader per request', async () => {
    const batched = await counted('batched');
    const perRequest = await counted('dataloader');
    expect(perRequest.statements).toBe(batched.statements);
    expect(perRequest.posts).toEqual(batched.posts);
  });

  it('keeps concurrent requests apart: each gets its own batches and its own data', async () => {
    const before = db.statements();
    const [a, b] = await Promise.all([ask('batched'), ask('batched')]);
    expect(db.statements() - before).toBe(8);
    expect(a.posts).toEqual(b.posts);
    expect(a.timing).toBe(b.timing);
  });
});
