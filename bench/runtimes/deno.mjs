// Deno: serves the scenarios on 127.0.0.1 and prints `LISTEN <port>`; stops when stdin closes.
import { handle } from './scenarios.mjs';

Deno.serve(
  {
    port: 0,
    hostname: '127.0.0.1',
    onListen: ({ port }) => console.log(`LISTEN ${port} Deno ${Deno.version.deno}`),
  },
  handle,
);
process.stdin.on('data', () => {});
process.stdin.on('end', () => Deno.exit(0));
