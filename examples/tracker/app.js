// The HTTP side: a Fastify app with one request cache per request, and on every page
// the number of SQL queries it ran and the cache's counts (headers and footer).
import { getContextCache, withNoCacheContext } from 'context-cache';
import { contextCache } from 'context-cache/fastify';
import Fastify from 'fastify';
import { html, htmlText } from './html.js';
import { getJob, listJobs, startExport } from './jobs.js';
import { counted } from './metrics.js';
import {
  issueListPage,
  issuePage,
  jobPage,
  jobsPage,
  layout,
  loadChrome,
  notFound,
  STYLE,
  userPage,
} from './pages.js';
import { getUserById, renameUser } from './repositories.js';
import { sharedKind } from './shared.js';

/** @typedef {import('./pages.js').Page & { refresh?: number }} Page */
/** @typedef {import('fastify').FastifyRequest} Request */
/** @typedef {import('fastify').FastifyReply} Reply */

/**
 * @param {Request} request
 * @param {boolean} nocache
 * @returns {string} this page's address with `nocache` toggled
 */
function toggleUrl(request, nocache) {
  const url = new URL(request.url, 'http://x');
  if (nocache) url.searchParams.delete('nocache');
  else url.searchParams.set('nocache', '1');
  return url.pathname + url.search;
}

/**
 * Render a page, count its queries, and send it with the counts in headers and footer.
 * `?nocache=1` renders the same page with caching off.
 * @param {Request} request
 * @param {Reply} reply
 * @param {() => Promise<Page>} render
 * @param {{ self?: string }} [options] `self`: the GET address of this page (for a POST)
 */
async function sendPage(request, reply, render, options = {}) {
  const query = /** @type {Record<string, string | undefined>} */ (request.query ?? {});
  const nocache = query.nocache === '1';
  const started = performance.now();
  const run = async () => {
    const page = await render();
    const chrome = await loadChrome();
    return { page, chrome, stats: getContextCache()?.stats() };
  };
  const { result, queries } = await counted(() => (nocache ? withNoCacheContext(run) : run()));
  const { page, chrome, stats } = result;
  const ms = (performance.now() - started).toFixed(1);
  const statsText = stats
    ? `hits=${stats.hits} joins=${stats.joins} misses=${stats.misses} loads=${stats.loads}`
    : 'off';
  const other = options.self ?? toggleUrl(request, nocache);
  const footer = html`<footer class="stats">This page ran <strong>${plural(queries, 'SQL query', 'SQL queries')}</strong> in ${ms} ms ·
${
  stats
    ? html`request cache: <strong>${stats.hits + stats.joins}</strong> of ${plural(stats.hits + stats.joins + stats.misses, 'lookup')} served from the cache (${plural(stats.hits, 'hit')}, ${plural(stats.joins, 'join')}), ${plural(stats.loads, 'load')} · shared tier: ${sharedKind} ·
<a href="${options.self ? `${other}?nocache=1` : other}">same page without the cache</a>`
    : html`cache <strong>off</strong> (no request cache, no shared tier) · <a href="${options.self ?? other}">same page with the cache</a>`
}</footer>`;
  reply
    .code(page.status ?? 200)
    .header('content-type', 'text/html; charset=utf-8')
    .header('x-sql-queries', String(queries))
    .header('x-cache-stats', statsText);
  return htmlText(
    layout({ title: page.title, body: page.body, footer, refresh: page.refresh, chrome }),
  );
}

/** @param {number} n @param {string} one @param {string} [many] */
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** @param {Request} request */
const wantsJson = (request) => (request.headers.accept ?? '').includes('application/json');

/** @param {import('./jobs.js').Job} job */
function jobJson(job) {
  const { csv: _csv, ...rest } = job;
  return { ...rest, location: `/jobs/${job.id}` };
}

/**
 * Build the app (not listening yet).
 * @param {{ logRequests?: boolean }} [options]
 */
