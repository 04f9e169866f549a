// End-to-end: the demo tracker (`npm start`) started as a child process on a free
// port, read over real HTTP. It checks what the demo exists to show: pages with the
// request cache run far fewer SQL queries than the same pages without it and render
// the same, right data; a rename is read back by the request that wrote it; a
// background job outlives the request that started it; shutdown waits for jobs.
// Runs on embedded PGlite, and on a real PostgreSQL when TEST_DATABASE_URL is set
// (`.ci/run` provides one; in CI the PostgreSQL run fails if it is missing).
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisServer, startRedis } from '../helpers/redis-server.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const serverPath = fileURLToPath(new URL('../../examples/tracker/server.js', import.meta.url));
const seedUrl = new URL('../../examples/tracker/seed.js', import.meta.url).href;

interface SeedUser {
  id: number;
  login: string;
  name: string;
}
interface SeedRepo {
  id: number;
  owner_id: number;
  name: string;
}
interface SeedIssue {
  id: number;
  repo_id: number;
  number: number;
  author_id: number;
  assignee_id: number | null;
  title: string;
  state: string;
  updated_at: Date;
}
interface SeedComment {
  id: number;
  issue_id: number;
  author_id: number;
  body: string;
  created_at: Date;
}
interface Seed {
  users: SeedUser[];
  repos: SeedRepo[];
  issues: SeedIssue[];
  comments: SeedComment[];
  permissions: { user_id: number; repo_id: number; level: string }[];
}
interface SeedModule {
  generateSeed(): Seed;
}

const seed = ((await import(seedUrl)) as SeedModule).generateSeed();
const userById = new Map(seed.users.map((u) => [u.id, u]));
const repoById = new Map(seed.repos.map((r) => [r.id, r]));
const VIEWER = 1;

function must<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`seed has no ${what}`);
  return value;
}
const repoFullName = (repoId: number) => {
  const repo = must(repoById.get(repoId), `repo ${repoId}`);
  return `${must(userById.get(repo.owner_id), `user ${repo.owner_id}`).login}/${repo.name}`;
};
const permissionOf = (userId: number, repoId: number) => {
  if (must(repoById.get(repoId), `repo ${repoId}`).owner_id === userId) return 'owner';
  const row = seed.permissions.find((p) => p.user_id === userId && p.repo_id === repoId);
  return row?.level === 'write' ? 'write' : 'read';
};
const byRecent = (a: SeedIssue, b: SeedIssue) =>
  b.updated_at.getTime() - a.updated_at.getTime() || b.id - a.id;

const decodeHtml = (s: string) =>
  s
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&amp;', '&');

