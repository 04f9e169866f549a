/**
 * Deno: a Hono app behind the adapter, served as Hono's docs show (`Deno.serve(app.fetch)`),
 * whose handlers never ask for the request's signal. Prints `LISTEN <port>`; stops when
 * its stdin closes. Started by deno.test.ts, which checks Deno printed nothing about it.
 */

import { Hono } from 'hono';

const dist = new URL('../../dist/', import.meta.url);
const lib = await import(new URL('index.js', dist).href);
const { contextCache } = await import(new URL('hono.js', dist).href);

const app = new Hono();
app.use(contextCache());
app.get('/user/:id', async (c) => {
  const id = c.req.param('id');
  const user = await lib.getWithContextCache('user', id, async (key: string) => ({ id: key }));
  return c.json(user);
});

const server = Deno.serve(
  { port: 0, hostname: '127.0.0.1', onListen: ({ port }) => console.log(`LISTEN ${port}`) },
  app.fetch,
);

process.stdin.on('data', () => {});
process.stdin.on('end', async () => {
  await server.shutdown();
  Deno.exit(0);
});
