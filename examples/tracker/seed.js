// Schema and seed data. The data is generated from a fixed pseudo-random seed, so every
// start produces the same rows (and the tests can compute what a page must show).
// Activity is skewed the way real trackers are: a few people write most issues and a
// few repositories get most of them, so one page meets the same rows many times.

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  id integer PRIMARY KEY,
  login text NOT NULL UNIQUE,
  name text NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS repos (
  id integer PRIMARY KEY,
  owner_id integer NOT NULL REFERENCES users (id),
  name text NOT NULL,
  description text NOT NULL
);
CREATE TABLE IF NOT EXISTS issues (
  id integer PRIMARY KEY,
  repo_id integer NOT NULL REFERENCES repos (id),
  number integer NOT NULL,
  author_id integer NOT NULL REFERENCES users (id),
  assignee_id integer REFERENCES users (id),
  title text NOT NULL,
  body text NOT NULL,
  state text NOT NULL CHECK (state IN ('open', 'closed')),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  UNIQUE (repo_id, number)
);
CREATE TABLE IF NOT EXISTS comments (
  id integer PRIMARY KEY,
  issue_id integer NOT NULL REFERENCES issues (id),
  author_id integer NOT NULL REFERENCES users (id),
  body text NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS permissions (
  user_id integer NOT NULL REFERENCES users (id),
  repo_id integer NOT NULL REFERENCES repos (id),
  level text NOT NULL CHECK (level IN ('read', 'write', 'admin')),
  PRIMARY KEY (user_id, repo_id)
);
CREATE TABLE IF NOT EXISTS settings (
  name text PRIMARY KEY,
  value text NOT NULL
);
CREATE INDEX IF NOT EXISTS issues_updated_at ON issues (updated_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS issues_author ON issues (author_id);
CREATE INDEX IF NOT EXISTS comments_issue ON comments (issue_id);
CREATE INDEX IF NOT EXISTS comments_author ON comments (author_id);
CREATE INDEX IF NOT EXISTS repos_owner ON repos (owner_id);
`;

/** How many rows of each kind the seed makes. */
export const COUNTS = { users: 200, repos: 40, issues: 1500, comments: 4500, permissions: 400 };

const FIRST = [
  'Ada',
  'Alan',
  'Barbara',
  'Brian',
  'Claude',
  'Dennis',
  'Donald',
  'Edsger',
  'Frances',
  'Grace',
  'Guido',
  'Hedy',
  'Ivan',
  'Jean',
  'John',
  'Ken',
  'Leslie',
  'Linus',
  'Margaret',
  'Niklaus',
  'Radia',
  'Rob',
  'Sophie',
  'Tim',
  'Vint',
  'Whitfield',
  'Yukihiro',
  'Anders',
  'Bjarne',
  'Carol',
  'Dana',
  'Evelyn',
  'Fernando',
  'Gilles',
  'Hal',
  'Ingrid',
  'Joan',
  'Karen',
  'Lynn',
  'Mary',
];
const LAST = [
  'Lovelace',
  'Turing',
  'Liskov',
  'Kernighan',
  'Shannon',
  'Ritchie',
  'Knuth',
  'Dijkstra',
  'Allen',
  'Hopper',
  'Rossum',
  'Lamarr',
  'Sutherland',
  'Sammet',
  'Backus',
  'Thompson',
  'Lamport',
  'Torvalds',
  'Hamilton',
  'Wirth',
  'Perlman',
  'Pike',
  'Wilson',
  'Berners-Lee',
  'Cerf',
  'Diffie',
  'Matsumoto',
  'Hejlsberg',
  'Stroustrup',
  'Shaw',
  'Scott',
  'Boyd',
  'Corbato',
  'Kahn',
  'Abelson',
  'Daubechies',
  'Clarke',
  'Sparck-Jones',
  'Conway',
  'Keller',
];
const REPO_A = [
  'fast',
  'tiny',
  'lazy',
  'async',
  'quiet',
  'shiny',
  'solid',
  'plain',
  'swift',
  'brave',
];
const REPO_B = [
  'router',
  'parser',
  'cache',
  'queue',
  'logger',
  'server',
  'client',
  'store',
  'bundler',
  'scheduler',
  'mailer',
  'renderer',
];
const VERBS = [
  'crashes',
  'hangs',
  'leaks memory',
  'returns 500',
  'is slow',
  'drops events',
  'ignores the timeout',
  'logs twice',
  'loses the session',
  'mangles unicode',
];
const WHEN = [
  'on an empty config',
  'after a reconnect',
  'under load',
  'with a trailing slash',
  'on Windows',
  'when the cache is cold',
  'behind a proxy',
  'on the second request',
  'with HTTP/2',
  'after an upgrade',
];
const THINGS = ['the', 'our', 'my'];
const SAYINGS = [
  'I can reproduce this on the main branch.',
  'Same here, started after the last release.',
  'Could you share a minimal example?',
  'This looks related to the connection pool.',
  'A fix is on its way, will link the change here.',
  'Workaround: restart the worker after a deploy.',
  'Closing as a duplicate of an older report.',
  'Thanks, confirmed fixed on my side.',
  'Adding a test for this would help.',
  'It only happens when two requests race.',
];

/** The settings rows: read on every page, from many places, as a real app does. */
export const SETTINGS = {
  'site.name': 'Tracker',
  'site.tagline': 'issues, users and repositories on a request cache',
  'ui.date_format': 'short',
  'ui.issues_per_page': '50',
  'ui.show_assignee': 'true',
  'ui.show_comment_counts': 'true',
  'mail.enabled': 'false',
  'repo.default_branch': 'main',
};

/**
 * A small, fast pseudo-random generator (mulberry32) so the seed is the same on every run.
 * @param {number} seed
 */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The seed rows, generated deterministically.
 * @returns {{
 *   users: { id: number, login: string, name: string, created_at: Date }[],
 *   repos: { id: number, owner_id: number, name: string, description: string }[],
 *   issues: { id: number, repo_id: number, number: number, author_id: number,
 *     assignee_id: number | null, title: string, body: string, state: string,
 *     created_at: Date, updated_at: Date }[],
 *   comments: { id: number, issue_id: number, author_id: number, body: string, created_at: Date }[],
 *   permissions: { user_id: number, repo_id: number, level: string }[],
 *   settings: { name: string, value: string }[],
 * }}
 */
export function generateSeed() {
  const rand = random(20240601);
  /** @param {number} n @param {number} [skew] an integer in 1..n, small ones more often when skew > 1 */
  const pick = (n, skew = 1) => 1 + Math.floor(rand() ** skew * n);
  /** @template T @param {T[]} list @returns {T} */
  const oneOf = (list) => /** @type {T} */ (list[Math.floor(rand() * list.length)]);
  const epoch = Date.UTC(2024, 0, 1);
  const day = 86_400_000;

  const users = [];
  const logins = new Set();
  for (let id = 1; id <= COUNTS.users; id++) {
    const first = /** @type {string} */ (FIRST[(id - 1) % FIRST.length]);
    const last = /** @type {string} */ (
      LAST[Math.floor((id - 1) / FIRST.length + id * 7) % LAST.length]
    );
    let login = `${first[0]}${last}`.toLowerCase().replace(/[^a-z]/g, '');
    while (logins.has(login)) login += String(id % 10);
    logins.add(login);
    users.push({ id, login, name: `${first} ${last}`, created_at: new Date(epoch + id * day) });
  }

  const repos = [];
  for (let id = 1; id <= COUNTS.repos; id++) {
    // (id mod 10, id mod 12) pairs repeat only after 60: every name is different.
    const adjective = /** @type {string} */ (REPO_A[(id - 1) % REPO_A.length]);
    const noun = /** @type {string} */ (REPO_B[((id - 1) * 7) % REPO_B.length]);
    repos.push({
      id,
      owner_id: pick(30, 1.5),
      name: `${adjective}-${noun}`,
      description: `${/^[aeiou]/.test(adjective) ? 'An' : 'A'} ${adjective} ${noun} for Node.js servers.`,
    });
  }

  const issues = [];
  /** @type {Map<number, number>} */
  const numbers = new Map();
  for (let id = 1; id <= COUNTS.issues; id++) {
    const repo_id = pick(COUNTS.repos, 2);
    const number = (numbers.get(repo_id) ?? 0) + 1;
    numbers.set(repo_id, number);
    const created = epoch + 200 * day + id * 3_600_000 + Math.floor(rand() * 3_600_000);
    issues.push({
      id,
      repo_id,
      number,
      author_id: pick(COUNTS.users, 3),
      assignee_id: rand() < 0.6 ? pick(30, 1.5) : null,
      title: `${oneOf(THINGS)} ${oneOf(REPO_B)} ${oneOf(VERBS)} ${oneOf(WHEN)}`.replace(/^./, (c) =>
        c.toUpperCase(),
      ),
      body: `${oneOf(SAYINGS)} Steps: start the server, send two requests, watch the log.`,
      state: rand() < 0.7 ? 'open' : 'closed',
      created_at: new Date(created),
      updated_at: new Date(created + Math.floor(rand() * 30 * day)),
    });
  }

  const comments = [];
  for (let id = 1; id <= COUNTS.comments; id++) {
    const issue = /** @type {(typeof issues)[number]} */ (issues[pick(COUNTS.issues, 1.3) - 1]);
    comments.push({
      id,
      issue_id: issue.id,
      author_id: rand() < 0.3 ? issue.author_id : pick(COUNTS.users, 3),
      body: oneOf(SAYINGS),
      created_at: new Date(issue.created_at.getTime() + Math.floor(rand() * 10 * day)),
    });
  }

  const permissions = [];
  const granted = new Set();
  while (permissions.length < COUNTS.permissions) {
    const user_id = pick(COUNTS.users, 2);
    const repo_id = pick(COUNTS.repos);
    if (granted.has(`${user_id}:${repo_id}`)) continue;
    granted.add(`${user_id}:${repo_id}`);
    permissions.push({ user_id, repo_id, level: rand() < 0.7 ? 'write' : 'read' });
  }

  const settings = Object.entries(SETTINGS).map(([name, value]) => ({ name, value }));
  return { users, repos, issues, comments, permissions, settings };
}

/**
 * Insert rows in batches of parameterized multi-row INSERTs (the same SQL on PGlite
 * and PostgreSQL).
 * @param {import('./db.js').Database} db
 * @param {string} table
 * @param {Record<string, unknown>[]} rows
 */
async function insertAll(db, table, rows) {
  const first = rows[0];
  if (first === undefined) return;
  const columns = Object.keys(first);
  const batch = Math.floor(5000 / columns.length);
  for (let start = 0; start < rows.length; start += batch) {
    const chunk = rows.slice(start, start + batch);
    /** @type {unknown[]} */
    const params = [];
    const tuples = chunk.map((row) => {
      const slots = columns.map((column) => {
        params.push(row[column]);
        return `$${params.length}`;
      });
      return `(${slots.join(', ')})`;
    });
    await db.query(
      `INSERT INTO ${table} (${columns.join(', ')}) VALUES ${tuples.join(', ')}`,
      params,
    );
  }
}

/**
 * Create the tables and, when they are empty, fill them with the seed.
 * @param {import('./db.js').Database} db
 * @returns {Promise<{ seeded: boolean, rows: number }>}
 */
export async function migrateAndSeed(db) {
  await db.exec(SCHEMA);
  const [existing] = await db.query('SELECT count(*)::int AS n FROM users');
  const data = generateSeed();
  const rows = Object.values(data).reduce((sum, list) => sum + list.length, 0);
  if (existing && Number(existing.n) > 0) return { seeded: false, rows };
  await insertAll(db, 'users', data.users);
  await insertAll(db, 'repos', data.repos);
  await insertAll(db, 'issues', data.issues);
  await insertAll(db, 'comments', data.comments);
  await insertAll(db, 'permissions', data.permissions);
  await insertAll(db, 'settings', data.settings);
  return { seeded: true, rows };
}
