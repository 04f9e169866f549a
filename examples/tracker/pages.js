// The pages. Small helpers ask the getters for what they show (a user link, a repo
// name, a permission badge, a date in the configured format), the way templates and
// helpers in a real app do, without knowing about each other: so one page asks for the
// same user, repository and setting many times, and the request cache turns those
// calls into one query each.
import { html } from './html.js';
import {
  getIssue,
  getPermission,
  getRepoById,
  getSetting,
  getUserById,
  listComments,
  listIssues,
  listRepoIdsByOwner,
} from './repositories.js';

/** @typedef {import('./html.js').Html} Html */
/** @typedef {import('./repositories.js').Issue} Issue */
/**
 * @typedef {{ title: string, body: Html, status?: number, refresh?: number }} Page
 *   `refresh`: reload every that many seconds when JavaScript is off
 */
/** @typedef {import('./metrics.js').Mode} Mode */
/**
 * @typedef {{ queries: number, stats: import('context-cache').CacheStats | undefined }} ModeCount
 */

/** The signed-in user of the demo (there is no login: everyone is user 1, an owner). */
export const VIEWER_ID = 1;

/** @param {Date} date */
async function formatDate(date) {
  const format = await getSetting('ui.date_format');
  if (format === 'iso') return date.toISOString();
  return date.toISOString().slice(0, 10);
}

/** @param {number | null} id */
async function userLink(id) {
  if (id === null) return html`<span class="muted">nobody</span>`;
  const user = await getUserById(id);
  if (user === null) return html`<span class="muted">unknown user</span>`;
  return html`<a href="/users/${user.id}" title="@${user.login}">${user.name}</a>`;
}

/** @param {number} id */
async function repoName(id) {
  const repo = await getRepoById(id);
  if (repo === null) return 'unknown';
  const owner = await getUserById(repo.ownerId);
  return `${owner?.login ?? 'unknown'}/${repo.name}`;
}

/** @param {number} userId @param {number} repoId */
async function permissionBadge(userId, repoId) {
  const level = await getPermission([userId, repoId]);
  return html`<span class="badge ${level}">${level}</span>`;
}

/** @param {string} state */
const stateBadge = (state) => html`<span class="state ${state}">${state}</span>`;

/** One issue as a table row: title, repository, author, assignee, your access, comments, date. */
async function issueRow(/** @type {Issue} */ issue) {
  const [repo, author, assignee, access, updated, showAssignee, showComments] = await Promise.all([
    repoName(issue.repoId),
    userLink(issue.authorId),
    userLink(issue.assigneeId),
    permissionBadge(VIEWER_ID, issue.repoId),
    formatDate(issue.updatedAt),
    getSetting('ui.show_assignee'),
    getSetting('ui.show_comment_counts'),
  ]);
  return html`<tr>
  <td>${stateBadge(issue.state)}</td>
  <td class="title"><a href="/issues/${issue.id}">${issue.title}</a> <span class="muted">#${issue.number}</span></td>
  <td class="repo">${repo}</td>
  <td class="who">${author}</td>
  ${showAssignee === 'true' ? html`<td class="who">${assignee}</td>` : ''}
  <td>${access}</td>
  ${showComments === 'true' ? html`<td class="num">${issue.comments}</td>` : ''}
  <td class="date">${updated}</td>
</tr>`;
}

/** @param {Issue[]} issues */
async function issueTable(issues) {
  const [rows, showAssignee, showComments] = await Promise.all([
    Promise.all(issues.map(issueRow)),
    getSetting('ui.show_assignee'),
    getSetting('ui.show_comment_counts'),
  ]);
  return html`<div class="table-wrap"><table class="issues">
<thead><tr><th>State</th><th>Issue</th><th>Repository</th><th>Author</th>
${showAssignee === 'true' ? html`<th>Assignee</th>` : ''}<th>Your access</th>
${showComments === 'true' ? html`<th class="num">Comments</th>` : ''}<th>Updated</th></tr></thead>
<tbody>${rows}</tbody>
</table></div>`;
}