/** The issue rows of a page: what each one shows. */
function issueRows(page: string) {
  const rows = [...page.matchAll(/<tr>\s*<td><span class="state[\s\S]*?<\/tr>/g)].map((m) => m[0]);
  return rows.map((row) => {
    const cell = (re: RegExp) => decodeHtml(row.match(re)?.[1] ?? '');
    const users = [...row.matchAll(/<a href="\/users\/(\d+)" title="@[^"]*">([^<]*)<\/a>/g)];
    return {
      id: Number(cell(/<a href="\/issues\/(\d+)">/)),
      title: cell(/<a href="\/issues\/\d+">([^<]*)<\/a>/),
      repo: cell(/<td class="repo">([^<]*)<\/td>/),
      state: cell(/<span class="state (\w+)">/),
      authorId: Number(users[0]?.[1]),
      author: decodeHtml(users[0]?.[2] ?? ''),
      access: cell(/<span class="badge (\w+)">/),
    };
  });
}

/** A page without its footer (the only part that differs with and without the cache). */
const withoutFooter = (page: string) =>
  page.replace(/<footer class="stats">[\s\S]*?<\/footer>/, '');

interface Demo {
  url: string;
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

async function startDemo(env: Record<string, string>): Promise<Demo> {
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

async function get(demo: Demo, path: string, init?: RequestInit) {
  const response = await fetch(demo.url + path, init);
  return {
    status: response.status,
    headers: response.headers,
    queries: Number(response.headers.get('x-sql-queries')),
    cache: response.headers.get('x-cache-stats'),
    body: await response.text(),
  };
}

async function stop(demo: Demo) {
  if (demo.child.exitCode !== null || demo.child.signalCode !== null) return demo.exited;
  demo.child.kill('SIGTERM');
  return demo.exited;
}

function demoSuite(env: () => Record<string, string>, sharedKind: 'memory' | 'redis') {
  let demo: Demo;
  beforeAll(async () => {
    demo = await startDemo(env());
  }, 120_000);
  afterAll(async () => {
    if (demo) await stop(demo);
  }, 30_000);

  it('renders the issue list from the database, with far fewer queries with the cache', async () => {
    const cached = await get(demo, '/');
    const uncached = await get(demo, '/?nocache=1');
    expect(cached.status).toBe(200);
    expect(uncached.status).toBe(200);

    // The right data: the 50 most recently updated issues, each with its repository,
    // author and the viewer's access, as seeded.
    const expected = [...seed.issues].sort(byRecent).slice(0, 50);
    const rows = issueRows(cached.body);
    expect(rows).toEqual(
      expected.map((issue) => ({
        id: issue.id,
        title: issue.title,
        repo: repoFullName(issue.repo_id),
        state: issue.state,
        authorId: issue.author_id,
        author: must(userById.get(issue.author_id), 'author').name,
        access: permissionOf(VIEWER, issue.repo_id),
      })),
    );
    // The same page without the cache: the same content, many more queries.
    expect(withoutFooter(uncached.body)).toBe(withoutFooter(cached.body));
    expect(uncached.cache).toBe('off');
    expect(cached.cache).toMatch(/^hits=\d+ joins=\d+ misses=\d+ loads=\d+$/);
    expect(uncached.queries).toBeGreaterThan(300); // 50 rows × several getters each
    expect(cached.queries * 3).toBeLessThan(uncached.queries);
    // Batched getters: the rows' users, repositories and permissions load with one query
    // per getter and turn (a dozen in all on a cold first page), not one per row.
    expect(cached.queries).toBeLessThanOrEqual(15);
    // The footer says the same as the headers.
    expect(cached.body).toContain(`This page ran <strong>${cached.queries} SQL queries</strong>`);
    expect(uncached.body).toContain(
      `This page ran <strong>${uncached.queries} SQL queries</strong>`,
    );
    expect(uncached.body).toContain('cache <strong>off</strong>');
    expect(cached.body).toContain(`shared tier: ${sharedKind}`);

    // Page 2 is the next 50.
    const page2 = issueRows((await get(demo, '/?page=2')).body);
    expect(page2.map((r) => r.id)).toEqual(
      [...seed.issues]
        .sort(byRecent)
        .slice(50, 100)
        .map((i) => i.id),
    );
  });

  it('renders an issue with its comments in order, each with its author and their access', async () => {
    const counts = new Map<number, number>();
    for (const c of seed.comments) counts.set(c.issue_id, (counts.get(c.issue_id) ?? 0) + 1);
    const [issueId, count] = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0] ?? [0, 0];
    const issue = must(
      seed.issues.find((i) => i.id === issueId),
      `issue ${issueId}`,
    );
    const comments = seed.comments
      .filter((c) => c.issue_id === issueId)
      .sort((a, b) => a.created_at.getTime() - b.created_at.getTime() || a.id - b.id);

    const cached = await get(demo, `/issues/${issueId}`);
    const uncached = await get(demo, `/issues/${issueId}?nocache=1`);
    expect(cached.status).toBe(200);
    expect(cached.body).toContain(`<h2>${count} comments</h2>`);
    expect(cached.body).toContain(`${repoFullName(issue.repo_id)}#${issue.number}`);
    const shown = [
      ...cached.body.matchAll(
        /<li class="comment"><div class="meta"><a href="\/users\/(\d+)"[^>]*>([^<]*)<\/a> <span class="badge (\w+)">[\s\S]*?<p>([^<]*)<\/p>/g,
      ),
    ].map((m) => ({
      authorId: Number(m[1]),
      name: decodeHtml(m[2] ?? ''),
      access: m[3],
      body: m[4],
    }));
    expect(shown).toEqual(
      comments.map((c) => ({
        authorId: c.author_id,
        name: must(userById.get(c.author_id), 'commenter').name,
        access: permissionOf(c.author_id, issue.repo_id),
        body: c.body,
      })),
    );
    expect(withoutFooter(uncached.body)).toBe(withoutFooter(cached.body));
    expect(cached.queries * 2).toBeLessThan(uncached.queries);
  });

  it('renders a user page with their repositories and latest issues', async () => {
    const user = must(
      seed.users.find((u) => u.id === 2),
      'user 2',
    );
    const owned = seed.repos.filter((r) => r.owner_id === user.id);
    const authored = seed.issues.filter((i) => i.author_id === user.id).sort(byRecent);
    const cached = await get(demo, `/users/${user.id}`);
    const uncached = await get(demo, `/users/${user.id}?nocache=1`);
    expect(cached.status).toBe(200);
    expect(cached.body).toContain(
      `<h1>${user.name} <span class="muted">@${user.login}</span></h1>`,
    );
    expect(cached.body).toContain(`${authored.length} issues opened.`);
    for (const repo of owned)
      expect(cached.body).toContain(`<strong>${user.login}/${repo.name}</strong>`);
    expect(issueRows(cached.body).map((r) => r.id)).toEqual(authored.slice(0, 20).map((i) => i.id));
    expect(withoutFooter(uncached.body)).toBe(withoutFooter(cached.body));
    expect(cached.queries).toBeLessThan(uncached.queries);

    expect((await get(demo, '/users/999999')).status).toBe(404);
    expect((await get(demo, '/issues/nope')).status).toBe(404);
  });

  it('renames a user with a form POST and the same request reads its own write', async () => {
    const user = must(userById.get(VIEWER), 'the viewer');
    const newName = `Countess ${user.name} ${Date.now().toString(36)}`;
    const renamed = await get(demo, `/users/${user.id}/rename`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ name: newName }).toString(),
    });
    expect(renamed.status).toBe(200);
    // The handler read the user (caching it) before the write; every link to the user
    // on the page it then rendered shows the new name.
    const links = [
      ...renamed.body.matchAll(
        new RegExp(`<a href="/users/${user.id}" title="@${user.login}">([^<]*)</a>`, 'g'),
      ),
    ].map((m) => decodeHtml(m[1] ?? ''));
    expect(links.length).toBeGreaterThan(5);
    expect(new Set(links)).toEqual(new Set([newName]));
    expect(renamed.body).toContain(`<h1>${newName} <span class="muted">@${user.login}</span></h1>`);
    expect(renamed.body).toContain('reads its own write');
    expect(renamed.cache).toMatch(/^hits=[1-9]/); // the page was rendered with the cache on

    // Later requests see it too (the shared tier was invalidated as well).
    const later = await get(demo, `/users/${user.id}`);
    expect(later.body).toContain(`<h1>${newName} `);
    const list = issueRows((await get(demo, '/')).body);
    for (const row of list.filter((r) => r.authorId === user.id)) expect(row.author).toBe(newName);

    const empty = await get(demo, `/users/${user.id}/rename`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=',
    });
    expect(empty.status).toBe(400);

    // Put the seed's name back, so the database is as seeded for anyone after us.
    const restored = await get(demo, `/users/${user.id}/rename`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ name: user.name }).toString(),
    });
    expect(restored.body).toContain(`<h1>${user.name} <span class="muted">`);
  });

  it('runs a job in the background: 202 with a Location, polled until done, without a request cache', async () => {
    const started = await get(demo, '/jobs', {
      method: 'POST',
      headers: { accept: 'application/json' },
    });
    expect(started.status).toBe(202);
    const location = started.headers.get('location') ?? '';
    expect(location).toMatch(/^\/jobs\/\d+$/);
    const job = JSON.parse(started.body) as { id: string; status: string };
    expect(location).toBe(`/jobs/${job.id}`);
    // The response came back while the job was still to do: it outlives its request.
    expect(['queued', 'running']).toContain(job.status);

    let status = job.status;
    let polled: {
      status: string;
      done: number;
      result: { issues: number; bytes: number; queries: number; requestCache: boolean } | null;
    } = { status, done: 0, result: null };
    for (let i = 0; i < 600 && (status === 'queued' || status === 'running'); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const res = await get(demo, location, { headers: { accept: 'application/json' } });
      polled = JSON.parse(res.body);
      status = polled.status;
    }
    expect(polled.status).toBe('done');
    expect(polled.done).toBe(seed.issues.length);
    expect(polled.result?.issues).toBe(seed.issues.length);
    expect(polled.result?.requestCache).toBe(false);
    // No request cache in the job: every getter call was a query (1,500 issues, at
    // least a repository, an author and an owner each).
    expect(polled.result?.queries).toBeGreaterThan(seed.issues.length * 3);

    const csv = await get(demo, `${location}/export.csv`);
    expect(csv.status).toBe(200);
    expect(Buffer.byteLength(csv.body)).toBe(polled.result?.bytes);
    const lines = csv.body.trimEnd().split('\n');
    expect(lines).toHaveLength(seed.issues.length + 1);
    const first = must(seed.issues[0], 'issue 1');
    expect(lines[1]).toBe(
      [
        first.id,
        repoFullName(first.repo_id),
        first.number,
        first.state,
        must(userById.get(first.author_id), 'author').login,
        first.assignee_id === null ? '' : must(userById.get(first.assignee_id), 'assignee').login,
        seed.comments.filter((c) => c.issue_id === first.id).length,
        first.title,
      ].join(','),
    );

    const page = await get(demo, location);
    expect(page.body).toContain('<span class="job-status done">done</span>');
    expect(
      (await get(demo, '/jobs/424242', { headers: { accept: 'application/json' } })).status,
    ).toBe(404);
  }, 90_000);

  it('shuts down on SIGTERM after the running job has finished', async () => {
    const started = await get(demo, '/jobs', {
      method: 'POST',
      headers: { accept: 'application/json' },
    });
    const { id } = JSON.parse(started.body) as { id: string };
    demo.child.kill('SIGTERM');
    expect(await demo.exited).toBe(0);
    const out = demo.output();
    const done = out.indexOf(`job ${id} done: ${seed.issues.length} issues exported`);
    expect(done).toBeGreaterThan(-1);
    expect(out.indexOf('Background jobs finished')).toBeGreaterThan(done);
    expect(out).toContain('Bye');
    // Nothing along the way warned (no cache used after its request ended, no listener leak).
    expect(out).not.toMatch(/Warning|CONTEXT_CACHE_/);
  }, 60_000);
}

