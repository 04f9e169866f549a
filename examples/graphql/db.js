// The example's data on embedded PGlite: organisations, users (authors) who belong to
// one, posts written by a user, and tags on posts. Every statement is counted, which is
// how the test and the benchmark show what batching saves.
import { PGlite } from '@electric-sql/pglite';

/**
 * @typedef {object} Database
 * @property {(sql: string, params?: unknown[]) => Promise<any[]>} query
 *   Run one statement with `$1`-style parameters; resolves with its rows.
 * @property {() => number} statements How many statements `query` has run so far.
 * @property {() => Promise<void>} close
 */

/**
 * Open an in-memory database seeded with `posts` posts (default 50), 20 authors in 5
 * organisations and 10 tags, three tags per post.
 * @param {{ posts?: number }} [options]
 * @returns {Promise<Database>}
 */
export async function openDatabase(options = {}) {
  const posts = options.posts ?? 50;
  const db = new PGlite();
  await db.waitReady;
  await db.exec(`
    CREATE TABLE organisations (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL,
                        organisation_id int NOT NULL REFERENCES organisations(id));
    CREATE TABLE posts (id int PRIMARY KEY, title text NOT NULL,
                        author_id int NOT NULL REFERENCES users(id));
    CREATE TABLE tags (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE post_tags (post_id int REFERENCES posts(id), tag_id int REFERENCES tags(id),
                            PRIMARY KEY (post_id, tag_id));
    INSERT INTO organisations SELECT i, 'Organisation ' || i FROM generate_series(1, 5) i;
    INSERT INTO users SELECT i, 'User ' || i, 1 + i % 5 FROM generate_series(1, 20) i;
    INSERT INTO posts SELECT i, 'Post ' || i, 1 + (i * 7) % 20 FROM generate_series(1, ${Number(posts)}) i;
    INSERT INTO tags SELECT i, 'tag-' || i FROM generate_series(1, 10) i;
    INSERT INTO post_tags SELECT p, 1 + (p + k * 3) % 10
      FROM generate_series(1, ${Number(posts)}) p, generate_series(0, 2) k;
  `);
  let statements = 0;
  return {
    async query(sql, params = []) {
      statements++;
      const result = await db.query(sql, params);
      return /** @type {any[]} */ (result.rows);
    },
    statements: () => statements,
    close: () => db.close(),
  };
}
