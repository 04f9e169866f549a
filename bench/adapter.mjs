// What an adapter adds to one request, alone: the request-scope middleware of each Node
// adapter (Fastify's onRequest hook, Express, Koa, node:http) against the hand-rolled
// `als.run(new Map(), next)`, each on a real `ServerResponse` whose 'close' event is
// emitted (where our adapters end the cache). Two kinds of request: one that never uses
// its cache (our adapters then never watch its response), and, for Fastify and the
// hand-rolled scope, one that looks one key up and misses (our adapter then adds its
// 'close' listener); each row is compared with the hand-rolled scope doing the same.
// The HTTP bench asks the same question
// through a server and a load generator, where rounds differ by a few percent; this one
// leaves out the socket and the framework, so a difference of tens of nanoseconds shows.
//
// Each contender runs in a process of its own, as in an application, which mounts one
// adapter: several in one process would make Node's own response code see responses of
// several shapes (each adapter marks the responses it tracks) and slow down whichever
// runs last. A process times its contender and the same work with no scope in turns
// (a sample: 20,000 requests, each a new ServerResponse, in CPU time), and reports the
// medians; "added" is the difference. Processes run in rounds, in an order rotated each
// round; the table shows the median over rounds.
//
//   node adapter.mjs [--quick] [--json FILE]
import { AsyncLocalStorage } from 'node:async_hooks';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { getContextCache, getWithContextCacheSync } from 'context-cache';
import { contextCache as express } from 'context-cache/express';
import { contextCache as fastify } from 'context-cache/fastify';
import { contextCache as nodeHttp } from 'context-cache/http';
import { contextCache as koa } from 'context-cache/koa';
import { flag, median, option, printTable } from './lib/util.mjs';

const quick = flag('--quick');
const jsonFile = option('--json');
const rounds = quick ? 1 : 5;
const REQUESTS = quick ? 200 : 20_000;

// A request and its response, new for every request as in a server (one socket for all).
const socket = new Socket();
function request() {
  const req = new IncomingMessage(socket);
  req.method = 'GET';
  req.url = '/';
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  return req;
}

const als = new AsyncLocalStorage();
let seen = 0;
/**
 * The rest of the request: checks it runs in a request scope (or in none, for 'none').
 * It does not use the cache (looking at it is not using it), so our adapters never
 * watch the response: a health check, a redirect.
 */
const next = () => {
  if (getContextCache() !== undefined || als.getStore() !== undefined) seen++;
};
/** A request that uses its cache once: one miss, and our adapters watch the response. */
const user = { id: 1 };
const loadUser = () => user;
const nextLookup = () => {
  if (getWithContextCacheSync('user', 1, loadUser) === user) seen++;
};
const nextLookupHand = () => {
  const map = als.getStore();
  let found = map.get('user:1');
  if (found === undefined) {
    found = loadUser();
    map.set('user:1', found);
  }
  if (found === user) seen++;
};

// Fastify: the plugin registers one onRequest hook; call it as Fastify does.
let fastifyHook;
fastify({ addHook: (_name, hook) => (fastifyHook = hook) }, {}, () => {});
const expressMiddleware = express();
const koaMiddleware = koa();
const httpListener = nodeHttp(() => next());

const contenders = {
  'no scope': () => next(),
  'hand-rolled als.run(new Map(), next)': () => als.run(new Map(), next),
  'context-cache/fastify (onRequest hook)': (req, res) =>
    fastifyHook({ raw: req }, { raw: res }, next),
  'context-cache/express': (req, res) => expressMiddleware(req, res, next),
  'context-cache/koa': (req, res) => koaMiddleware({ req, res }, next),
  'context-cache/http': (req, res) => httpListener(req, res),
  'hand-rolled, one lookup': () => als.run(new Map(), nextLookupHand),
  'context-cache/fastify, one lookup': (req, res) =>
    fastifyHook({ raw: req }, { raw: res }, nextLookup),
};

function sample(run) {
  const start = process.cpuUsage();
  for (let i = 0; i < REQUESTS; i++) {
    const req = request();
    const res = new ServerResponse(req);
    run(req, res);
    res.emit('close');
  }
  const used = process.cpuUsage(start);
  return ((used.user + used.system) * 1000) / REQUESTS; // ns per request
}

const names = Object.keys(contenders);
const child = option('--child');

if (child !== undefined) {
  // In a process of its own: check, then time the contender and 'no scope' in turns.
  const run = contenders[child];
  if (run === undefined) throw new Error(`unknown contender ${child}`);
  seen = 0;
  sample(run);
  const want = child === 'no scope' ? 0 : REQUESTS;
  if (seen !== want) throw new Error(`${child}: ${seen} of ${REQUESTS} requests ran in a scope`);
  if (getContextCache() !== undefined || als.getStore() !== undefined) {
    throw new Error(`${child}: a scope stayed open after the request`);
  }
  const none = [];
  const ours = [];
  for (let turn = 0; turn < (quick ? 1 : 7); turn++) {
    none.push(sample(contenders['no scope']));
    ours.push(sample(run));
  }
  console.log(JSON.stringify({ none: median(none), ns: median(ours) }));
} else {
  const times = Object.fromEntries(names.map((name) => [name, { none: [], ns: [] }]));
  const script = fileURLToPath(import.meta.url);
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round) % names.length];
      const out = execFileSync(
        process.execPath,
        [script, '--child', name, ...(quick ? ['--quick'] : [])],
        { encoding: 'utf8' },
      );
      const { none, ns } = JSON.parse(out);
      times[name].none.push(none);
      times[name].ns.push(ns);
    }
  }
  const added = (name) => median(times[name].ns.map((ns, i) => ns - times[name].none[i]));
  // Each row against the hand-rolled scope doing the same: nothing, or one lookup.
  const handOf = (name) =>
    added(
      name.endsWith(', one lookup')
        ? 'hand-rolled, one lookup'
        : 'hand-rolled als.run(new Map(), next)',
    );
  const summary = {};
  const rows = names.map((name) => {
    const ns = median(times[name].ns);
    const more = added(name);
    summary[name] = { ns, added: more };
    return [
      name,
      ns.toFixed(0),
      name === 'no scope' ? '' : more.toFixed(0),
      name === 'no scope' ? '' : `${(more / handOf(name)).toFixed(2)}×`,
    ];
  });
  printTable(
    `${quick ? 'Smoke run (a few requests, not a measurement): ' : ''}Adapter cost per request (Node ${process.version}, ${rounds} round(s) of one process per contender, CPU time, medians)`,
    ['contender', 'ns per request', 'added by the scope', 'added ÷ hand-rolled'],
    rows,
  );
  if (jsonFile !== undefined) writeFileSync(jsonFile, `${JSON.stringify(summary, null, 2)}\n`);
}
