// The shared tier's serializer, chosen by measurement: encode + decode of a typical user
// row (~1 KB as JSON, with Dates) and of a 50-row list, for every candidate that could be
// the default. Each candidate is first checked on the fixtures and on every type the
// default must round-trip (a table of what each one keeps); then it is timed with mitata,
// alone and through a shared cache (set + get on a memory store, envelope included, the
// default's refusal check included).
//
//   node bench/serializer.mjs [--quick]
//
// The full run writes bench/SERIALIZER.md; the quick run only checks and prints (its
// numbers go to bench/.results/). Each round also runs msgpackr and the default in a
// child process with msgpackr's native decoder off (MSGPACKR_NATIVE_ACCELERATION_DISABLED):
// pure JavaScript, as on Bun, Deno, Workers and wherever the add-on did not install.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import v8 from 'node:v8';
import { createSharedCache, memoryStore } from 'context-cache';
import * as devalue from 'devalue';
import { measure } from 'mitata';
import { isNativeAccelerationEnabled, Packr } from 'msgpackr';
import superjson from 'superjson';
import { flag, markdownTable, median, option, printTable } from './lib/util.mjs';

const quick = flag('--quick');
/** In the child: run one round of these candidates only and print the results as JSON. */
const childOf = option('--child');
const here = (file) => new URL(file, import.meta.url);
const rounds = quick ? 1 : 3;
const timing = quick
  ? { min_cpu_time: 5e6, min_samples: 4, warmup_samples: 1, batch_samples: 64 }
  : { min_cpu_time: 300e6 };

// --- fixtures --------------------------------------------------------------------------

const lorem =
  'Writes about distributed systems, caching and the small tools that keep servers fast. ' +
  'Previously on the platform team; now mostly reviews, benchmarks and the odd release. ';

function userRow(id) {
  return {
    id,
    uuid: `5f0c6a2e-8d3b-4c1a-9e7f-${String(id).padStart(12, '0')}`,
    username: `user${id}`,
    email: `user${id}@example.com`,
    displayName: `User Number ${id}`,
    bio: lorem + lorem.slice(0, 80),
    avatarUrl: `https://cdn.example.com/avatars/${id}/large.png?v=3`,
    locale: 'en-GB',
    timezone: 'Europe/London',
    isActive: true,
    isAdmin: id % 17 === 0,
    emailVerified: true,
    followers: 1200 + id,
    following: 310,
    karma: 98765.5,
    roles: ['member', 'editor'],
    settings: { theme: 'dark', digest: 'weekly', notifications: { email: true, push: false } },
    createdAt: new Date(Date.UTC(2021, 3, 14, 9, 30, id % 60)),
    updatedAt: new Date(Date.UTC(2026, 10, 2, 17, 5, id % 60)),
    lastLoginAt: id % 3 === 0 ? null : new Date(Date.UTC(2026, 11, 6, 8, id % 60)),
  };
}

const row = userRow(42);
const list = Array.from({ length: 50 }, (_, i) => userRow(i + 1));
const fixtures = [
  { name: 'user row', value: row },
  { name: '50-row list', value: list },
];

/** Every type the default must round-trip, one value each. */
const types = [
  ['plain object and array', { a: [1, 'two', null, true], b: { c: 3.5 } }],
  ['undefined (value and property)', { u: undefined, list: [undefined] }],
  ['Date', new Date(Date.UTC(2026, 0, 2))],
  [
    'Map (object keys)',
    new Map([
      [{ id: 1 }, 'one'],
      ['two', new Map([[2, 2]])],
    ]),
  ],
  ['Set', new Set(['a', 1, 2n])],
  ['BigInt beyond 64 bits', 2n ** 80n + 1n],
  ['Uint8Array', new Uint8Array([1, 2, 255])],
  ['Float64Array', new Float64Array([1.5, -2])],
  ['BigInt64Array', new BigInt64Array([-5n])],
  ['Buffer', Buffer.from('bytes')],
];

// --- candidates ------------------------------------------------------------------------

const packr = new Packr({
  structuredClone: true,
  moreTypes: true,
  useRecords: true,
  int64AsType: 'bigint',
  copyBuffers: true,
});