/** @param {string} value @param {number} fallback */
function positiveInt(value, fallback) {
  const n = Number(value);
  return Number.isSafeInteger(n) && n > 0 ? n : fallback;
}

/** The largest id the tables' `int` columns hold. */
const MAX_ID = 2_147_483_647;

/**
 * `value` (a path parameter) as a row id, or 0, which no row has: larger numbers are no
 * row either, rather than a query the database refuses.
 * @param {unknown} value
 */
export function rowId(value) {
  const n = positiveInt(value, 0);
  return n <= MAX_ID ? n : 0;
}

/**
 * The issue list: every row shows author, repository and your permission on it.
 * @param {{ page?: string }} query
 * @returns {Promise<Page>}
 */
export async function issueListPage(query) {
  const perPage = positiveInt((await getSetting('ui.issues_per_page')) ?? '', 50);
  const page = positiveInt(query.page ?? '1', 1);
  const { issues, total } = await listIssues({ limit: perPage, offset: (page - 1) * perPage });
  const pages = Math.max(1, Math.ceil(total / perPage));
  const table = await issueTable(issues);
  return {
    title: page === 1 ? 'Issues' : `Issues, page ${page}`,
    body: html`<h1>Issues</h1>
<p class="muted">${total} issues, most recently updated first. Page ${page} of ${pages}.</p>
${table}
<nav class="pager">
  ${page > 1 ? html`<a href="/?page=${page - 1}">&larr; Newer</a>` : html`<span></span>`}
  ${page < pages ? html`<a href="/?page=${page + 1}">Older &rarr;</a>` : ''}
</nav>`,
  };
}

/**
 * One issue with its comments; each commenter carries a badge of their access to the repository.
 * @param {string} idParam
 * @returns {Promise<Page>}
 */
export async function issuePage(idParam) {
  const issue = await getIssue(rowId(idParam));
  if (issue === null) return notFound('issue');
  const [repo, author, assignee, opened, comments] = await Promise.all([
    repoName(issue.repoId),
    userLink(issue.authorId),
    userLink(issue.assigneeId),
    formatDate(issue.createdAt),
    listComments(issue.id),
  ]);
  const thread = await Promise.all(
    comments.map(async (comment) => {
      const [who, badge, when] = await Promise.all([
        userLink(comment.authorId),
        permissionBadge(comment.authorId, issue.repoId),
        formatDate(comment.createdAt),
      ]);
      return html`<li class="comment"><div class="meta">${who} ${badge} <span class="muted">commented on ${when}</span></div>
<p>${comment.body}</p></li>`;
    }),
  );
  const participantIds = [...new Set([issue.authorId, ...comments.map((c) => c.authorId)])];
  const participants = await Promise.all(participantIds.map(userLink));
  return {
    title: `${issue.title} · ${repo}#${issue.number}`,
    body: html`<p class="crumbs"><a href="/">Issues</a> / ${repo}</p>
<h1>${issue.title} <span class="muted">#${issue.number}</span></h1>
<p>${stateBadge(issue.state)} ${author} opened this issue on ${opened} · assigned to ${assignee} ·
your access: ${await permissionBadge(VIEWER_ID, issue.repoId)}</p>
<div class="columns">
  <div>
    <div class="issue-body"><p>${issue.body}</p></div>
    <h2>${comments.length} ${comments.length === 1 ? 'comment' : 'comments'}</h2>
    <ul class="thread">${thread}</ul>
  </div>
  <aside><h2>Participants</h2><ul class="plain">${participants.map((p) => html`<li>${p}</li>`)}</ul></aside>
</div>`,
  };
}

/**
 * A user: their name (with a rename form), their repositories and their latest issues.
 * @param {string} idParam
 * @param {{ notice?: Html }} [options] shown above the page (after a rename)
 * @returns {Promise<Page>}
 */
