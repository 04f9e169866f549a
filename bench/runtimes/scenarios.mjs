// What bench/runtimes.mjs times on every runtime, written without anything of the
// runtime's own: an awaited hit, and a whole Hono request through `app.fetch` (three
// getter calls, body read to the end), each with context-cache and with the hand-rolled
// AsyncLocalStorage map of contenders/hand-rolled.mjs. Loaders return ready values.
import { Hono } from 'hono';
import { contextCache } from '../../dist/hono.js';
import * as lib from '../../dist/index.js';
import { als, cached } from '../contenders/hand-rolled.mjs';

const loader = (key) => ({ id: key });

function app(middleware, get) {
  const hono = new Hono();
  if (middleware) hono.use(middleware);
  hono.get('/users/:id', async (c) => {
    const id = Number(c.req.param('id'));
    const [a, b] = await Promise.all([get(id), get(id)]);
    const viewer = await get(id);
    return c.json({ same: a === b && b === viewer });
  });
  return hono;
}

const ours = app(contextCache(), (id) => lib.getWithContextCache('user', id, loader));
const handRolled = app(
  (_c, next) => als.run(new Map(), next),
  (id) => cached('user', id, loader),
);
const usersRequest = () => new Request('http://bench.local/users/1');

/**
 * `n` requests through `app.fetch`, each handed `args`: what the runtime's server handed
 * the outer request (Deno's serve info, Bun's server, Workers' env and ctx), as an app
 * served the way Hono's docs show gets them.
 */
async function honoRequests(target, n, args) {
  for (let i = 0; i < n; i++) {
    const res = await target.fetch(usersRequest(), ...args);
    await res.text();
  }
}

/** Scenario name → run it `n` times. */
export const scenarios = {
  'awaited hit: context-cache': (n) =>
    lib.withCacheContext(async () => {
      await lib.getWithContextCache('user', 1, loader);
      for (let i = 0; i < n; i++) await lib.getWithContextCache('user', 1, loader);
    }),
  'awaited hit: hand-rolled map': (n) =>
    als.run(new Map(), async () => {
      await cached('user', 1, loader);
      for (let i = 0; i < n; i++) await cached('user', 1, loader);
    }),
  'Hono request: context-cache': (n, args) => honoRequests(ours, n, args),
  'Hono request: hand-rolled map': (n, args) => honoRequests(handRolled, n, args),
};

/** The `/run?scenario=…&n=…` endpoint every runtime's server answers. */
export async function handle(incoming, env, ctx) {
  // On Node, @hono/node-server's env holds the outer request's Node response, which no
  // inner request may watch: those get nothing, as with `app.fetch(request)`.
  const outer = typeof env === 'object' && env !== null && 'outgoing' in env;
  const args = env === undefined || outer ? [] : ctx === undefined ? [env] : [env, ctx];
  const url = new URL(incoming.url);
  const run = scenarios[url.searchParams.get('scenario')];
  if (run === undefined) return new Response('unknown scenario', { status: 404 });
  // A check before timing: the apps answer what they should.
  for (const target of [ours, handRolled]) {
    const body = await (await target.fetch(usersRequest())).json();
    if (body.same !== true) return new Response('wrong answer', { status: 500 });
  }
  await run(Number(url.searchParams.get('n') ?? '0'), args);
  return new Response('ok');
}
