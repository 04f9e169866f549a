// End-to-end: the demo tracker (`npm start`) started as a child process on a free
// port, read over real HTTP. It checks what the demo exists to show: pages with the
// request cache run far fewer SQL queries than the same pages without it and render
// the same, right data; a rename is read back by the request that wrote it; a
// background job outlives the request that started it; shutdown waits for jobs.
// Runs on embedded PGlite, and on a real PostgreSQL when TEST_DATABASE_URL is set
// (`.ci/run` provides one; in CI the PostgreSQL run fails if it is missing).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisServer, startRedis } from '../helpers/redis-server.js';
import { type Demo, get, startDemo, stop } from './demo-process.js';

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

/** A page without its panel (the only part that differs with and without the cache). */
const withoutPanel = (page: string) => page.replace(/<aside class="explain"[\s\S]*?<\/aside>/, '');

type Mode = 'shared' | 'request' | 'none';

/** The three counts of the `x-sql-queries-by-mode` header. */
function byMode(headers: Headers): Record<Mode, number> {
  const header = headers.get('x-sql-queries-by-mode') ?? '';
  expect(header).toMatch(/^shared=\d+ request=\d+ none=\d+$/);
  const counts = Object.fromEntries(header.split(' ').map((pair) => pair.split('=')));
  return {
    shared: Number(counts.shared),
    request: Number(counts.request),
    none: Number(counts.none),
  };
}

