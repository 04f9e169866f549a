// The demo: an issue tracker on a real database, with the request cache on every page.
//
//   npm start                                  # embedded PGlite, seeded, on port 3000
//   PORT=8080 npm start
//   DATABASE_URL=postgres://localhost/tracker npm start   # a real PostgreSQL (seeded if empty)
//   REDIS_URL=redis://localhost:6379 npm start            # shared tier in Redis
//
// Stops gracefully on SIGINT/SIGTERM: stops accepting requests, lets the ones in flight
// finish, waits for background jobs (drainBackground), then closes the database.
import { drainBackground } from 'context-cache';
import { createApp } from './app.js';
import { openDatabase } from './db.js';
import { useDatabase } from './repositories.js';
import { migrateAndSeed } from './seed.js';
import { shared, sharedKind } from './shared.js';

const port = Number(process.env.PORT ?? 3000);
const host = process.env.HOST ?? '127.0.0.1';
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`PORT must be a port number (0 to 65535), got ${JSON.stringify(process.env.PORT)}`);
  process.exit(2);
}

const started = performance.now();
const db = await openDatabase({ url: process.env.DATABASE_URL || undefined });
const { seeded, rows } = await migrateAndSeed(db);
useDatabase(db);
const app = await createApp({ logRequests: process.env.LOG_REQUESTS !== '0' });
try {
  await app.listen({ port, host });
} catch (err) {
  const code = /** @type {NodeJS.ErrnoException} */ (err).code;
  console.error(
    code === 'EADDRINUSE'
      ? `Port ${port} on ${host} is in use: start with another PORT, e.g. PORT=3001 npm start`
      : `Cannot listen on ${host}:${port}: ${/** @type {Error} */ (err).message}`,
  );
  await db.close();
  process.exit(1);
}

const address = app.server.address();
const actualPort = typeof address === 'object' && address !== null ? address.port : port;
const where = db.kind === 'pglite' ? 'embedded PGlite' : 'PostgreSQL';
const seedNote = seeded ? `seeded ${rows} rows` : 'existing data';
console.log(
  `Tracker on ${where} (${seedNote}, shared tier: ${sharedKind}) ready in ${Math.round(performance.now() - started)} ms`,
);
console.log(`Listening on http://${host.includes(':') ? `[${host}]` : host}:${actualPort}/`);

let stopping = false;
/** @param {NodeJS.Signals} signal */
async function shutdown(signal) {
  if (stopping) {
    console.log(`${signal} again: exiting now`);
    process.exit(1);
  }
  stopping = true;
  console.log(`${signal}: closing the server, then waiting for background jobs`);
  await app.close();
  const { pending } = await drainBackground({ timeout: 10_000 });
  console.log(
    pending.length === 0
      ? 'Background jobs finished'
      : `Stopped background jobs still running after 10 s: ${pending.join(', ')}`,
  );
  await shared.close();
  await db.close();
  console.log('Bye');
  process.exit(0);
}
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.on(signal, () => {
    shutdown(signal).catch((err) => {
      console.error('Shutdown failed:', err);
      process.exit(1);
    });
  });
}