export async function userPage(idParam, options = {}) {
  const id = rowId(idParam);
  const user = await getUserById(id);
  if (user === null) return notFound('user');
  const [repoIds, latest, joined] = await Promise.all([
    listRepoIdsByOwner(id),
    listIssues({ limit: 20, offset: 0, authorId: id }),
    formatDate(new Date(user.createdAt)),
  ]);
  const repos = await Promise.all(
    repoIds.map(async (repoId) => {
      const repo = await getRepoById(repoId);
      return html`<li><strong>${await repoName(repoId)}</strong> <span class="muted">${repo?.description}</span></li>`;
    }),
  );
  const table =
    latest.issues.length > 0
      ? await issueTable(latest.issues)
      : html`<p class="muted">No issues yet.</p>`;
  return {
    title: `${user.name} (@${user.login})`,
    body: html`${options.notice ?? ''}
<h1>${user.name} <span class="muted">@${user.login}</span></h1>
<p class="muted">Joined on ${joined}. ${latest.total} issues opened.</p>
<form class="rename" method="post" action="/users/${user.id}/rename">
  <label for="name">Display name</label>
  <input id="name" name="name" value="${user.name}" maxlength="80" required>
  <button type="submit">Rename</button>
</form>
<h2>Repositories</h2>
${repos.length > 0 ? html`<ul class="plain">${repos}</ul>` : html`<p class="muted">None.</p>`}
<h2>Latest issues</h2>
${table}`,
  };
}

/** @param {string} what @returns {Page} */
export function notFound(what) {
  return {
    status: 404,
    title: 'Not found',
    body: html`<h1>Not found</h1><p>No such ${what}. <a href="/">Back to the issues</a>.</p>`,
  };
}

/**
 * What the frame of every page shows (site name, tagline, the signed-in user), read
 * through the getters like everything else.
 */
export async function loadChrome() {
  const [siteName, tagline, viewer] = await Promise.all([
    getSetting('site.name'),
    getSetting('site.tagline'),
    userLink(VIEWER_ID),
  ]);
  return { siteName: siteName ?? 'Tracker', tagline: tagline ?? '', viewer };
}

/** @type {Record<Mode, string>} */
const MODE_LABEL = {
  shared: 'request cache + shared tier',
  request: 'request cache only',
  none: 'no cache',
};

/**
 * The panel on every page: what the demo shows, this page's SQL queries in the three
 * modes side by side, and what the cache's counts mean.
 * @param {{ mode: Mode, ms: number, sharedKind: string, replayed: boolean,
 *   rows: (ModeCount & { mode: Mode, href: string })[] }} info
 */
