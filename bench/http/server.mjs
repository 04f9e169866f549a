// One benchmark server, in a process of its own (the load generator runs in another).
// Configured by one JSON argument:
//   { framework: 'fastify' | 'express', contender: 'none' | 'context-cache' | 'hand-rolled'
//     | 'request-context' | 'dataloader' | 'empty-hook' (Fastify only), calls?: number, store?: 'latency' | 'pglite',
//     maxEntries?: number }
// Routes: GET /ping, GET /page (a page of `calls` getter calls), GET /__stats (queries
// run so far), GET /__heap (heap used after a forced GC; needs --expose-gc), GET /__cpu
// (the process's CPU time so far, µs, from process.cpuUsage()), GET /fill?n=
// (context-cache only: sets n entries in the request cache, reports its size and heap).
// Listens on 127.0.0.1, port 0, and prints `READY <port>` once it accepts connections.
import dataloader from '../contenders/dataloader.mjs';
import handRolled from '../contenders/hand-rolled.mjs';
import { renderPage } from '../lib/page.mjs';
import { latencyStore, pgliteStore } from '../lib/store.mjs';

const config = JSON.parse(process.argv[2] ?? '{}');
const { framework, contender, calls = 20, maxEntries } = config;

const store =
  config.store === 'pglite' ? await pgliteStore() : latencyStore({ latency: config.latency ?? 1 });
const loadUser = (id) => store.query('users', id);
const loadRepo = (id) => store.query('repos', id);

async function getters() {
  switch (contender) {
    case 'context-cache': {
      const { getWithContextCache } = await import('context-cache');
      return [
        (id) => getWithContextCache('user', id, loadUser),
        (id) => getWithContextCache('repo', id, loadRepo),
      ];
    }
    case 'hand-rolled':
      return [handRolled.getter('user', loadUser), handRolled.getter('repo', loadRepo)];
    case 'dataloader':
      return [dataloader.getter('user', loadUser), dataloader.getter('repo', loadRepo)];
    default:
      return [loadUser, loadRepo];
  }
}
const [getUser, getRepo] = await getters();
const page = () => renderPage(calls, getUser, getRepo);

const heap = () => {
  globalThis.gc?.();
  globalThis.gc?.();
  return process.memoryUsage().heapUsed;
};

async function fill(n) {
  const { getContextCache, setContextData } = await import('context-cache');
  const cache = getContextCache();
  if (cache === undefined) throw new Error('/fill needs the context-cache adapter');
  for (let i = 0; i < n; i++) setContextData('fill', i, { i, payload: `row ${i}` });
  return JSON.stringify({ size: cache.size, evictions: cache.stats().evictions, heap: heap() });
}

const handlers = {
  '/ping': () => 'pong',
  '/page': page,
  '/__stats': () => JSON.stringify({ queries: store.queries }),
  '/__heap': () => JSON.stringify({ heap: heap() }),
  '/__cpu': () => {
    const { user, system } = process.cpuUsage();
    return JSON.stringify({ cpu: user + system });
  },
};

let close;
if (framework === 'fastify') {
  const { default: Fastify } = await import('fastify');
  const app = Fastify({ logger: false });
  if (contender === 'context-cache') {
    const { contextCache } = await import('context-cache/fastify');
    await app.register(contextCache, maxEntries === undefined ? {} : { maxEntries });
  } else if (contender === 'request-context') {
    const { fastifyRequestContext } = await import('@fastify/request-context');
    await app.register(fastifyRequestContext);
  } else if (contender === 'empty-hook') {
    // An onRequest hook that does nothing: what any plugin with a hook costs in Fastify.
    app.addHook('onRequest', (_request, _reply, done) => done());
  } else if (contender === 'hand-rolled' || contender === 'dataloader') {
    // als.run(new Map(), done), as @fastify/request-context opens its scope.
    const scoped = contender === 'hand-rolled' ? handRolled : dataloader;
    app.addHook('onRequest', (_request, _reply, done) => scoped.request(done));
  }
  for (const [path, handler] of Object.entries(handlers)) {
    app.get(path, async (_request, reply) => {
      reply.type(path === '/ping' ? 'text/plain' : 'application/json');
      return handler();
    });
  }
  app.get('/fill', async (request, reply) => {
    reply.type('application/json');
    return fill(Number(request.query.n));
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  console.log(`READY ${app.server.address().port}`);
  close = () => app.close();
} else if (framework === 'express') {
  const { default: express } = await import('express');
  const app = express();
  if (contender === 'context-cache') {
    const { contextCache } = await import('context-cache/express');
    app.use(contextCache(maxEntries === undefined ? {} : { maxEntries }));
  } else if (contender === 'hand-rolled' || contender === 'dataloader') {
    const scoped = contender === 'hand-rolled' ? handRolled : dataloader;
    app.use((_req, _res, next) => scoped.request(next));
  } else if (contender !== 'none') {
    throw new Error(`express has no contender ${contender}`);
  }
  for (const [path, handler] of Object.entries(handlers)) {
    app.get(path, async (_req, res, next) => {
      try {
        res.type(path === '/ping' ? 'text/plain' : 'application/json').send(await handler());
      } catch (err) {
        next(err);
      }
    });
  }
  app.get('/fill', async (req, res, next) => {
    try {
      res.type('application/json').send(await fill(Number(req.query.n)));
    } catch (err) {
      next(err);
    }
  });
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  console.log(`READY ${server.address().port}`);
  close = () =>
    new Promise((resolve) => {
      server.closeIdleConnections();
      server.close(resolve);
      server.closeAllConnections();
    });
} else {
  throw new Error(`unknown framework ${framework}`);
}

let closing = false;
const stop = async () => {
  if (closing) return;
  closing = true;
  await close();
  await store.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The parent's end of stdin closing (it exited or crashed) stops the server too.
process.stdin.on('end', stop).resume();