/** What the panel's table shows for each mode: its query count and cache counts. */
function panelRows(page: string) {
  const panel = page.match(/<aside class="explain"[\s\S]*?<\/aside>/)?.[0] ?? '';
  const rows = [...panel.matchAll(/<tr class="(current)?" data-mode="(\w+)">([\s\S]*?)<\/tr>/g)];
  return Object.fromEntries(
    rows.map((m) => {
      const cells = [...(m[3] ?? '').matchAll(/<td class="num[^"]*">(\d+)<\/td>/g)].map((c) =>
        Number(c[1]),
      );
      const [queries, hits, joins, misses, loads, batches] = cells;
      return [m[2], { current: m[1] === 'current', queries, hits, joins, misses, loads, batches }];
    }),
  );
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
    expect(withoutPanel(uncached.body)).toBe(withoutPanel(cached.body));
    expect(uncached.cache).toBe('off');
    expect(cached.cache).toMatch(/^hits=\d+ joins=\d+ misses=\d+ loads=\d+$/);
    expect(uncached.queries).toBeGreaterThan(300); // 50 rows × several getters each
    expect(cached.queries * 3).toBeLessThan(uncached.queries);
    // Batched getters: the rows' users, repositories and permissions load with one query
    // per getter and turn (a dozen in all on a cold first page), not one per row.
    expect(cached.queries).toBeLessThanOrEqual(15);
    // The panel shows the same page's counts in the three modes, the same as the
    // headers, and marks the mode of this response.
    const counts = byMode(cached.headers);
    expect(counts.shared).toBe(cached.queries);
    expect(byMode(uncached.headers).none).toBe(uncached.queries);
    // Each comparison render counts exactly what a page served in that mode runs.
    expect(counts.none).toBe(uncached.queries);
    const requestOnly = await get(demo, '/?cache=request');
    expect(counts.request).toBe(requestOnly.queries);
    expect(byMode(requestOnly.headers).request).toBe(requestOnly.queries);
    expect(withoutPanel(requestOnly.body)).toBe(withoutPanel(cached.body));
    const [hits, joins, misses, loads] = (cached.cache?.match(/\d+/g) ?? []).map(Number);
    expect(panelRows(cached.body)).toEqual({
      shared: {
        current: true,
        queries: counts.shared,
        hits,
        joins,
        misses,
        loads,
        batches: expect.any(Number),
      },
      request: expect.objectContaining({ current: false, queries: counts.request }),
      none: {
        current: false,
        queries: counts.none,
        hits: undefined,
        joins: undefined,
        misses: undefined,
        loads: undefined,
        batches: undefined,
      },
    });
    expect(panelRows(uncached.body).none?.current).toBe(true);
    expect(panelRows(requestOnly.body).request?.current).toBe(true);
    expect(cached.body).toContain(
      `request cache + shared tier</strong> <span class="muted">(${sharedKind})`,
    );
    // It says what the counts mean and how they were measured.
    for (const term of ['hit', 'join', 'miss', 'load', 'batch'])
      expect(cached.body).toContain(`<strong>${term}</strong>: `);
    expect(cached.body).toContain('rendered this page three times');
    // Once the shared tier holds this page's users and settings, it saves more queries.
    const warm = byMode((await get(demo, '/')).headers);
    expect(warm.shared).toBeLessThan(warm.request);
    expect(warm.request).toBe(counts.request);

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
    expect(withoutPanel(uncached.body)).toBe(withoutPanel(cached.body));
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
    expect(withoutPanel(uncached.body)).toBe(withoutPanel(cached.body));
    expect(cached.queries).toBeLessThan(uncached.queries);

    expect((await get(demo, '/users/999999')).status).toBe(404);
    expect((await get(demo, '/issues/nope')).status).toBe(404);
    // Past what the id columns hold: no such row either, not a refused query.
    expect((await get(demo, '/users/2147483648')).status).toBe(404);
    expect((await get(demo, '/issues/2147483648')).status).toBe(404);
    const renameBeyond = await get(demo, '/users/2147483648/rename', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=x',
    });
    expect(renameBeyond.status).toBe(404);
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
    // The panel's other two modes render the page after the write, without writing again.
    const counts = byMode(renamed.headers);
    expect(counts.shared).toBe(renamed.queries);
    expect(renamed.body).toContain('This response also made the write');
    const after = await get(demo, `/users/${user.id}?nocache=1`);
    expect(counts.none).toBe(after.queries);
    expect(withoutPanel(after.body)).toContain(`<h1>${newName} <span class="muted">`);

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
    expect(page.body).toContain('<span id="job-status" class="job-status done">done</span>');
    expect(
      (await get(demo, '/jobs/424242', { headers: { accept: 'application/json' } })).status,
    ).toBe(404);
  }, 90_000);

  it('starts a job from the form with Post/Redirect/Get, and its page shows progress, then the file', async () => {
    const jobRows = async () =>
      [...(await get(demo, '/jobs')).body.matchAll(/<tr><td><a href="\/jobs\/(\d+)">/g)].map(
        (m) => m[1],
      );
    const before = await jobRows();
    // The form's POST is answered with a redirect to the job's own page (303: the
    // browser follows it with a GET), so reloading that page cannot start another job.
    const posted = await fetch(`${demo.url}/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
      redirect: 'manual',
    });
    expect(posted.status).toBe(303);
    const location = posted.headers.get('location') ?? '';
    expect(location).toMatch(/^\/jobs\/\d+$/);
    await posted.arrayBuffer();

    // While it runs: a progress bar, a script that polls the job's JSON, and for
    // browsers without JavaScript a refresh that only repeats this GET.
    const running = await get(demo, location);
    expect(running.status).toBe(200);
    expect(running.body).toMatch(/<span id="job-status" class="job-status (queued|running)">/);
    expect(running.body).toContain('<progress id="job-progress"');
    expect(running.body).toContain('<noscript><meta http-equiv="refresh" content="1"></noscript>');
    expect(running.body).toContain(
      "fetch(location.pathname, { headers: { accept: 'application/json' } })",
    );
    expect(running.body).toContain('<aside class="explain"');
    // Reading the page again and again (a reload) starts nothing: one job more, this one.
    for (let i = 0; i < 3; i++) expect((await get(demo, location)).status).toBe(200);
    const after = await jobRows();
    expect(after).toEqual([location.split('/').pop(), ...before]);

    // What the script reads: the job's progress against its total.
    let job = {
      status: 'queued',
      done: 0,
      total: null as number | null,
      download: null as string | null,
    };
    for (let i = 0; i < 600 && (job.status === 'queued' || job.status === 'running'); i++) {
      const polled = await get(demo, location, { headers: { accept: 'application/json' } });
      job = JSON.parse(polled.body);
      if (job.total !== null) expect(job.done).toBeLessThanOrEqual(job.total);
      if (job.status === 'queued' || job.status === 'running')
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(job).toMatchObject({
      status: 'done',
      done: seed.issues.length,
      total: seed.issues.length,
      download: `${location}/export.csv`,
    });
    const finished = await get(demo, location);
    expect(finished.body).toContain(
      `<a class="download" href="${location}/export.csv" download>Download export.csv</a> (${seed.issues.length} issues,`,
    );
    expect(finished.body).toContain(
      `<progress id="job-progress" max="${seed.issues.length}" value="${seed.issues.length}">100%</progress>`,
    );
    expect(finished.body).not.toContain('http-equiv="refresh"');
    expect(finished.body).not.toContain('<script>');
    const csv = await get(demo, `${location}/export.csv`);
    expect(csv.headers.get('content-disposition')).toMatch(
      /^attachment; filename="issues-\d+\.csv"$/,
    );
    expect(csv.body.trimEnd().split('\n')).toHaveLength(seed.issues.length + 1);
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