/** Each: encode(value) → string | Buffer, decode(raw) → value. */
const candidates = [
  {
    name: 'JSON (today, for reference: Dates come back as strings)',
    short: 'JSON',
    encode: (v) => JSON.stringify(v),
    decode: (raw) => JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8')),
    reference: true,
  },
  {
    name: 'node:v8 serialize (structured clone)',
    short: 'node:v8',
    encode: (v) => v8.serialize(v),
    decode: (raw) => v8.deserialize(raw),
  },
  {
    name: `msgpackr (structuredClone, records, moreTypes; native decoder ${isNativeAccelerationEnabled ? 'on' : 'off'})`,
    short: 'msgpackr',
    encode: (v) => packr.pack(v),
    decode: (raw) => packr.unpack(raw),
  },
  {
    name: 'superjson',
    short: 'superjson',
    encode: (v) => superjson.stringify(v),
    decode: (raw) => superjson.parse(typeof raw === 'string' ? raw : raw.toString('utf8')),
  },
  {
    name: 'devalue',
    short: 'devalue',
    encode: (v) => devalue.stringify(v),
    decode: (raw) => devalue.parse(typeof raw === 'string' ? raw : raw.toString('utf8')),
  },
];

function roundTrips(c, value) {
  try {
    return isDeepStrictEqual(c.decode(c.encode(value)), value);
  } catch {
    return false;
  }
}

function size(raw) {
  return typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
}

// --- checks ----------------------------------------------------------------------------

const capability = candidates.map((c) => ({
  candidate: c.short,
  types: types.map(([, value]) => roundTrips(c, value)),
  fixtures: fixtures.map(({ value }) => roundTrips(c, value)),
}));
for (const [i, c] of candidates.entries()) {
  if (c.reference) continue;
  if (!capability[i].fixtures.every(Boolean)) {
    throw new Error(`correctness check failed: ${c.short} does not round-trip the fixtures`);
  }
}

/** A shared cache over a memory store: the default serializer, or the candidate's. */
function cacheWith(c) {
  return createSharedCache({
    store: memoryStore({ max: 100 }),
    ttl: 60_000,
    namespace: 'bench',
    ...(c === undefined
      ? {}
      : {
          serializer: {
            encode: (envelope) => {
              const raw = c.encode(envelope);
              return typeof raw === 'string' ? raw : Buffer.from(raw);
            },
            decode: c.decode,
          },
        }),
  });
}
const viaCache = [
  { short: 'context-cache default', cache: cacheWith(undefined) },
  ...candidates.map((c) => ({ short: c.short, cache: cacheWith(c), reference: c.reference })),
];
for (const { short, cache, reference } of viaCache) {
  for (const { name, value } of fixtures) {
    await cache.set(name, value);
    const back = await cache.get(name);
    if (!reference && !isDeepStrictEqual(back, value)) {
      throw new Error(`correctness check failed: ${short} through the cache, ${name}`);
    }
  }
}

// --- timing ----------------------------------------------------------------------------

const PURE = ' (pure JS)';
const inChild = new Set(['msgpackr', 'context-cache default']);

async function runRound(round, only) {
  const out = [];
  for (const { name, value } of fixtures) {
    for (const c of candidates) {
      if (only !== undefined && !only.has(c.short)) continue;
      const stats = await measure(() => c.decode(c.encode(value)), timing);
      out.push({ fixture: name, candidate: c.short, mode: 'codec', p50: stats.p50, round });
    }
    for (const { short, cache } of viaCache) {
      if (only !== undefined && !only.has(short)) continue;
      const stats = await measure(async () => {
        await cache.set(name, value);
        return cache.get(name);
      }, timing);
      out.push({ fixture: name, candidate: short, mode: 'cache', p50: stats.p50, round });
    }
  }
  return out;
}

if (childOf !== undefined) {
  if (isNativeAccelerationEnabled)
    throw new Error('the child was meant to run without the native decoder');
  const out = await runRound(Number(childOf), inChild);
  for (const { cache } of viaCache) await cache.close();
  process.stdout.write(JSON.stringify(out));
  process.exit(0);
}

