// HTTP helpers: start a benchmark server in its own process, check what it answers,
// and load it with autocannon from this process.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const SERVER = fileURLToPath(new URL('../http/server.mjs', import.meta.url));

/**
 * Start `http/server.mjs` (or `script`) with `config` on the `node` binary; resolves once
 * it listens, with its URL, its process id and a `stop()`.
 */
export function startServer(
  node,
  config,
  { nodeArgs = [], script = SERVER, startTimeout = 30_000 } = {},
) {
  const child = spawn(node, [...nodeArgs, script, JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => fail(new Error(`server did not start within ${startTimeout / 1000} s`)),
      startTimeout,
    );
    const fail = (err) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    child.on('error', fail);
    child.on('exit', (code) =>
      fail(new Error(`server exited (${code}) before listening: ${JSON.stringify(config)}`)),
    );
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const match = /READY (\d+)/.exec(out);
      if (match === null) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      const port = Number(match[1]);
      resolve({
        url: `http://127.0.0.1:${port}`,
        pid: child.pid,
        stop: () =>
          new Promise((done) => {
            const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
            child.once('exit', () => {
              clearTimeout(kill);
              done();
            });
            child.kill('SIGTERM');
          }),
      });
    });
  });
}

/** GET `url`; resolves with the body, rejects on a status other than 200. */
export async function get(url) {
  const res = await fetch(url, { headers: { connection: 'close' } });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${body.slice(0, 200)}`);
  return body;
}

/**
 * Load `url` with autocannon. `duration` in seconds, or `amount` requests. Rejects when
 * any request failed: a number from a server that errors is not a number.
 */
export async function load(url, { connections = 10, duration, amount }) {
  const result = await autocannon({
    url,
    connections,
    ...(amount === undefined ? { duration } : { amount }),
  });
  const failed = result.errors + result.timeouts + result.non2xx;
  if (failed > 0) {
    throw new Error(`${url}: ${failed} of ${result.requests.total} requests failed under load`);
  }
  const seconds = result.duration;
  return {
    rps: result.requests.total / seconds,
    p99: result.latency.p99,
    requests: result.requests.total,
  };
}