export function explainPanel({ mode, ms, sharedKind, replayed, rows }) {
  const num = (/** @type {number | undefined} */ n) => html`<td class="num">${n ?? ''}</td>`;
  const body = rows.map(
    (row) => html`<tr class="${row.mode === mode ? 'current' : ''}" data-mode="${row.mode}">
  <td>${row.mode === mode ? html`<strong>${MODE_LABEL[row.mode]}</strong>` : html`<a href="${row.href}">${MODE_LABEL[row.mode]}</a>`}${row.mode === 'shared' ? html` <span class="muted">(${sharedKind})</span>` : ''}</td>
  <td class="num queries">${row.queries}</td>
  ${row.stats ? [num(row.stats.hits), num(row.stats.joins), num(row.stats.misses), num(row.stats.loads), num(row.stats.batches)] : html`<td colspan="5" class="muted">nothing cached, nothing counted</td>`}
  <td class="muted">${row.mode === mode ? `this response, ${ms.toFixed(1)} ms` : ''}</td>
</tr>`,
  );
  return html`<aside class="explain" aria-label="What this page shows">
<p><strong>What you are looking at.</strong> A small issue tracker whose pages read users,
repositories, permissions and settings through helpers that know nothing of each other, so
one page asks for the same rows again and again. <code>context-cache</code> loads each one
once per request. SQL queries this page takes:</p>
<table class="modes">
<thead><tr><th>rendered with</th><th class="num">SQL queries</th><th class="num">hits</th><th class="num">joins</th><th class="num">misses</th><th class="num">loads</th><th class="num">batches</th><th></th></tr></thead>
<tbody>${body}</tbody>
</table>
<p class="legend"><strong>hit</strong>: already loaded earlier in this request ·
<strong>join</strong>: the same load was still running, so the call waited for it instead of
starting another · <strong>miss</strong>: not in this request's cache yet ·
<strong>load</strong>: a key loaded (one per miss): with the shared tier, users and settings
that other requests already loaded (kept 60 s) come from there without SQL ·
<strong>batch</strong>: one SQL query for the users, repositories or permissions that the
page asked for in the same turn.</p>
<p class="how muted">How it is counted: the server rendered this page three times, one after
the other, each with its own query counter and a cache of its own; you see the first
(in bold), the other two were only counted.${replayed ? ' This response also made the write; the other two rows render the page after it.' : ''}</p>
</aside>`;
}

/**
 * The page frame: header, the panel, then the content.
 * @param {{ title: string, body: Html, panel: Html, refresh?: number | undefined,
 *   chrome: Awaited<ReturnType<typeof loadChrome>> }} parts
 */
