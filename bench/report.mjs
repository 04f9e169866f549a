// Writes bench/RESULTS.md from a full run, and the targets table between the markers
// of bench/README.md, so both always come from the same run.
import { readFileSync, writeFileSync } from 'node:fs';
import { markdownTable } from './lib/util.mjs';

const OURS = 'context-cache';
const BASELINE = 'context-cache (baseline)';
const SHAPE_TARGETS = [
  ['shape-awaited', 'awaited hit', 1.1],
  ['shape-sync', 'sync hit', 1.15],
  // Our own goal, beside the issue's four: the sync hit's, for two getters called in turn.
  ['shape-turns', 'sync hits of two groups in turn', 1.15],
  ['shape-request', 'a request with one miss', 1.5],
  ['shape-herd', '1000-call herd', 1.2],
];

function ns(value) {
  if (value < 1e3) return `${value.toFixed(1)} ns`;
  if (value < 1e6) return `${(value / 1e3).toFixed(2)} µs`;
  return `${(value / 1e6).toFixed(2)} ms`;
}
const ratio = (a, b) => (a === undefined || b === undefined ? undefined : a / b);
const fmt = (r) => (r === undefined ? 'n/a' : `${r.toFixed(2)}×`);

/** Each target of the issue, measured in this run: [what, goal, measured, met]. */
export function targets(results) {
  const rows = [];
  for (const micro of results.micro) {
    const p50 = (scenario, contender) =>
      micro.rows.find((r) => r.scenario === scenario && r.contender === contender)?.p50;
    const hit = ratio(p50('hit-awaited', OURS), p50('hit-awaited', 'hand-rolled ALS Map'));
    rows.push([`awaited hit vs hand-rolled, ${micro.node}`, '≤ 1.10×', hit, hit <= 1.1]);
    const dl = ratio(p50('hit-awaited', 'DataLoader per request'), p50('hit-awaited', OURS));
    rows.push([`DataLoader awaited hit ÷ ours, ${micro.node}`, '≥ 8×', dl, dl >= 8]);
    const call = ratio(p50('hit-call', 'DataLoader per request'), p50('hit-call', OURS));
    rows.push([
      `DataLoader hit call ÷ ours (not awaited), ${micro.node}`,
      '(≥ 8×)',
      call,
      call >= 8,
    ]);
    const setup = ratio(p50('setup', OURS), p50('setup', 'hand-rolled ALS Map'));
    rows.push([
      `per-request setup vs als.run(new Map), ${micro.node}`,
      '≤ 1.2×',
      setup,
      setup <= 1.2,
    ]);
    // The user shapes: the median of each round's ratio to the hand-rolled map, with the
    // lowest and highest round beside it.
    for (const [scenario, what, goal] of SHAPE_TARGETS) {
      const row = micro.rows.find((r) => r.scenario === scenario && r.contender === OURS);
      const r = row?.handRolled;
      rows.push([
        `${what} vs hand-rolled (user shape), ${micro.node}`,
        `≤ ${goal.toFixed(2)}×`,
        r?.median,
        r !== undefined && r.median <= goal,
        undefined,
        r === undefined ? undefined : [r.min, r.max],
      ]);
      const base = micro.rows.find(
        (x) => x.scenario === scenario && x.contender === BASELINE,
      )?.handRolled;
      if (base !== undefined) {
        rows.push([
          `${what}, the baseline build, ${micro.node}`,
          `(≤ ${goal.toFixed(2)}×)`,
          base.median,
          base.median <= goal,
          undefined,
          [base.min, base.max],
        ]);
      }
    }
    const alone = ratio(p50('setup-alone', OURS), p50('setup-alone', 'hand-rolled ALS Map'));
    if (alone !== undefined) {
      rows.push([
        `per-request setup vs als.run(new Map), each alone in its process, ${micro.node}`,
        '(≤ 1.2×)',
        alone,
        alone <= 1.2,
      ]);
    }
  }
  const rps = (match) =>
    results.http.find((r) => Object.entries(match).every(([k, v]) => r[k] === v))?.rps;
  // /ping: each round's ratio (the contenders of a round ran back to back), then the
  // median over rounds with the lowest and highest round beside it.
  const paired = (node, a, b, field) => {
    const row = (contender) =>
      results.http.find(
        (r) =>
          r.node === node &&
          r.framework === 'fastify' &&
          r.route === 'ping' &&
          r.contender === contender,
      )?.[field];
    const [x, y] = [row(a), row(b)];
    if (x === undefined || y === undefined) return undefined;
    const ratios = x.map((v, i) => v / y[i]).sort((p, q) => p - q);
    return { median: ratios[Math.floor(ratios.length / 2)], range: [ratios[0], ratios.at(-1)] };
  };
  for (const node of [...new Set(results.http.map((r) => r.node))]) {
    const ping = paired(node, OURS, 'none', 'rounds');
    if (ping !== undefined)
      rows.push([
        `Fastify /ping, ours ÷ none, ${node}`,
        '≥ 0.97×',
        ping.median,
        ping.median >= 0.97,
        undefined,
        ping.range,
      ]);
    // No goal: an onRequest hook that does nothing, the floor of any plugin with a hook.
    const hook = paired(node, 'empty-hook', 'none', 'rounds');
    if (hook !== undefined)
      rows.push([
        `Fastify /ping, an empty onRequest hook ÷ none (reference: what any hook costs), ${node}`,
        '(none)',
        hook.median,
        hook.median >= 0.97,
        undefined,
        hook.range,
      ]);
    const hand = paired(node, 'hand-rolled', 'none', 'rounds');
    if (ping !== undefined && hand !== undefined)
      rows.push([
        `Fastify /ping, ours ÷ none against hand-rolled als.run ÷ none (${hand.median.toFixed(3)}×), ${node}`,
        `≥ ${hand.median.toFixed(3)}×`,
        ping.median,
        ping.median >= hand.median,
        undefined,
        ping.range,
      ]);
    // The same question in the server's CPU time per request, which the load generator's
    // share of the machine does not move: the hand-rolled request's cost over ours.
    const cpu = paired(node, 'hand-rolled', OURS, 'cpuRounds');
    if (cpu !== undefined)
      rows.push([
        `Fastify /ping, server CPU per request, hand-rolled als.run ÷ ours, ${node}`,
        '(≥ 1.00×)',
        cpu.median,
        cpu.median >= 1,
        undefined,
        cpu.range,
      ]);
  }
  for (const store of ['latency', 'pglite']) {
    const page = (contender) =>
      rps({ framework: 'fastify', route: 'page', store, calls: 20, contender });
    const none = ratio(page(OURS), page('none'));
    const dl = ratio(page(OURS), page('dataloader'));
    if (none !== undefined)
      rows.push([`Fastify 20-getter page (${store}), ours ÷ no cache`, '≥ 7×', none, none >= 7]);
    if (dl !== undefined)
      rows.push([
        `Fastify 20-getter page (${store}), ours ÷ DataLoader`,
        '≥ 1.05×',
        dl,
        dl >= 1.05,
      ]);
  }
  for (const m of results.memory) {
    rows.push([
      `heap growth over ${m.requests.toLocaleString('en')} requests, ${m.framework}`,
      '< 1 MB',
      m.growth / 2 ** 20,
      m.growth < 2 ** 20,
      'MB',
    ]);
  }
  return rows;
}