describe('the demo tracker on embedded PGlite', () => {
  demoSuite(() => ({ DATABASE_URL: '', REDIS_URL: '' }), 'memory');
});

const databaseUrl = process.env.TEST_DATABASE_URL;
describe('the demo tracker on PostgreSQL (TEST_DATABASE_URL) with Redis (REDIS_URL)', () => {
  if (databaseUrl) {
    let redis: RedisServer;
    beforeAll(async () => {
      redis = await startRedis();
      // A throwaway database: start from an empty schema so the demo seeds it afresh.
      const { default: pg } = await import('pg');
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      await client.query(
        'DROP TABLE IF EXISTS comments, permissions, issues, repos, settings, users CASCADE',
      );
      await client.end();
    }, 30_000);
    afterAll(async () => {
      await redis?.stop();
    });
    demoSuite(() => ({ DATABASE_URL: databaseUrl, REDIS_URL: redis.url }), 'redis');

    it('two instances on one database and one Redis: a rename on one is read at once on the other', async () => {
      const env = { DATABASE_URL: databaseUrl, REDIS_URL: redis.url };
      const [a, b] = await Promise.all([startDemo(env), startDemo(env)]);
      try {
        const user = must(userById.get(2), 'user 2');
        // b reads the user first: it is now in b's in-process L1 and in Redis.
        expect((await get(b, `/users/${user.id}`)).body).toContain(`<h1>${user.name} `);
        const newName = `${user.name} the Second`;
        await get(a, `/users/${user.id}/rename`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ name: newName }).toString(),
        });
        // a's invalidation went through Redis and its pub/sub: b dropped its L1 copy.
        // (Without it, b would serve the old name until its L1 ttl, 5 s.) The message
        // is asynchronous, so allow it a moment, far below that ttl.
        let seen = '';
        for (let i = 0; i < 20 && !seen.includes(`<h1>${newName} `); i++) {
          seen = (await get(b, `/users/${user.id}`)).body;
          if (!seen.includes(`<h1>${newName} `)) await new Promise((r) => setTimeout(r, 50));
        }
        expect(seen).toContain(`<h1>${newName} `);
        await get(b, `/users/${user.id}/rename`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ name: user.name }).toString(),
        });
        expect((await get(a, `/users/${user.id}`)).body).toContain(`<h1>${user.name} `);
      } finally {
        expect(await Promise.all([stop(a), stop(b)])).toEqual([0, 0]);
      }
    }, 120_000);
  } else {
    // Locally this runs only where a PostgreSQL is given; in CI it must not be skipped.
    it.runIf(process.env.CI === 'true')('has a PostgreSQL to run against', () => {
      throw new Error(
        'TEST_DATABASE_URL is not set: CI must provide a PostgreSQL database (see .ci/run), ' +
          'e.g. TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5433/tracker_test',
      );
    });
  }
});
