// A GraphQL server (graphql-yoga) on node:http, with one request scope per request from
// context-cache/http. Resolvers ask for one author, organisation or tag list at a time;
// batching turns the 50 posts' lookups into one query per getter.
import { createServer } from 'node:http';
import { contextCache } from 'context-cache/http';
import { createSchema, createYoga } from 'graphql-yoga';
import { batchedLoaders, dataLoaders, plainLoaders } from './loaders.js';

export const typeDefs = /* GraphQL */ `
  type Organisation { id: Int!, name: String! }
  type User { id: Int!, name: String!, organisation: Organisation }
  type Tag { id: Int!, name: String! }
  type Post { id: Int!, title: String!, author: User, tags: [Tag!]! }
  type Query { posts(first: Int = 50): [Post!]! }
`;

/** The query the test and the benchmark send: 50 posts with everything they link to. */
export const POSTS_QUERY = `{ posts(first: 50) { id title author { id name organisation { id name } } tags { id name } } }`;

/**
 * @param {{ db: import('./db.js').Database, mode?: 'batched' | 'dataloader' | 'plain', serverTiming?: boolean }} options
 * @returns {import('node:http').Server}
 */
export function createGraphQLServer({ db, mode = 'batched', serverTiming = false }) {
  const makeLoaders = { batched: batchedLoaders, dataloader: dataLoaders, plain: plainLoaders }[
    mode
  ](db);
  /** @typedef {{ loaders: import('./loaders.js').Loaders }} Context */
  const schema = createSchema({
    typeDefs,
    resolvers: {
      Query: {
        posts: (_, /** @type {{ first: number }} */ { first }) =>
          db.query('SELECT * FROM posts ORDER BY id LIMIT $1', [first]),
      },
      Post: {
        author: (post, _, /** @type {Context} */ { loaders }) => loaders.user(post.author_id),
        tags: (post, _, /** @type {Context} */ { loaders }) => loaders.tags(post.id),
      },
      User: {
        organisation: (user, _, /** @type {Context} */ { loaders }) =>
          loaders.organisation(user.organisation_id),
      },
    },
  });
  const yoga = createYoga({
    schema,
    // With contextBatched this returns the same object every time; with DataLoader it
    // makes three loaders for the request, as DataLoader's documentation shows.
    context: () => ({ loaders: makeLoaders() }),
    logging: false,
    maskedErrors: false,
    graphiql: false,
  });
  return createServer(contextCache(yoga, { serverTiming }));
}
