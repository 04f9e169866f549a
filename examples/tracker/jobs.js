// Background jobs: POST /jobs starts an export of every issue with runInBackground().
// The job runs outside the request that started it: no request cache (it cannot keep
// that request's entries alive, nor read them after the response), its own abort
// signal with its own timeout (the response being sent does not cancel it), and
// drainBackground() waits for it at shutdown.
import { setTimeout as sleep } from 'node:timers/promises';
import { currentSignal, getContextCache, runInBackground } from 'context-cache';
import { counted } from './metrics.js';
import { countIssues, getRepoById, getUserById, issuesAfter } from './repositories.js';

/** Issues read per batch, and the pause between batches (so a job takes a moment). */
const BATCH = 100;
const PAUSE_MS = Number(process.env.JOB_PAUSE_MS ?? 50);
/** A job that runs longer than this is aborted (its signal fires) and marked failed. */
const JOB_TIMEOUT = 120_000;
/** Finished jobs kept for GET /jobs/:id; older ones are forgotten. */
const KEEP = 20;

/**
 * @typedef {{
 *   id: string, kind: 'export', status: 'queued' | 'running' | 'done' | 'failed',
 *   createdAt: Date, startedAt: Date | null, finishedAt: Date | null, done: number,
 *   total: number | null,
 *   result: { issues: number, bytes: number, queries: number, requestCache: boolean } | null,
 *   error: string | null, csv: string | null,
 * }} Job
 */

/** @type {Map<string, Job>} */
const jobs = new Map();
let nextId = 1;

/** @param {string} id @returns {Job | undefined} */
export function getJob(id) {
  return jobs.get(id);
}

/** @returns {Job[]} newest first */
export function listJobs() {
  return [...jobs.values()].reverse();
}

/**
 * Start an export of every issue as CSV and return the job at once.
 * @returns {Job}
 */
export function startExport() {
  /** @type {Job} */
  const job = {
    id: String(nextId++),
    kind: 'export',
    status: 'queued',
    createdAt: new Date(),
    startedAt: null,
    finishedAt: null,
    done: 0,
    total: null,
    result: null,
    error: null,
    csv: null,
  };
  jobs.set(job.id, job);
  // Forget the oldest finished jobs past KEEP; a job still queued or running stays, so
  // the page it redirected to keeps answering.
  for (const [id, old] of jobs) {
    if (jobs.size <= KEEP) break;
    if (old.status === 'done' || old.status === 'failed') jobs.delete(id);
  }
  runInBackground(() => exportIssues(job), {
    name: `export-issues#${job.id}`,
    timeout: JOB_TIMEOUT,
    /** @param {Error} err */
    onError(err) {
      job.status = 'failed';
      job.error = err.message;
      job.finishedAt = new Date();
      console.error(`job ${job.id} failed: ${err.message}`);
    },
  });
  return job;
}

/** @param {unknown} value */
const csvField = (value) => {
  const text = String(value ?? '');
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
};

/**
 * The job itself. It reads through the same getters as the pages; with no request
 * cache here, each call is a query (the job's own count is kept in its result).
 * @param {Job} job
 */
async function exportIssues(job) {
  job.status = 'running';
  job.startedAt = new Date();
  const signal = currentSignal();
  const { result: csv, queries } = await counted(async () => {
    job.total = await countIssues();
    const lines = ['id,repository,number,state,author,assignee,comments,title'];
    let last = 0;
    for (;;) {
      signal?.throwIfAborted();
      const batch = await issuesAfter(last, BATCH);
      if (batch.length === 0) break;
      for (const issue of batch) {
        const [repo, author, assignee] = await Promise.all([
          getRepoById(issue.repoId),
          getUserById(issue.authorId),
          issue.assigneeId === null ? null : getUserById(issue.assigneeId),
        ]);
        const owner = repo ? await getUserById(repo.ownerId) : null;
        lines.push(
          [
            issue.id,
            `${owner?.login}/${repo?.name}`,
            issue.number,
            issue.state,
            author?.login,
            assignee?.login ?? '',
            issue.comments,
            issue.title,
          ]
            .map(csvField)
            .join(','),
        );
        last = issue.id;
      }
      job.done += batch.length;
      await sleep(PAUSE_MS, undefined, signal ? { signal } : {});
    }
    return `${lines.join('\n')}\n`;
  });
  job.csv = csv;
  job.result = {
    issues: job.done,
    bytes: Buffer.byteLength(csv),
    queries,
    requestCache: getContextCache() !== undefined,
  };
  job.status = 'done';
  job.finishedAt = new Date();
  console.log(`job ${job.id} done: ${job.done} issues exported with ${queries} queries`);
}
