// Repository getters. Each is wrapped with contextCached or contextBatched: within one
// request, a user, a repository, a permission or a setting is loaded once, however many
// code paths ask for it. Users, repositories and permissions are batched: the 50 rows of
// the issue list ask for them in the same turn, and each getter answers them all with
// one query. Users and settings also sit in a shared tier (shared.js) behind the request
// cache, as Gitea does for its settings: request cache, then the shared cache, then SQL.
import { contextBatched, contextCached, getContextCache } from 'context-cache';
import { currentMode } from './metrics.js';
import { shared } from './shared.js';

/** @typedef {import('./db.js').Database} Database */
/** @typedef {{ id: number, login: string, name: string, createdAt: string }} User */
/** @typedef {{ id: number, ownerId: number, name: string, description: string }} Repo */
/** @typedef {'owner' | 'write' | 'read'} Permission */

/** @type {Database | undefined} */
let database;

/**
 * Set the database every getter reads.
 * @param {Database} db
 */
export function useDatabase(db) {
  database = db;
}

/** @returns {Database} */
function db() {
  if (database === undefined) throw new Error('useDatabase(db) was not called');
  return database;
}

/**
 * @template {import('context-cache').CacheKey} K
 * @template T
 * @typedef {{ (key: K): Promise<T>, invalidate(key: K): Promise<void>,
 *   prime(key: K, value: T): void, many?: (keys: readonly K[]) => Promise<T[]> }} Getter
 */

/**
 * The demo renders each page in three modes to compare them (see `Mode` in metrics.js).
 * With no request cache (mode 'none', and background jobs, which have none either) a
 * getter reads SQL directly, skipping the shared tier too, so the count shows what an
 * app without any cache would run. In mode 'request' it uses a getter of the same group
 * and loader without the shared tier: the request cache alone.
 * @template {import('context-cache').CacheKey} K
 * @template T
 * @param {(options: { shared?: import('context-cache').SharedCache<T> }) => Getter<K, T>} make
 *   makes the getter (`contextCached` or `contextBatched`, always with the same loader),
 *   with or without the shared tier
 * @param {(key: K) => Promise<T>} load one key straight from SQL
 * @param {import('context-cache').SharedCache<T>} [sharedTier]
 * @returns {Getter<K, T>}
 */
function demoGetter(make, load, sharedTier) {
  const requestOnly = make({});
  const cached = sharedTier ? make({ shared: sharedTier }) : requestOnly;
  /** @param {K} key */
  const get = (key) => {
    if (getContextCache() === undefined) return load(key);
    return currentMode() === 'request' ? requestOnly(key) : cached(key);
  };
  get.invalidate = cached.invalidate;
  get.prime = cached.prime;
  if (cached.many) get.many = cached.many;
  return get;
}

/** @param {Record<string, any>} row @returns {User} */
const toUser = (row) => ({
  id: row.id,
  login: row.login,
  name: row.name,
  createdAt: new Date(row.created_at).toISOString(),
});

/** @param {number} id @returns {Promise<User | null>} */
async function loadUser(id) {
  const [row] = await db().query('SELECT id, login, name, created_at FROM users WHERE id = $1', [
    id,
  ]);
  return row ? toUser(row) : null;
}

/** @param {number} id @returns {Promise<Repo | null>} */
async function loadRepo(id) {
  const [row] = await db().query(
    'SELECT id, owner_id, name, description FROM repos WHERE id = $1',
    [id],
  );
  return row
    ? { id: row.id, ownerId: row.owner_id, name: row.name, description: row.description }
    : null;
}

/** @param {readonly [number, number]} key @returns {Promise<Permission>} */
async function loadPermission([userId, repoId]) {
  const repo = await getRepoById(repoId);
  if (repo?.ownerId === userId) return 'owner';
  const [row] = await db().query(
    'SELECT level FROM permissions WHERE user_id = $1 AND repo_id = $2',
    [userId, repoId],
  );
  // Every repository is public: anyone can read, collaborators can write.
  return row?.level === 'write' ? 'write' : 'read';
}

