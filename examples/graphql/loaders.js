// Three ways to resolve posts → author → organisation and posts → tags:
//
// - 'batched': `contextBatched` getters, made once at start-up. Each request's keys of one
//   turn go to one query per getter; nothing is created per request.
// - 'dataloader': one DataLoader per getter, made for every request in the GraphQL
//   context function, as DataLoader's documentation shows.
// - 'plain': one query per row, the N+1 that batching removes.
import { contextBatched } from 'context-cache';
import DataLoader from 'dataloader';

/** @typedef {import('./db.js').Database} Database */
/** @typedef {{ id: number, name: string, organisation_id: number }} User */
/** @typedef {{ id: number, name: string }} Organisation */
/** @typedef {{ id: number, name: string }} Tag */

/**
 * @typedef {object} Loaders
 * @property {(id: number) => Promise<User | undefined>} user
 * @property {(id: number) => Promise<Organisation | undefined>} organisation
 * @property {(postId: number) => Promise<Tag[]>} tags
 */

/**
 * The three batch functions, one query each, shared by both batching modes.
 * @param {Database} db
 */
function batchFunctions(db) {
  return {
    /** @param {readonly number[]} ids */
    async users(ids) {
      const rows = await db.query('SELECT * FROM users WHERE id = ANY($1)', [ids]);
      return new Map(rows.map((row) => [row.id, row]));
    },
    /** @param {readonly number[]} ids */
    async organisations(ids) {
      const rows = await db.query('SELECT * FROM organisations WHERE id = ANY($1)', [ids]);
      return new Map(rows.map((row) => [row.id, row]));
    },
    /** @param {readonly number[]} postIds */
    async tags(postIds) {
      const rows = await db.query(
        `SELECT pt.post_id, t.id, t.name FROM post_tags pt JOIN tags t ON t.id = pt.tag_id
         WHERE pt.post_id = ANY($1) ORDER BY pt.post_id, t.id`,
        [postIds],
      );
      /** @type {Map<number, Tag[]>} */
      const byPost = new Map(postIds.map((id) => [id, []]));
      for (const { post_id, id, name } of rows) byPost.get(post_id)?.push({ id, name });
      return byPost;
    },
  };
}

/**
 * Getters made once, carried by the request scope.
 * @param {Database} db
 * @returns {() => Loaders} the loaders of the current request (the same object every time)
 */
export function batchedLoaders(db) {
  const batch = batchFunctions(db);
  /** @type {Loaders} */
  const loaders = {
    user: contextBatched('graphql-example:user', batch.users),
    organisation: contextBatched('graphql-example:organisation', batch.organisations),
    tags: contextBatched('graphql-example:tags', batch.tags),
  };
  return () => loaders;
}

/**
 * One DataLoader per getter, made for each request.
 * @param {Database} db
 * @returns {() => Loaders}
 */
export function dataLoaders(db) {
  const batch = batchFunctions(db);
  /** @template V @param {(keys: readonly number[]) => Promise<Map<number, V>>} fn */
  const byKey = (fn) => async (/** @type {readonly number[]} */ keys) => {
    const found = await fn(keys);
    return keys.map((key) => found.get(key));
  };
  return () => {
    const user = new DataLoader(byKey(batch.users));
    const organisation = new DataLoader(byKey(batch.organisations));
    const tags = new DataLoader(byKey(batch.tags));
    return {
      user: (id) => user.load(id),
      organisation: (id) => organisation.load(id),
      tags: async (postId) => (await tags.load(postId)) ?? [],
    };
  };
}

/**
 * One query per row.
 * @param {Database} db
 * @returns {() => Loaders}
 */
export function plainLoaders(db) {
  /** @type {Loaders} */
  const loaders = {
    user: async (id) => (await db.query('SELECT * FROM users WHERE id = $1', [id]))[0],
    organisation: async (id) =>
      (await db.query('SELECT * FROM organisations WHERE id = $1', [id]))[0],
    tags: (postId) =>
      db.query(
        `SELECT t.id, t.name FROM post_tags pt JOIN tags t ON t.id = pt.tag_id
         WHERE pt.post_id = $1 ORDER BY t.id`,
        [postId],
      ),
  };
  return () => loaders;
}