function targetsTable(results) {
  return markdownTable(
    ['target', 'goal', 'measured', 'met'],
    targets(results).map(([what, goal, value, met, unit, spread]) => [
      what,
      goal,
      // Three decimals, so a ratio just under its goal never reads as the goal itself.
      value === undefined
        ? 'n/a'
        : unit === 'MB'
          ? `${value.toFixed(2)} MB`
          : `${value.toFixed(3)}×${spread === undefined ? '' : ` (rounds ${spread[0].toFixed(2)}–${spread[1].toFixed(2)})`}`,
      value === undefined ? 'n/a' : met ? 'yes' : '**no**',
    ]),
  );
}

function microTables(micro) {
  const out = [];
  const scenarios = [...new Map(micro.rows.map((r) => [r.scenario, r.title])).entries()];
  for (const [id, title] of scenarios) {
    const rows = micro.rows.filter((r) => r.scenario === id);
    if (rows[0]?.handRolled !== undefined) {
      out.push(
        `#### ${title}\n\n${markdownTable(
          ['contender', 'per call (p50)', 'p99', '÷ hand-rolled: median (lowest–highest round)'],
          rows.map((r) => [
            r.contender === OURS ? `**${r.contender}**` : r.contender,
            ns(r.p50),
            ns(r.p99),
            `${r.handRolled.median.toFixed(2)}× (${r.handRolled.min.toFixed(2)}–${r.handRolled.max.toFixed(2)})`,
          ]),
        )}`,
      );
      continue;
    }
    const ours = rows.find((r) => r.contender === OURS);
    out.push(
      `#### ${title}\n\n${markdownTable(
        ['contender', 'p50', 'p99', '÷ ours', 'bytes/call'],
        rows.map((r) => [
          r.contender === OURS ? `**${r.contender}**` : r.contender,
          ns(r.p50),
          ns(r.p99),
          fmt(ratio(r.p50, ours?.p50)),
          r.bytes === undefined ? '' : r.bytes.toFixed(0),
        ]),
      )}`,
    );
  }
  return out.join('\n\n');
}

