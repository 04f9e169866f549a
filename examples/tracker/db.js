// The database: embedded PGlite (in memory) by default, or a real PostgreSQL through
// `pg` when a connection string is given. Both run the same SQL. Every query is counted
// for the request that ran it (see metrics.js), which is how each page can tell how
// many queries it cost.
import { countQuery } from './metrics.js';

/**
 * @typedef {object} Database
 * @property {'pglite' | 'postgres'} kind
 * @property {(sql: string, params?: unknown[]) => Promise<any[]>} query
 *   Run one statement with `$1`-style parameters; resolves with its rows.
 * @property {(sql: string) => Promise<void>} exec Run a script of statements (no parameters).
 * @property {() => Promise<void>} close
 */

/**
 * Open the database.
 * @param {{ url?: string | undefined }} [options] `url`: a PostgreSQL connection string;
 *   without it an in-memory PGlite database is created.
 * @returns {Promise<Database>}
 */
export async function openDatabase(options = {}) {
  if (options.url) {
    const { default: pg } = await import('pg');
    const pool = new pg.Pool({ connectionString: options.url, max: 10 });
    // Fail now, with the server's own message, rather than on the first page.
    const client = await pool.connect();
    client.release();
    return {
      kind: 'postgres',
      async query(sql, params = []) {
        countQuery();
        const result = await pool.query(sql, params);
        return result.rows;
      },
      async exec(sql) {
        await pool.query(sql);
      },
      close: () => pool.end(),
    };
  }
  const { PGlite } = await import('@electric-sql/pglite');
  const db = new PGlite();
  await db.waitReady;
  return {
    kind: 'pglite',
    async query(sql, params = []) {
      countQuery();
      const result = await db.query(sql, params);
      return /** @type {any[]} */ (result.rows);
    },
    async exec(sql) {
      await db.exec(sql);
    },
    close: () => db.close(),
  };
}
