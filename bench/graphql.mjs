// Batching over HTTP: the example's GraphQL query (50 posts with their authors, the
// authors' organisations and the posts' tags) against three servers of the same app:
// contextBatched getters, one DataLoader per request made in the GraphQL context
// function, and one query per row. Before timing, each is checked in this process for
// its answer and its SQL statements per request. Then interleaved rounds of autocannon,
// one server at a time, req/s medians.
//
// `--source memory` serves the same statements from plain arrays (lib/graphql-memory.mjs),
// which takes the database's own cost out and leaves the batching and GraphQL work.
//
//   node graphql.mjs [--quick] [--json FILE] [--source pglite|memory]
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { createGraphQLServer, POSTS_QUERY } from '../examples/graphql/app.js';
import { openDatabase } from '../examples/graphql/db.js';
import { memoryDatabase } from './lib/graphql-memory.mjs';
import { flag, median, option, printTable } from './lib/util.mjs';

const quick = flag('--quick');
const source = option('--source') ?? 'pglite';
if (source !== 'pglite' && source !== 'memory') throw new Error('--source is pglite or memory');
const jsonFile = option('--json');
const rounds = quick ? 1 : 5;
const duration = quick ? 1 : 5;
const modes = ['batched', 'dataloader', 'plain'];
const names = {
  batched: 'contextBatched',
  dataloader: 'DataLoader per request',
  plain: 'no batching',
};
const body = JSON.stringify({ query: POSTS_QUERY });

async function post(url) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  const json = await res.json();
  if (res.status !== 200 || json.errors) throw new Error(`${url}: ${JSON.stringify(json)}`);
  return json.data;
}

// Correctness and SQL per request, in this process.
const statements = {};
{
  const db = source === 'memory' ? memoryDatabase() : await openDatabase();
  let reference;
  for (const mode of modes) {
    const server = createGraphQLServer({ db, mode });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${server.address().port}/graphql`;
    const before = db.statements();
    const data = await post(url);
    statements[mode] = db.statements() - before;
    const text = JSON.stringify(data);
    reference ??= text;
    if (text !== reference || data.posts.length !== 50) {
      throw new Error(`correctness check failed: ${mode} answers differently`);
    }
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  await db.close();
  if (statements.batched !== statements.dataloader) {
    throw new Error(`SQL differs: ${JSON.stringify(statements)}`);
  }
}

const SERVER = fileURLToPath(new URL('./http/graphql-server.mjs', import.meta.url));
function start(mode) {
  const child = spawn(process.execPath, [SERVER, mode, source], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.on('exit', (code) => reject(new Error(`${mode} server exited (${code})`)));
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const match = /READY (\d+)/.exec(out);
      if (match === null) return;
      child.removeAllListeners('exit');
      resolve({
        url: `http://127.0.0.1:${match[1]}/graphql`,
        stop: () =>
          new Promise((done) => {
            child.once('exit', done);
            child.kill('SIGTERM');
          }),
      });
    });
  });
}

const servers = {};
for (const mode of modes) servers[mode] = await start(mode);
const rps = Object.fromEntries(modes.map((mode) => [mode, []]));
try {
  // Warm-up: each server's JIT and PGlite see the query before any timing.
  for (const mode of modes) {
    await autocannon({
      url: servers[mode].url,
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json' },
      connections: 10,
      duration: 1,
    });
  }
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < modes.length; i++) {
      const mode = modes[(i + round) % modes.length];
      const result = await autocannon({
        url: servers[mode].url,
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json' },
        connections: 10,
        duration,
      });
      const failed = result.errors + result.timeouts + result.non2xx;
      if (failed > 0) throw new Error(`${mode}: ${failed} requests failed under load`);
      rps[mode].push(result.requests.total / result.duration);
    }
  }
} finally {
  for (const mode of modes) await servers[mode].stop();
}

const summary = {};
const base = median(rps.dataloader);
const rows = modes.map((mode) => {
  const m = median(rps[mode]);
  summary[mode] = { rps: m, statements: statements[mode] };
  return [names[mode], String(statements[mode]), m.toFixed(0), (m / base).toFixed(2)];
});
printTable(
  `GraphQL over HTTP, 50 posts, ${source} data (Node ${process.version}, ${rounds} interleaved round(s) of ${duration} s, medians)`,
  ['getters', 'SQL per request', 'req/s', 'vs DataLoader'],
  rows,
);
if (jsonFile !== undefined) writeFileSync(jsonFile, `${JSON.stringify(summary, null, 2)}\n`);