export async function createApp(options = {}) {
  const app = Fastify({ logger: false, forceCloseConnections: 'idle' });

  // One request cache per request, for the whole app, ended when the response is sent.
  // serverTiming adds the counts to a Server-Timing header (visible in browser devtools).
  await app.register(contextCache, { serverTiming: true });

  // HTML forms post urlencoded bodies; parse them without another dependency.
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string', bodyLimit: 16_384 },
    (_request, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(String(body))));
    },
  );

  if (options.logRequests) {
    app.addHook('onResponse', (request, reply, done) => {
      const queries = reply.getHeader('x-sql-queries');
      const cache = reply.getHeader('x-cache-stats');
      console.log(
        `${request.method} ${request.url} ${reply.statusCode}${queries === undefined ? '' : ` · ${queries} queries · cache ${cache}`}`,
      );
      done();
    });
  }

  app.get('/style.css', (_request, reply) => {
    reply.header('content-type', 'text/css; charset=utf-8').header('cache-control', 'max-age=60');
    return STYLE;
  });
  app.get('/favicon.ico', (_request, reply) => reply.code(204).send());

  app.get('/', (request, reply) =>
    sendPage(request, reply, () => issueListPage(/** @type {any} */ (request.query))),
  );
  app.get('/issues/:id', (request, reply) =>
    sendPage(request, reply, () => issuePage(/** @type {any} */ (request.params).id)),
  );
  app.get('/users/:id', (request, reply) =>
    sendPage(request, reply, () => userPage(/** @type {any} */ (request.params).id)),
  );

  // The write: rename a user, then render their page in the same request. The page
  // reads the user through the cached getter many times; the invalidation is what
  // makes it show the new name rather than the one cached before the write.
  app.post('/users/:id/rename', (request, reply) => {
    const id = Number(/** @type {any} */ (request.params).id);
    const body = /** @type {Record<string, unknown> | undefined} */ (request.body);
    const name = typeof body?.name === 'string' ? body.name.trim().slice(0, 80) : '';
    return sendPage(
      request,
      reply,
      async () => {
        const before = Number.isSafeInteger(id) ? await getUserById(id) : null;
        if (before === null) return notFound('user');
        if (name === '') {
          const page = await userPage(String(id), {
            notice: html`<p class="notice warn">A name cannot be empty.</p>`,
          });
          return { ...page, status: 400 };
        }
        const { sharedError } = await renameUser(id, name);
        const notice = sharedError
          ? html`<p class="notice warn">Renamed <strong>${before.name}</strong> to <strong>${name}</strong>, but the shared cache could not be told (${sharedError.message}): other instances may show the old name for up to a minute.</p>`
          : html`<p class="notice">Renamed <strong>${before.name}</strong> to <strong>${name}</strong>. This page was rendered by the request that made the change: the user's cache entry was invalidated, so it reads its own write.</p>`;
        return userPage(String(id), { notice });
      },
      { self: `/users/${id}` },
    );
  });

  app.get('/jobs', (request, reply) => sendPage(request, reply, () => jobsPage(listJobs())));

  // Start a job: 202 Accepted with its address; the work goes on after this response.
  app.post('/jobs', (request, reply) => {
    const job = startExport();
    reply.code(202).header('location', `/jobs/${job.id}`);
    if (wantsJson(request)) return jobJson(job);
    return sendPage(request, reply, async () => ({ ...(await jobPage(job)), status: 202 }), {
      self: `/jobs/${job.id}`,
    });
  });

  app.get('/jobs/:id', (request, reply) => {
    const job = getJob(/** @type {any} */ (request.params).id);
    if (wantsJson(request)) {
      if (job === undefined) return reply.code(404).send({ error: 'no such job' });
      return jobJson(job);
    }
    return sendPage(request, reply, () => jobPage(job));
  });

  app.get('/jobs/:id/export.csv', (request, reply) => {
    const job = getJob(/** @type {any} */ (request.params).id);
    if (job?.csv == null) return reply.code(404).send('no such export\n');
    reply
      .header('content-type', 'text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="issues-${job.id}.csv"`);
    return job.csv;
  });

  app.setNotFoundHandler((request, reply) =>
    sendPage(request, reply, async () => notFound('page')),
  );

  return app;
}