export function layout({ title, body, panel, refresh, chrome }) {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${refresh ? html`<noscript><meta http-equiv="refresh" content="${refresh}"></noscript>` : ''}
<title>${title} · ${chrome.siteName}</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header class="top">
  <a class="brand" href="/">${chrome.siteName}</a>
  <span class="tagline">${chrome.tagline}</span>
  <nav><a href="/">Issues</a> <a href="/jobs">Jobs</a> <span class="viewer">Signed in as ${chrome.viewer}</span></nav>
</header>
<main>
${panel}
${body}
</main>
</body>
</html>`;
}

export const STYLE = `
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa; --link: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
a { color: var(--link); text-decoration: none; }
a:hover { text-decoration: underline; }
header.top { display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap;
  padding: .75rem 1.5rem; background: #24292f; color: #fff; }
header.top a { color: #fff; }
header.top .brand { font-weight: 700; font-size: 1.15rem; }
header.top .tagline { color: #afb8c1; font-size: .9rem; }
header.top nav { margin-left: auto; display: flex; gap: 1rem; align-items: baseline; }
header.top .viewer { color: #afb8c1; }
header.top .viewer a { color: #fff; font-weight: 600; }
main { max-width: 1280px; margin: 0 auto; padding: 1rem 1.5rem 2rem; }
h1 { font-size: 1.6rem; margin: .5rem 0; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
.muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; font-size: .85rem; white-space: nowrap; }
td.num, th.num { text-align: right; }
td.title { min-width: 14rem; }
.table-wrap { overflow-x: auto; }
td.date, td.repo, td.who { white-space: nowrap; }
td.repo { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem; }
tbody tr:hover { background: #fafbfc; }
.badge, .state { display: inline-block; padding: 0 .5rem; border-radius: 1rem; font-size: .75rem;
  font-weight: 600; border: 1px solid var(--line); white-space: nowrap; }
.badge.owner { background: #fff8c5; border-color: #d4a72c; }
.badge.write { background: #dafbe1; border-color: #4ac26b; }
.badge.read { background: var(--bg); }
.state.open { background: #1f883d; border-color: #1f883d; color: #fff; }
.state.closed { background: #8250df; border-color: #8250df; color: #fff; }
.pager { display: flex; justify-content: space-between; margin-top: 1rem; }
.crumbs { margin: 0; color: var(--muted); font-family: ui-monospace, monospace; }
.columns { display: grid; grid-template-columns: 1fr 220px; gap: 2rem; }
.issue-body { border: 1px solid var(--line); border-radius: 6px; padding: 0 1rem; background: var(--bg); }
ul.thread { list-style: none; padding: 0; margin: 0; }
li.comment { border: 1px solid var(--line); border-radius: 6px; margin-bottom: .75rem; }
li.comment .meta { background: var(--bg); padding: .4rem .75rem; border-bottom: 1px solid var(--line); }
li.comment p { margin: 0; padding: .6rem .75rem; }
ul.plain { list-style: none; padding: 0; }
ul.plain li { padding: .2rem 0; }
form.rename { display: flex; gap: .5rem; align-items: center; margin: 1rem 0; }
form.rename input { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line); border-radius: 6px; width: 18rem; }
button { font: inherit; padding: .3rem .9rem; border: 1px solid #1f883d; background: #1f883d; color: #fff;
  border-radius: 6px; cursor: pointer; }
.notice { border: 1px solid #4ac26b; background: #dafbe1; border-radius: 6px; padding: .6rem 1rem; }
.notice.warn { border-color: #d4a72c; background: #fff8c5; }
dl.job { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.job dt { color: var(--muted); }
dl.job dd { margin: 0; }
aside.explain { border: 1px solid #d4a72c; background: #fffbea; border-radius: 6px;
  padding: .5rem 1rem; margin: .5rem 0 1rem; font-size: .875rem; }
aside.explain p { margin: .35rem 0; }
aside.explain table.modes { width: auto; margin: .35rem 0; background: #fff; }
aside.explain table.modes th, aside.explain table.modes td { padding: .15rem .6rem; }
aside.explain tr.current td { background: #fff8c5; }
aside.explain td.queries { font-weight: 600; }
progress { width: 20rem; max-width: 100%; height: 1rem; vertical-align: middle; }
.job-status { font-weight: 600; }
.job-status.done { color: #1f883d; }
.job-status.failed { color: #cf222e; }
.job-status.running, .job-status.queued { color: #9a6700; }
code { font-family: ui-monospace, monospace; background: var(--bg); padding: 0 .25rem; border-radius: 4px; }
@media (max-width: 800px) { .columns { grid-template-columns: 1fr; } }
`;

/** @param {Date} date */
const clock = (date) => `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
/** @param {Date} from @param {Date} to */
const seconds = (from, to) => `${((to.getTime() - from.getTime()) / 1000).toFixed(1)} s`;

/** @param {import('./jobs.js').Job} job */
async function jobSummary(job) {
  const elapsed = job.startedAt ? seconds(job.startedAt, job.finishedAt ?? new Date()) : '';
  return html`<tr><td><a href="/jobs/${job.id}">#${job.id}</a></td><td>Export all issues</td>
<td><span class="job-status ${job.status}">${job.status}</span></td><td class="num">${job.done}</td><td class="num">${elapsed}</td>
<td class="date">${await formatDate(job.createdAt)}</td></tr>`;
}

const startButton = html`<form method="post" action="/jobs"><button type="submit">Export all issues as CSV</button></form>`;

/**
 * The jobs: a button to start an export, and the latest jobs.
 * @param {import('./jobs.js').Job[]} jobs
 * @returns {Promise<Page>}
 */
export async function jobsPage(jobs) {
  const rows = await Promise.all(jobs.map(jobSummary));
  return {
    title: 'Jobs',
    body: html`<h1>Background jobs</h1>
<p>An export runs with <code>runInBackground()</code>: it outlives the request that starts it, runs
without that request's cache and signal, and is waited for when the server shuts down.</p>
${startButton}
<h2>Latest jobs</h2>
${
  rows.length > 0
    ? html`<table><thead><tr><th>Job</th><th>Task</th><th>Status</th><th class="num">Issues done</th>
<th class="num">Time</th><th>Started</th></tr></thead><tbody>${rows}</tbody></table>`
    : html`<p class="muted">No job yet.</p>`
}`,
  };
}

/**
 * While a job runs, its page polls the job's own address for JSON (`Accept:
 * application/json`) twice a second and updates the progress in place; once the job
 * has finished it reloads, and the page then shows the file. Without JavaScript the
 * page refreshes itself every second instead (`<noscript>` meta refresh). Either way
 * only GETs of this page are repeated: the POST that started the job was answered
 * with a redirect here.
 */
const POLL_SCRIPT = html`<script>
(() => {
  const show = (id, text) => {
    const el = document.getElementById(id);
    if (el) el.textContent = text;
  };
  let failures = 0;
  const poll = async () => {
    try {
      const res = await fetch(location.pathname, { headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      const job = await res.json();
      failures = 0;
      show('job-status', job.status);
      document.getElementById('job-status').className = 'job-status ' + job.status;
      show('job-done', String(job.done));
      if (job.total !== null) {
        show('job-total', String(job.total));
        const bar = document.getElementById('job-progress');
        bar.max = job.total;
        bar.value = job.done;
        show('job-percent', Math.floor((100 * job.done) / Math.max(job.total, 1)) + '%');
      }
      if (job.status === 'done' || job.status === 'failed') return location.reload();
    } catch (err) {
      if (++failures >= 10) return show('job-note', 'Lost contact with the server (' + err.message + '): reload the page.');
    }
    setTimeout(poll, 500);
  };
  show('job-note', '(updated twice a second)');
  setTimeout(poll, 500);
})();
</script>`;

/**
 * One job: its progress while it runs, its file when done.
 * @param {import('./jobs.js').Job | undefined} job
 * @returns {Promise<Page>}
 */
export async function jobPage(job) {
  if (job === undefined) return notFound('job');
  const running = job.status === 'queued' || job.status === 'running';
  const result = job.result;
  const total = job.total;
  const percent = total ? Math.floor((100 * job.done) / total) : 0;
  return {
    title: `Job #${job.id}`,
    ...(running ? { refresh: 1 } : {}),
    body: html`<p class="crumbs"><a href="/jobs">Jobs</a> / #${job.id}</p>
<h1>Export all issues <span class="muted">#${job.id}</span></h1>
<dl class="job">
  <dt>Status</dt><dd><span id="job-status" class="job-status ${job.status}">${job.status}</span>${running ? html` <span id="job-note" class="muted">(this page refreshes every second)</span>` : ''}</dd>
  <dt>Progress</dt><dd><progress id="job-progress" max="${total ?? 1}" value="${total ? job.done : 0}">${percent}%</progress>
    <span id="job-done">${job.done}</span> of <span id="job-total">${total ?? '?'}</span> issues
    (<span id="job-percent">${percent}%</span>)</dd>
  <dt>Started</dt><dd>${job.startedAt ? clock(job.startedAt) : 'not yet'}</dd>
  <dt>Finished</dt><dd>${job.finishedAt ? clock(job.finishedAt) : 'not yet'}</dd>
  ${job.startedAt && job.finishedAt ? html`<dt>Took</dt><dd>${seconds(job.startedAt, job.finishedAt)}</dd>` : ''}
  ${
    result
      ? html`<dt>Result</dt><dd><a class="download" href="/jobs/${job.id}/export.csv" download>Download export.csv</a> (${result.issues} issues, ${result.bytes} bytes)</dd>
  <dt>SQL queries</dt><dd>${result.queries} <span class="muted">(the job has no request cache: every lookup is a query)</span></dd>
  <dt>Request cache in the job</dt><dd>${result.requestCache ? 'yes' : 'none'}</dd>`
      : ''
  }
  ${job.error ? html`<dt>Error</dt><dd>${job.error}</dd>` : ''}
</dl>
${running ? POLL_SCRIPT : startButton}`,
  };
}
