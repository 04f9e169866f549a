// The HTTP side: a Fastify app with one request cache per request. Every page carries
// a panel comparing the SQL queries it takes with the request cache and the shared
// tier, with the request cache alone, and with no cache (headers say the same).
import { getContextCache, withCacheContext, withNoCacheContext } from 'context-cache';
import { contextCache } from 'context-cache/fastify';
import Fastify from 'fastify';
import { html, htmlText } from './html.js';
import { getJob, listJobs, startExport } from './jobs.js';
import { counted, inMode, MODES } from './metrics.js';
import {
  explainPanel,
  issueListPage,
  issuePage,
  jobPage,
  jobsPage,
  layout,
  loadChrome,
  notFound,
  rowId,
  STYLE,
  userPage,
} from './pages.js';
import { getUserById, renameUser } from './repositories.js';
import { sharedKind } from './shared.js';

/** @typedef {import('./pages.js').Page} Page */
/** @typedef {import('./metrics.js').Mode} Mode */
/** @typedef {import('fastify').FastifyRequest} Request */
/** @typedef {import('fastify').FastifyReply} Reply */

/**
 * The mode this request asks for: `?cache=request`, `?cache=none` (or `?nocache=1`),
 * else the default, request cache and shared tier.
 * @param {Request} request
 * @returns {Mode}
 */
function modeOf(request) {
  const query = /** @type {Record<string, string | undefined>} */ (request.query ?? {});
  if (query.nocache === '1' || query.cache === 'none') return 'none';
  if (query.cache === 'request') return 'request';
  return 'shared';
}

/**
 * @param {string} address a page's address, maybe with a query
 * @param {Mode} mode
 * @returns {string} the same page's address in `mode`
 */
function modeUrl(address, mode) {
  const url = new URL(address, 'http://x');
  url.searchParams.delete('nocache');
  url.searchParams.delete('cache');
  if (mode !== 'shared') url.searchParams.set('cache', mode);
  return url.pathname + url.search;
}

/**
 * Render a page in one mode with a query counter of its own. `fresh`: in a request cache
 * of its own rather than the request's (for the comparison renders, so they start cold
 * like a request of their own would).
 * @template {import('./pages.js').Page} P
 * @param {Mode} mode
 * @param {() => Promise<P>} render
 * @param {boolean} fresh
 */
function renderIn(mode, render, fresh) {
  const run = async () => {
    const page = await render();
    const chrome = await loadChrome();
    return { page, chrome, stats: getContextCache()?.stats() };
  };
  return inMode(mode, () =>
    counted(() => {
      if (mode === 'none') return withNoCacheContext(run);
      return fresh ? withNoCacheContext(() => withCacheContext(run)) : run();
    }),
  );
}

/**
 * Render a page in the mode the request asks for, then render it again in the two other
 * modes (thrown away, only counted), and send it with the three counts in the panel and
 * in headers: `x-sql-queries` and `x-cache-stats` for this response, `x-sql-queries-by-mode`
 * for all three.
 * @param {Request} request
 * @param {Reply} reply
 * @param {() => Promise<Page>} render
 * @param {{ self?: string, replay?: () => Promise<Page> }} [options] `self`: the GET
 *   address of this page (for a POST); `replay`: what the comparison renders run instead
 *   of `render` when `render` writes (the page after the write, without the write)
 */
async function sendPage(request, reply, render, options = {}) {
  const mode = modeOf(request);
  const started = performance.now();
  const own = await renderIn(mode, render, false);
  const ms = performance.now() - started;
  const { page, chrome, stats } = own.result;
  /** @type {Partial<Record<Mode, import('./pages.js').ModeCount>>} */
  const counts = { [mode]: { queries: own.queries, stats } };
  for (const other of MODES) {
    if (other === mode) continue;
    const { result, queries } = await renderIn(other, options.replay ?? render, true);
    counts[other] = { queries, stats: result.stats };
  }
  const address = options.self ?? request.url;
  const panel = explainPanel({
    mode,
    ms,
    sharedKind,
    replayed: options.replay !== undefined,
    rows: MODES.map((m) => ({
      mode: m,
      href: modeUrl(address, m),
      ...(counts[m] ?? { queries: 0, stats: undefined }),
    })),
  });
  reply
    .code(page.status ?? 200)
    .header('content-type', 'text/html; charset=utf-8')
    .header('x-sql-queries', String(own.queries))
    .header(
      'x-cache-stats',
      stats
        ? `hits=${stats.hits} joins=${stats.joins} misses=${stats.misses} loads=${stats.loads}`
        : 'off',
    )
    .header('x-sql-queries-by-mode', MODES.map((m) => `${m}=${counts[m]?.queries}`).join(' '));
  return htmlText(
    layout({
      title: page.title,
      body: page.body,
      panel,
      refresh: page.refresh,
      chrome,
    }),
  );
}

/** @param {Request} request */
const wantsJson = (request) => (request.headers.accept ?? '').includes('application/json');

/** @param {import('./jobs.js').Job} job */
function jobJson(job) {
  const { csv, ...rest } = job;
  return {
    ...rest,
    location: `/jobs/${job.id}`,
    download: csv === null ? null : `/jobs/${job.id}/export.csv`,
  };
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
    const id = rowId(/** @type {any} */ (request.params).id);
    const body = /** @type {Record<string, unknown> | undefined} */ (request.body);
    const name = typeof body?.name === 'string' ? body.name.trim().slice(0, 80) : '';
    return sendPage(
      request,
      reply,
      async () => {
        const before = id > 0 ? await getUserById(id) : null;
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
      { self: `/users/${id}`, replay: () => userPage(String(id)) },
    );
  });

  app.get('/jobs', (request, reply) => sendPage(request, reply, () => jobsPage(listJobs())));

  // Start a job. A form gets Post/Redirect/Get: 303 to the job's page, so reloading that
  // page polls the job instead of starting another. An API client (Accept: JSON) gets
  // 202 Accepted with the job and its address. Either way the work goes on after this
  // response.
  app.post('/jobs', (request, reply) => {
    const job = startExport();
    const location = `/jobs/${job.id}`;
    if (wantsJson(request)) return reply.code(202).header('location', location).send(jobJson(job));
    return reply.redirect(location, 303);
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
