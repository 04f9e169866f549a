// NestJS: a route that reads a user getter 20 times, with context-cache
// (ContextCacheModule and a singleton service's @cached getter) against a Scope.REQUEST
// provider holding a Map, and a singleton that queries every time, in the same run on
// one machine. Each server runs in its own process (http/nest-server.mjs); autocannon
// loads it from this one, 10 connections, rounds interleaved, medians of req/s.
//
//   node bench/nest.mjs           full run (~2 minutes): writes bench/NEST.md
//   node bench/nest.mjs --quick   one short round, answers checked; writes nothing
//
// Needs the build (npm run build) and the root's devDependencies (the Nest packages).
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { get, load, startServer } from './lib/http.mjs';
import { flag, markdownTable, median } from './lib/util.mjs';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const quick = flag('--quick');
const rounds = quick ? 1 : 3;
const warmup = quick ? 0.5 : 1;
const duration = quick ? 1 : 4;
const CALLS = 20;
const platforms = ['express', 'fastify'];
const contenders = [
  { name: 'context-cache', label: 'context-cache (singleton + @cached)', queries: 3 },
  { name: 'request-scope', label: 'Scope.REQUEST provider with a Map', queries: 3 },
  { name: 'none', label: 'no cache (singleton, a query per call)', queries: CALLS },
];
const node = process.execPath;
const script = here('http/nest-server.mjs');

/** Start one server, check its answers, and hand it over. */
async function start(platform, contender) {
  const server = await startServer(
    node,
    { platform, contender: contender.name, calls: CALLS },
    { script },
  );
  const queries = async () => JSON.parse(await get(`${server.url}/__stats`)).queries;
  const before = await queries();
  const page = JSON.parse(await get(`${server.url}/page`));
  const ran = (await queries()) - before;
  if (page.calls !== CALLS || page.first !== 'user 1' || ran !== contender.queries) {
    await server.stop();
    throw new Error(
      `${platform}/${contender.name}: answered ${JSON.stringify(page)} with ${ran} queries, ` +
        `expected ${CALLS} calls and ${contender.queries} queries`,
    );
  }
  return server;
}

const rps = new Map(); // `${platform}/${contender}` -> req/s of each round
for (let round = 0; round < rounds; round++) {
  for (const platform of platforms) {
    // Interleaved, and the order turned each round, so that drift spreads evenly.
    const order = round % 2 === 0 ? contenders : [...contenders].reverse();
    for (const contender of order) {
      const server = await start(platform, contender);
      try {
        await load(`${server.url}/page`, { duration: warmup });
        const { rps: measured } = await load(`${server.url}/page`, { duration });
        const key = `${platform}/${contender.name}`;
        rps.set(key, [...(rps.get(key) ?? []), measured]);
        console.log(`round ${round + 1} ${key}: ${Math.round(measured)} req/s`);
      } finally {
        await server.stop();
      }
    }
  }
}

const medianOf = (platform, name) => median(rps.get(`${platform}/${name}`));
const rows = platforms.flatMap((platform) => {
  const ours = medianOf(platform, 'context-cache');
  return contenders.map((contender) => {
    const value = medianOf(platform, contender.name);
    return [
      platform,
      contender.label,
      String(contender.queries),
      String(Math.round(value)),
      contender.name === 'context-cache' ? '1.000×' : `${(ours / value).toFixed(3)}×`,
    ];
  });
});
const table = markdownTable(
  ['platform', 'GET /page (20 getter calls)', 'queries/request', 'req/s (median)', 'ours ÷ this'],
  rows,
);
console.log(`\n${table}`);
const roundsTable = markdownTable(
  ['platform', 'contender', ...Array.from({ length: rounds }, (_, i) => `round ${i + 1}`)],
  platforms.flatMap((platform) =>
    contenders.map((contender) => [
      platform,
      contender.name,
      ...rps.get(`${platform}/${contender.name}`).map((value) => String(Math.round(value))),
    ]),
  ),
);

if (!quick) {
  const machine = `${os.cpus()[0]?.model ?? 'unknown'} (${os.availableParallelism()} cores), Node ${process.version}, load average ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')} at the end`;
  writeFileSync(
    here('NEST.md'),
    [
      '# NestJS: context-cache against Scope.REQUEST',
      '',
      `${new Date().toISOString().slice(0, 10)}, \`node bench/nest.mjs\`, ${machine}.`,
      `${rounds} interleaved rounds of ${duration} s (after ${warmup} s of warm-up) per server,`,
      '10 connections, medians. The route reads a user 20 times (ids 1, 2, 3 in turn) from a',
      'database that answers at once, so the numbers are the cost of the framework and the',
      'cache, not of queries: with real queries the two caches save the same 17 of 20.',
      '',
      table,
      '',
      'Each round, req/s: on a shared machine the spread between rounds tells how far to',
      'trust the medians.',
      '',
      roundsTable,
      '',
    ].join('\n'),
  );
  console.log('\nwrote bench/NEST.md');
}