/** @param {string} name @returns {Promise<string | null>} */
async function loadSetting(name) {
  const [row] = await db().query('SELECT value FROM settings WHERE name = $1', [name]);
  return row ? row.value : null;
}

/** @param {readonly number[]} ids @returns {Promise<Map<number, User>>} */
async function loadUsers(ids) {
  const rows = await db().query(
    'SELECT id, login, name, created_at FROM users WHERE id = ANY($1)',
    [ids],
  );
  return new Map(rows.map((row) => [row.id, toUser(row)]));
}

/** @param {readonly number[]} ids @returns {Promise<Map<number, Repo>>} */
async function loadRepos(ids) {
  const rows = await db().query(
    'SELECT id, owner_id, name, description FROM repos WHERE id = ANY($1)',
    [ids],
  );
  return new Map(
    rows.map((row) => [
      row.id,
      { id: row.id, ownerId: row.owner_id, name: row.name, description: row.description },
    ]),
  );
}

/**
 * @param {readonly (readonly [number, number])[]} keys `[userId, repoId]` pairs
 * @returns {Promise<Permission[]>}
 */
async function loadPermissions(keys) {
  const repos = await getRepoById.many(keys.map(([, repoId]) => repoId));
  const rows = await db().query(
    `SELECT p.user_id, p.repo_id, p.level FROM permissions p
     JOIN unnest($1::int[], $2::int[]) AS k(user_id, repo_id)
       ON p.user_id = k.user_id AND p.repo_id = k.repo_id`,
    [keys.map(([userId]) => userId), keys.map(([, repoId]) => repoId)],
  );
  const levels = new Map(rows.map((row) => [`${row.user_id}:${row.repo_id}`, row.level]));
  return keys.map(([userId, repoId], i) => {
    if (repos[i]?.ownerId === userId) return 'owner';
    // Every repository is public: anyone can read, collaborators can write.
    return levels.get(`${userId}:${repoId}`) === 'write' ? 'write' : 'read';
  });
}

/** @param {readonly number[]} ids */
const batchUsers = async (ids) => {
  const found = await loadUsers(ids);
  return ids.map((id) => found.get(id) ?? null);
};

/**
 * A user by id, or null. Request cache, then the shared tier, then SQL; the ids asked
 * for in one turn load with one query.
 */
export const getUserById = demoGetter(
  (options) => contextBatched('user', batchUsers, options),
  loadUser,
  shared,
);

/** @param {readonly number[]} ids */
const batchRepos = async (ids) => {
  const found = await loadRepos(ids);
  return ids.map((id) => found.get(id) ?? null);
};

/** A repository by id, or null. Request cache, then SQL, batched. */
export const getRepoById = demoGetter(
  (options) => contextBatched('repo', batchRepos, options),
  loadRepo,
);

/**
 * What a user may do in a repository: 'owner', 'write' or 'read'. The key is composite,
 * `[userId, repoId]`, compared by value; the pairs asked for in one turn load together.
 */
export const getPermission = demoGetter(
  (options) => contextBatched('permission', loadPermissions, options),
  loadPermission,
);

/** A setting's value, or null. Request cache, then the shared tier, then SQL. */
export const getSetting = demoGetter(
  (options) => contextCached('setting', loadSetting, options),
  loadSetting,
  shared,
);

/**
 * Rename a user, then invalidate the cached user in every tier, so the rest of this
 * request (and every later one) reads the new name.
 * @param {number} id
 * @param {string} name
 * @returns {Promise<{ updated: boolean, sharedError?: Error }>} `sharedError`: the
 *   shared tier could not be told (other instances may serve the old name until its ttl).
 */
