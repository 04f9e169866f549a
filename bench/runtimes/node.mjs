// Node: serves the scenarios on 127.0.0.1 (@hono/node-server's adapter for a fetch
// handler) and prints `LISTEN <port>`; stops when stdin closes.
import { serve } from '@hono/node-server';
import { handle } from './scenarios.mjs';

const server = serve({ fetch: handle, port: 0, hostname: '127.0.0.1' }, ({ port }) =>
  console.log(`LISTEN ${port} Node ${process.versions.node}`),
);
process.stdin.on('data', () => {});
process.stdin.on('end', () => server.close(() => process.exit(0)));
