// The demo in a real browser: Debian's Chromium, headless, driven by playwright-core
// (which never downloads a browser of its own). It opens the main pages, checks that
// each shows the panel with the same counts as the response's headers, runs the export
// job from its button (the redirect, the progress, the finished file, a reload that
// starts nothing) and saves a screenshot of each page to a temporary directory.
// `.ci/run` installs the `chromium` package; in CI a missing Chromium is a failure.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium, type Page, type Request } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Demo, startDemo, stop } from './demo-process.js';

/** The Chromium on PATH (`chromium`, as Debian names it), or undefined. */
function findChromium(): string | undefined {
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      const path = execFileSync('which', [name], { encoding: 'utf8' }).trim();
      if (path !== '') return path;
    } catch {
      // not on PATH under this name
    }
  }
  return undefined;
}

/**
 * The machine may have no network: without these Chromium keeps trying to reach its
 * update, sync and field-trial servers.
 */
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const executablePath = findChromium();

/** The three counts of the response's `x-sql-queries-by-mode` header. */
function headerCounts(header: string | undefined): Record<string, string> {
  expect(header).toMatch(/^shared=\d+ request=\d+ none=\d+$/);
  return Object.fromEntries((header ?? '').split(' ').map((pair) => pair.split('=')));
}

/** What the panel's table shows: each mode's label and query count, as rendered. */
async function panelCounts(page: Page): Promise<Record<string, string>> {
  const rows = page.locator('aside.explain table.modes tbody tr');
  expect(await rows.count()).toBe(3);
  const counts: Record<string, string> = {};
  for (const row of await rows.all()) {
    const mode = (await row.getAttribute('data-mode')) ?? '';
    counts[mode] = ((await row.locator('td.queries').textContent()) ?? '').trim();
  }
  return counts;
}

