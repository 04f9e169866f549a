// Bun: serves the scenarios on 127.0.0.1 and prints `LISTEN <port>`; stops when stdin closes.
import { handle } from './scenarios.mjs';

const server = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: handle });
console.log(`LISTEN ${server.port} Bun ${Bun.version}`);
process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
