// The GraphQL example's data in plain arrays, behind the same `query(sql, params)` as its
// PGlite database: it answers exactly the statements examples/graphql/loaders.js and
// app.js send (anything else throws), and counts them. Used by graphql.mjs --source
// memory, to time the batching and GraphQL work without the database's own cost.

/** @param {{ posts?: number }} [options] */
export function memoryDatabase(options = {}) {
  const count = options.posts ?? 50;
  const range = (n) => Array.from({ length: n }, (_, i) => i + 1);
  const organisations = range(5).map((id) => ({ id, name: `Organisation ${id}` }));
  const users = range(20).map((id) => ({ id, name: `User ${id}`, organisation_id: 1 + (id % 5) }));
  const posts = range(count).map((id) => ({
    id,
    title: `Post ${id}`,
    author_id: 1 + ((id * 7) % 20),
  }));
  const tags = range(10).map((id) => ({ id, name: `tag-${id}` }));
  const postTags = posts.flatMap((p) =>
    [0, 1, 2].map((k) => ({ post_id: p.id, tag_id: 1 + ((p.id + k * 3) % 10) })),
  );
  const byId = (rows) => new Map(rows.map((row) => [row.id, row]));
  const users_ = byId(users);
  const organisations_ = byId(organisations);
  const tags_ = byId(tags);
  const tagsOf = (postId) =>
    postTags
      .filter((pt) => pt.post_id === postId)
      .map((pt) => tags_.get(pt.tag_id))
      .sort((a, b) => a.id - b.id);
  let statements = 0;
  const answer = (sql, params) => {
    const [p] = params;
    if (sql.startsWith('SELECT * FROM posts')) return posts.slice(0, p);
    if (sql === 'SELECT * FROM users WHERE id = ANY($1)') return p.map((id) => users_.get(id));
    if (sql === 'SELECT * FROM users WHERE id = $1') return [users_.get(p)];
    if (sql === 'SELECT * FROM organisations WHERE id = ANY($1)') {
      return p.map((id) => organisations_.get(id));
    }
    if (sql === 'SELECT * FROM organisations WHERE id = $1') return [organisations_.get(p)];
    if (sql.includes('pt.post_id = ANY($1)')) {
      return p.flatMap((postId) => tagsOf(postId).map((t) => ({ post_id: postId, ...t })));
    }
    if (sql.includes('pt.post_id = $1')) return tagsOf(p);
    throw new Error(`memoryDatabase: unexpected statement ${sql}`);
  };
  return {
    async query(sql, params = []) {
      statements++;
      return answer(sql.replace(/\s+/g, ' ').trim(), params);
    },
    statements: () => statements,
    close: async () => {},
  };
}