export async function renameUser(id, name) {
  const rows = await db().query('UPDATE users SET name = $2 WHERE id = $1 RETURNING id', [
    id,
    name,
  ]);
  try {
    await getUserById.invalidate(id);
  } catch (err) {
    return { updated: rows.length > 0, sharedError: /** @type {Error} */ (err) };
  }
  return { updated: rows.length > 0 };
}

// Plain queries: one per page, nothing to share.

/**
 * @typedef {{ id: number, repoId: number, number: number, authorId: number,
 *   assigneeId: number | null, title: string, body: string, state: string,
 *   createdAt: Date, updatedAt: Date, comments: number }} Issue
 */

/** @param {Record<string, any>} row @returns {Issue} */
const toIssue = (row) => ({
  id: row.id,
  repoId: row.repo_id,
  number: row.number,
  authorId: row.author_id,
  assigneeId: row.assignee_id,
  title: row.title,
  body: row.body,
  state: row.state,
  createdAt: new Date(row.created_at),
  updatedAt: new Date(row.updated_at),
  comments: Number(row.comments ?? 0),
});

const ISSUE_COLUMNS = `i.id, i.repo_id, i.number, i.author_id, i.assignee_id, i.title, i.body,
  i.state, i.created_at, i.updated_at,
  (SELECT count(*)::int FROM comments c WHERE c.issue_id = i.id) AS comments`;

/**
 * One page of issues, most recently updated first.
 * @param {{ limit: number, offset: number, authorId?: number }} options
 * @returns {Promise<{ issues: Issue[], total: number }>}
 */
export async function listIssues({ limit, offset, authorId }) {
  const where = authorId === undefined ? '' : 'WHERE i.author_id = $3';
  const params = authorId === undefined ? [limit, offset] : [limit, offset, authorId];
  const rows = await db().query(
    `SELECT ${ISSUE_COLUMNS}, count(*) OVER ()::int AS total FROM issues i ${where}
     ORDER BY i.updated_at DESC, i.id DESC LIMIT $1 OFFSET $2`,
    params,
  );
  return { issues: rows.map(toIssue), total: Number(rows[0]?.total ?? 0) };
}

/** @param {number} id @returns {Promise<Issue | null>} */
export async function getIssue(id) {
  const [row] = await db().query(`SELECT ${ISSUE_COLUMNS} FROM issues i WHERE i.id = $1`, [id]);
  return row ? toIssue(row) : null;
}

/**
 * @typedef {{ id: number, issueId: number, authorId: number, body: string, createdAt: Date }} Comment
 */

/** @param {number} issueId @returns {Promise<Comment[]>} */
export async function listComments(issueId) {
  const rows = await db().query(
    'SELECT id, issue_id, author_id, body, created_at FROM comments WHERE issue_id = $1 ORDER BY created_at, id',
    [issueId],
  );
  return rows.map((row) => ({
    id: row.id,
    issueId: row.issue_id,
    authorId: row.author_id,
    body: row.body,
    createdAt: new Date(row.created_at),
  }));
}

/** @param {number} ownerId @returns {Promise<number[]>} ids of the user's repositories */
export async function listRepoIdsByOwner(ownerId) {
  const rows = await db().query('SELECT id FROM repos WHERE owner_id = $1 ORDER BY name', [
    ownerId,
  ]);
  return rows.map((row) => row.id);
}

/**
 * Issues in batches, by id, for the export job.
 * @param {number} afterId
 * @param {number} limit
 * @returns {Promise<Issue[]>}
 */
export async function issuesAfter(afterId, limit) {
  const rows = await db().query(
    `SELECT ${ISSUE_COLUMNS} FROM issues i WHERE i.id > $1 ORDER BY i.id LIMIT $2`,
    [afterId, limit],
  );
  return rows.map(toIssue);
}

/** @returns {Promise<number>} how many issues there are (the export job's total) */
export async function countIssues() {
  const [row] = await db().query('SELECT count(*)::int AS n FROM issues');
  return Number(row?.n ?? 0);
}
