// GraphQL over HTTP with batched getters:
//
//   node examples/graphql/server.js            # on port 4000
//   MODE=plain node examples/graphql/server.js # one query per row, for comparison
//   curl -s localhost:4000/graphql -H 'content-type: application/json' \
//     -d '{"query":"{ posts(first: 3) { title author { name organisation { name } } tags { name } } }"}'
import { createGraphQLServer } from './app.js';
import { openDatabase } from './db.js';

const port = Number(process.env.PORT ?? 4000);
const MODES = ['batched', 'dataloader', 'plain'];
const mode = /** @type {'batched' | 'dataloader' | 'plain'} */ (process.env.MODE ?? 'batched');
if (!MODES.includes(mode)) {
  console.error(`MODE must be one of ${MODES.join(', ')}, got ${JSON.stringify(mode)}.`);
  process.exit(1);
}
const db = await openDatabase();
const server = createGraphQLServer({ db, mode, serverTiming: true });
server.listen(port, '127.0.0.1', () => {
  console.log(`GraphQL (${mode}) on http://127.0.0.1:${port}/graphql`);
});
