// What an adapter adds to one request, alone: the request-scope middleware of each Node
// adapter (Fastify's onRequest hook, Express, Koa, node:http) against the hand-rolled
// `als.run(new Map(), next)`, each on a real `ServerResponse` whose 'close' event is
// emitted (where our adapters end the cache). The HTTP bench asks the same question
// through a server and a load generator, where rounds differ by a few percent; this one
// leaves out the socket and the framework, so a difference of tens of nanoseconds shows.
//
// A sample: 20,000 requests, each a new ServerResponse; the process's CPU time (user +
// system). "added" is a contender's time minus the time of the same work with no scope
// at all. Interleaved rounds in rotated order, medians.
//
//   node adapter.mjs [--quick] [--json FILE]
import { AsyncLocalStorage } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { getContextCache } from 'context-cache';
import { contextCache as express } from 'context-cache/express';
import { contextCache as fastify } from 'context-cache/fastify';
import { contextCache as nodeHttp } from 'context-cache/http';
import { contextCache as koa } from 'context-cache/koa';
import { flag, median, option, printTable } from './lib/util.mjs';

const quick = flag('--quick');
const jsonFile = option('--json');
const rounds = quick ? 1 : 11;
const REQUESTS = quick ? 200 : 20_000;

const req = new IncomingMessage(new Socket());
req.method = 'GET';
req.url = '/';
req.httpVersionMajor = 1;
req.httpVersionMinor = 1;

const als = new AsyncLocalStorage();
let seen = 0;
/** The rest of the request: checks it runs in a request scope (or in none, for 'none'). */
const next = () => {
  if (getContextCache() !== undefined || als.getStore() !== undefined) seen++;
};

// Fastify: the plugin registers one onRequest hook; call it as Fastify does.
let fastifyHook;
fastify({ addHook: (_name, hook) => (fastifyHook = hook) }, {}, () => {});
const expressMiddleware = express();
const koaMiddleware = koa();
const httpListener = nodeHttp(() => next());

const contenders = {
  'no scope': (res) => next(res),
  'hand-rolled als.run(new Map(), next)': () => als.run(new Map(), next),
  'context-cache/fastify (onRequest hook)': (res) => fastifyHook({ raw: req }, { raw: res }, next),
  'context-cache/express': (res) => expressMiddleware(req, res, next),
  'context-cache/koa': (res) => koaMiddleware({ req, res }, next),
  'context-cache/http': (res) => httpListener(req, res),
};

function sample(run) {
  const start = process.cpuUsage();
  for (let i = 0; i < REQUESTS; i++) {
    const res = new ServerResponse(req);
    run(res);
    res.emit('close');
  }
  const used = process.cpuUsage(start);
  return ((used.user + used.system) * 1000) / REQUESTS; // ns per request
}

// Every contender opens a scope (all but 'no scope') and leaves none open afterwards.
const names = Object.keys(contenders);
for (const name of names) {
  seen = 0;
  sample(contenders[name]);
  const want = name === 'no scope' ? 0 : REQUESTS;
  if (seen !== want) throw new Error(`${name}: ${seen} of ${REQUESTS} requests ran in a scope`);
  if (getContextCache() !== undefined || als.getStore() !== undefined) {
    throw new Error(`${name}: a scope stayed open after the request`);
  }
}

const times = Object.fromEntries(names.map((name) => [name, []]));
for (let round = 0; round < rounds; round++) {
  for (let i = 0; i < names.length; i++) {
    const name = names[(i + round) % names.length];
    times[name].push(sample(contenders[name]));
  }
}

const base = median(times['no scope']);
const hand = median(times['hand-rolled als.run(new Map(), next)']) - base;
const summary = {};
const rows = names.map((name) => {
  const ns = median(times[name]);
  const added = ns - base;
  summary[name] = { ns, added };
  return [
    name,
    ns.toFixed(0),
    name === 'no scope' ? '' : added.toFixed(0),
    name === 'no scope' ? '' : `${(added / hand).toFixed(2)}×`,
  ];
});
printTable(
  `${quick ? 'Smoke run (a few requests, not a measurement): ' : ''}Adapter cost per request (Node ${process.version}, ${rounds} interleaved round(s) of ${REQUESTS} requests, CPU time, medians)`,
  ['contender', 'ns per request', 'added by the scope', 'added ÷ hand-rolled'],
  rows,
);
if (jsonFile !== undefined) writeFileSync(jsonFile, `${JSON.stringify(summary, null, 2)}\n`);