function httpTable(rows, baseline) {
  return markdownTable(
    [
      'node',
      'framework',
      'calls',
      'contender',
      'req/s (median)',
      `÷ ${baseline}`,
      'p99 ms',
      'server CPU µs/request',
      'rounds',
    ],
    rows.map((r) => {
      const base = rows.find(
        (b) =>
          b.node === r.node &&
          b.framework === r.framework &&
          b.calls === r.calls &&
          b.contender === baseline,
      );
      return [
        r.node,
        r.framework,
        r.calls ?? '',
        r.contender === OURS ? `**${r.contender}**` : r.contender,
        Math.round(r.rps).toLocaleString('en'),
        fmt(ratio(r.rps, base?.rps)),
        r.p99,
        r.cpu === undefined ? '' : r.cpu.toFixed(2),
        r.rounds.join(' / '),
      ];
    }),
  );
}

const mb = (bytes) => (bytes / 2 ** 20).toFixed(2);

export function writeReport(results, here) {
  const m = results.machine;
  const md = `# Benchmark results

Generated by \`${results.command}\` (bench/run.mjs) on ${results.date.slice(0, 10)}; the run
took ${results.seconds} s. Do not edit: run the suite again.

| | |
| --- | --- |
| machine | ${m.cpu}, ${m.cores} cores, ${m.memory}, ${m.os} |
| load average at start | ${m.loadavg.join(' ')} |
| Node | ${results.nodes.join('; ')} |
| date | ${results.date} |
| command | \`${results.command}\` |

## Targets

${targetsTable(results)}

## Micro (mitata, one process per Node version)

Each row: the median over 3 interleaved rounds of each round's p50; "bytes/call" is heap
allocated per call (not awaited), measured apart from the timing. The "user shape" tables
come last: the five calls written as an application writes them (\`lib/shapes.mjs\`: direct
calls with a literal group, in a plain \`for\` loop, each contender in its own copy of
the module), timed after every other scenario in the same process, 9 interleaved rounds,
in the process's CPU time (so time spent descheduled on a shared machine does not count);
a row is ns per call, and its ratio to the hand-rolled map is taken round by round.${
    results.baseline === undefined
      ? ''
      : ` "context-cache (baseline)" is another build of this package loaded beside it (\`--baseline\`: ${results.baseline}), measured in the same rounds.`
  }

${results.micro.map((micro) => `### ${micro.node}\n\n${microTables(micro)}`).join('\n\n')}

## HTTP (autocannon, 10 connections, 1 s warm-up + 2 s, ${results.httpRounds ?? 3} interleaved rounds)

Server and load generator in separate processes; the contenders of a row group run in an
order rotated each round. \`rounds\` lists each round's req/s; "server CPU" is the server
process's CPU time (user + system) over the timed run divided by its requests, the median
of the rounds.

### /ping: overhead where the cache is not used

${httpTable(
  results.http.filter((r) => r.route === 'ping'),
  'none',
)}

${
  results.http.some((r) => r.route === 'page')
    ? `### A page of getter calls, store with 1 ms per query and a pool of 10

![req/s against getter calls per page](chart.svg)

${httpTable(
  results.http.filter((r) => r.route === 'page' && r.store === 'latency'),
  'none',
)}

### A 20-getter page against PGlite (in-process Postgres)

${httpTable(
  results.http.filter((r) => r.route === 'page' && r.store === 'pglite'),
  'none',
)}`
    : "The page routes were not part of this run (`--routes`); the last run of them is in this file's history."
}

## Memory

${markdownTable(
  [
    'node',
    'framework',
    'requests',
    'heap start MB',
    'heap end MB',
    'growth MB',
    'bytes/request',
    'request with 10k entries: heap MB',
    'with 100k entries (maxEntries 10k): heap MB',
  ],
  results.memory.map((r) => [
    r.node,
    r.framework,
    r.requests.toLocaleString('en'),
    mb(r.heapStart),
    mb(r.heapEnd),
    mb(r.growth),
    r.perRequest.toFixed(2),
    mb(r.fill10k),
    `${mb(r.fill100k)} (size ${r.fillSize})`,
  ]),
)}

Heap after two forced GCs, read by the server itself; every request is a 20-getter page
through the adapter with an instant store.
`;
  writeFileSync(here('RESULTS.md'), md);
  const readme = readFileSync(here('README.md'), 'utf8');
  const start = '<!-- targets:start -->';
  const end = '<!-- targets:end -->';
  const i = readme.indexOf(start);
  const j = readme.indexOf(end);
  if (i !== -1 && j > i) {
    const block = `${start}\n${results.date.slice(0, 10)}, \`${results.command}\`, ${m.cpu} (${m.cores} cores):\n\n${targetsTable(results)}\n${end}`;
    writeFileSync(here('README.md'), readme.slice(0, i) + block + readme.slice(j + end.length));
  }
}