const results = []; // { fixture, candidate, mode, p50 (ns), round }
for (let round = 0; round < rounds; round++) {
  results.push(...(await runRound(round, undefined)));
  const child = spawnSync(
    process.execPath,
    [fileURLToPath(import.meta.url), '--child', String(round), ...(quick ? ['--quick'] : [])],
    {
      encoding: 'utf8',
      env: { ...process.env, MSGPACKR_NATIVE_ACCELERATION_DISABLED: 'true' },
      maxBuffer: 16 * 1024 * 1024,
    },
  );
  if (child.status !== 0) throw new Error(`the pure-JS round failed: ${child.stderr}`);
  for (const r of JSON.parse(child.stdout)) results.push({ ...r, candidate: r.candidate + PURE });
}

function formatNs(ns) {
  return ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`;
}

function tableFor(mode, fixture, reference) {
  const here = mode === 'codec' ? candidates.map((c) => c.short) : viaCache.map((c) => c.short);
  const names = [...here, ...[...inChild].filter((n) => here.includes(n)).map((n) => n + PURE)];
  const rows = names.map((short) => {
    const p50 = median(
      results
        .filter((r) => r.mode === mode && r.fixture === fixture && r.candidate === short)
        .map((r) => r.p50),
    );
    return { short, p50 };
  });
  const ref = rows.find((r) => r.short === reference).p50;
  const sizeOf = (short) => {
    const c = candidates.find((x) => x.short === short.replace(PURE, ''));
    return c === undefined
      ? ''
      : String(size(c.encode(fixtures.find((f) => f.name === fixture).value)));
  };
  return {
    head: [
      'candidate',
      'encode + decode (p50)',
      `÷ ${reference}`,
      ...(mode === 'codec' ? ['bytes'] : []),
    ],
    rows: rows.map((r) => [
      r.short === reference ? `**${r.short}**` : r.short,
      formatNs(r.p50),
      `${(r.p50 / ref).toFixed(2)}×`,
      ...(mode === 'codec' ? [sizeOf(r.short)] : []),
    ]),
  };
}

const capabilityTable = {
  head: ['type', ...candidates.map((c) => c.short)],
  rows: types.map(([name], t) => [name, ...capability.map((c) => (c.types[t] ? 'yes' : '**no**'))]),
};

const sections = [];
for (const { name } of fixtures) {
  sections.push([`Codec alone, ${name}`, tableFor('codec', name, 'msgpackr')]);
}
for (const { name } of fixtures) {
  sections.push([
    `Through a shared cache (set + get on memoryStore), ${name}`,
    tableFor('cache', name, 'context-cache default'),
  ]);
}
printTable('Round-trips (checked before timing)', capabilityTable.head, capabilityTable.rows);
for (const [title, t] of sections) printTable(title, t.head, t.rows);

const machine = `${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${os.cpus().length} cores, Node ${process.version}`;
mkdirSync(here('.results'), { recursive: true });
const stamp = new Date().toISOString();
writeFileSync(
  here(`.results/serializer-${quick ? 'quick' : 'full'}-${stamp.replace(/[:.]/g, '-')}.json`),
  JSON.stringify({ date: stamp, machine, loadavg: os.loadavg(), results }, null, 2),
);
if (quick) {
  console.log('\nquick run: every candidate checked and run; numbers not kept');
} else {
  const md = [
    '# Serializer comparison',
    '',
    'Generated by `node bench/serializer.mjs` (after `npm run build` and `npm --prefix bench ci`).',
    'Do not edit: run it again.',
    '',
    `${stamp.slice(0, 10)}, ${machine}, load average at start ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
    `(a shared machine: compare ratios within this run, not absolute times across runs). Each`,
    `row is the median of ${rounds} interleaved rounds of mitata's p50.`,
    '',
    'The default is **msgpackr** (structured-clone, record and typed-array extensions) behind',
    'a two-byte header, with a walk that refuses what it cannot round-trip. Why: see the',
    'README, "Shared tier" → "What round-trips".',
    '',
    '## What round-trips (checked before timing)',
    '',
    markdownTable(capabilityTable.head, capabilityTable.rows),
    '',
    ...sections.flatMap(([title, t]) => [`## ${title}`, '', markdownTable(t.head, t.rows), '']),
  ].join('\n');
  writeFileSync(here('SERIALIZER.md'), md);
  console.log('\nwrote bench/SERIALIZER.md');
}
for (const { cache } of viaCache) await cache.close();