const suite = () => {
  let demo: Demo;
  let context: BrowserContext;
  let profile: string;
  let shots: string;
  const errors: string[] = [];

  beforeAll(async () => {
    demo = await startDemo({ DATABASE_URL: '', REDIS_URL: '' });
    profile = mkdtempSync(join(tmpdir(), 'tracker-chromium-profile-'));
    shots = mkdtempSync(join(tmpdir(), 'tracker-screenshots-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: executablePath ?? 'chromium',
      headless: true,
      args: FLAGS,
      viewport: { width: 1280, height: 900 },
      timeout: 60_000,
    });
    context.on('weberror', (error) => errors.push(error.error().message));
  }, 120_000);

  afterAll(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    if (demo) await stop(demo);
    // Kept for a look after the run; the path is printed once.
    if (shots) console.log(`demo screenshots in ${shots}`);
  }, 60_000);

  async function open(path: string, shot: string) {
    const page = await context.newPage();
    const response = await page.goto(demo.url + path, { waitUntil: 'load' });
    expect(response?.status()).toBe(200);
    const panel = page.locator('aside.explain');
    await expect.poll(() => panel.isVisible()).toBe(true);
    const text = ((await panel.textContent()) ?? '').replace(/\s+/g, ' ');
    for (const phrase of [
      'What you are looking at',
      'request cache + shared tier',
      'request cache only',
      'no cache',
      'hit: already loaded earlier in this request',
      'join: the same load was still running',
      'miss: not in this request',
      'load: a key loaded',
      'batch: one SQL query',
      'rendered this page three times',
    ])
      expect(text).toContain(phrase);
    // The table shows this page's counts in the three modes, as the headers do.
    expect(await panelCounts(page)).toEqual(
      headerCounts((await response?.allHeaders())?.['x-sql-queries-by-mode']),
    );
    await page.screenshot({ path: join(shots, `${shot}.png`) });
    return page;
  }

  it('shows the panel with the three counts on the issue list, an issue and a user', async () => {
    const list = await open('/', 'issues');
    expect(await list.locator('table.issues tbody tr').count()).toBe(50);
    const firstIssue = await list.locator('td.title a').first().getAttribute('href');
    expect(firstIssue).toMatch(/^\/issues\/\d+$/);
    await list.close();

    const issue = await open(firstIssue ?? '', 'issue');
    expect(await issue.locator('h1').textContent()).not.toBe('');
    await issue.close();

    const user = await open('/users/2', 'user');
    expect(await user.locator('form.rename input[name="name"]').count()).toBe(1);
    await user.close();
    expect(errors).toEqual([]);
  }, 120_000);

  it('runs the export from its button: redirected to the job, progress while it runs, then the file; a reload starts nothing', async () => {
    const page = await open('/jobs', 'jobs');
    const jobLinks = page.locator('table tbody tr td:first-child a');
    const before = await jobLinks.count();

    const polls: string[] = [];
    const navigations: Request[] = [];
    page.on('request', (request) => {
      if (request.isNavigationRequest()) navigations.push(request);
      if (request.headers().accept === 'application/json') polls.push(request.url());
    });
    await page.getByRole('button', { name: 'Export all issues as CSV' }).click();
    await page.waitForURL(/\/jobs\/\d+$/);
    const jobUrl = page.url();
    // The POST was answered with a redirect; the page on screen came from a GET.
    const landed = navigations.find((request) => request.url() === jobUrl);
    expect(landed?.method()).toBe('GET');
    const post = landed?.redirectedFrom();
    expect(post?.method()).toBe('POST');
    expect((await post?.response())?.status()).toBe(303);

    const status = page.locator('#job-status');
    const progress = page.locator('#job-progress');
    await expect.poll(() => progress.isVisible()).toBe(true);
    await expect.poll(() => status.textContent()).toMatch(/^(queued|running|done)$/);
    // The progress moves while the page stays put (the script polls the job's JSON).
    await expect
      .poll(async () => Number(await page.locator('#job-done').textContent()), { timeout: 60_000 })
      .toBeGreaterThan(0);
    // The script runs (rather than the refresh for pages without JavaScript).
    await expect
      .poll(() => page.locator('#job-note').textContent())
      .toBe('(updated twice a second)');
    await page.screenshot({ path: join(shots, 'job-running.png') });

    const download = page.locator('a.download');
    await download.waitFor({ timeout: 90_000 });
    expect(await download.textContent()).toBe('Download export.csv');
    expect(await download.getAttribute('href')).toBe(`${new URL(jobUrl).pathname}/export.csv`);
    expect(await status.textContent()).toBe('done');
    expect(await page.locator('#job-percent').textContent()).toBe('100%');
    expect(polls.length).toBeGreaterThan(0);
    expect(new Set(polls)).toEqual(new Set([jobUrl]));
    await page.screenshot({ path: join(shots, 'job-done.png'), fullPage: true });

    // Reloading the job page repeats its GET, not the POST: no second job.
    const reloaded = await page.reload();
    expect(reloaded?.request().method()).toBe('GET');
    expect(page.url()).toBe(jobUrl);
    await page.goto(`${demo.url}/jobs`);
    expect(await jobLinks.count()).toBe(before + 1);
    await page.close();
    expect(errors).toEqual([]);
  }, 180_000);

  it('without JavaScript the job page refreshes itself until the file is there', async () => {
    const started = await fetch(`${demo.url}/jobs`, {
      method: 'POST',
      headers: { accept: 'application/json' },
    });
    const { location } = (await started.json()) as { location: string };
    const noScript = mkdtempSync(join(tmpdir(), 'tracker-chromium-profile-'));
    const plain = await chromium.launchPersistentContext(noScript, {
      executablePath: executablePath ?? 'chromium',
      headless: true,
      args: FLAGS,
      javaScriptEnabled: false,
      timeout: 60_000,
    });
    try {
      const page = await plain.newPage();
      let loads = 0;
      page.on('load', () => {
        loads++;
      });
      await page.goto(demo.url + location);
      expect(await page.locator('#job-note').textContent()).toBe(
        '(this page refreshes every second)',
      );
      await page.locator('a.download').waitFor({ timeout: 90_000 });
      expect(loads).toBeGreaterThan(1);
      expect(page.url()).toBe(demo.url + location);
      expect(await page.locator('#job-status').textContent()).toBe('done');
    } finally {
      await plain.close();
      rmSync(noScript, { recursive: true, force: true });
    }
  }, 180_000);
};

if (executablePath !== undefined) describe('the demo in headless Chromium', suite);
else {
  describe('the demo in headless Chromium', () => {
    // Locally this runs only where Chromium is installed; in CI it must not be skipped.
    it.runIf(process.env.CI === 'true')('has a Chromium to run', () => {
      throw new Error(
        'Chromium is not installed (no `chromium` on PATH): install it with ' +
          '`apt-get install chromium` (Debian; `.ci/run` does this) or your system package manager',
      );
    });
  });
}
