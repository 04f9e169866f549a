// The data behind the page scenarios, as two interchangeable stores with one method,
// `query(table, id)`, and a count of queries run:
// - latencyStore: rows in memory behind a pool of `pool` connections, each query holding
//   one connection for `latency` ms (a database one network hop away, like pg.Pool's
//   default of 10 connections); with `latency: 0` it answers at once, for runs that
//   measure the server's own cost (memory);
// - pgliteStore: the same rows in an in-memory PGlite (Postgres in WebAssembly) database,
//   queried with SQL in the server's own process.

export const USERS = [
  { id: 1, login: 'alice', name: 'Alice Liddell' },
  { id: 2, login: 'bob', name: 'Bob Tables' },
  { id: 3, login: 'carol', name: 'Carol Shaw' },
];
export const REPOS = [
  { id: 1, owner_id: 1, name: 'tracker' },
  { id: 2, owner_id: 2, name: 'website' },
];

export function latencyStore({ latency = 1, pool = 10 } = {}) {
  const tables = {
    users: new Map(USERS.map((row) => [row.id, row])),
    repos: new Map(REPOS.map((row) => [row.id, row])),
  };
  let free = pool;
  const waiting = [];
  const release = () => {
    const next = waiting.shift();
    if (next === undefined) free++;
    else next();
  };
  const acquire = () => {
    if (free === 0) return new Promise((resolve) => waiting.push(resolve));
    free--;
    return undefined;
  };
  const store = {
    queries: 0,
    async query(table, id) {
      store.queries++;
      if (latency > 0) {
        await acquire();
        await new Promise((resolve) => setTimeout(resolve, latency));
        release();
      }
      const row = tables[table].get(id);
      return row === undefined ? null : { ...row }; // a driver hands out fresh objects
    },
    close: async () => {},
  };
  return store;
}

export async function pgliteStore() {
  const { PGlite } = await import('@electric-sql/pglite');
  const db = new PGlite();
  await db.waitReady;
  await db.exec(`
    CREATE TABLE users (id integer PRIMARY KEY, login text NOT NULL, name text NOT NULL);
    CREATE TABLE repos (id integer PRIMARY KEY, owner_id integer NOT NULL REFERENCES users,
                        name text NOT NULL);
  `);
  for (const u of USERS) {
    await db.query('INSERT INTO users VALUES ($1, $2, $3)', [u.id, u.login, u.name]);
  }
  for (const r of REPOS) {
    await db.query('INSERT INTO repos VALUES ($1, $2, $3)', [r.id, r.owner_id, r.name]);
  }
  const sql = {
    users: 'SELECT id, login, name FROM users WHERE id = $1',
    repos: 'SELECT id, owner_id, name FROM repos WHERE id = $1',
  };
  const store = {
    queries: 0,
    async query(table, id) {
      store.queries++;
      const { rows } = await db.query(sql[table], [id]);
      return rows[0] ?? null;
    },
    close: () => db.close(),
  };
  return store;
}
