// One GraphQL server of the example (examples/graphql) in its own process, for
// bench/graphql.mjs: `node graphql-server.mjs MODE` prints `READY <port>` once it listens.
import { createGraphQLServer } from '../../examples/graphql/app.js';
import { openDatabase } from '../../examples/graphql/db.js';
import { memoryDatabase } from '../lib/graphql-memory.mjs';

const [mode, source] = process.argv.slice(2);
const db = source === 'memory' ? memoryDatabase() : await openDatabase();
const server = createGraphQLServer({ db, mode });
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => db.close().then(() => process.exit(0)));
});
