/**
 * A real Redis Cluster for the shared-tier tests: three masters (no replicas), each a
 * redis-server with `--cluster-enabled yes` on a free loopback port, in a temporary
 * directory of their own, joined by `redis-cli --cluster create` and stopped after.
 */

import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { canConnect, freePort, isFree } from './redis-server.js';

const run = promisify(execFile);

export interface RedisCluster {
  /** The masters' ports, in the order they were started. */
  readonly ports: readonly number[];
  /** `{ host, port }` of every master: the startup nodes of an ioredis `Cluster`. */
  readonly nodes: readonly { host: string; port: number }[];
  /** The server's version, such as `7.0.15`. */
  readonly version: string;
  /** Stop every node and remove the directory. */
  stop(): Promise<void>;
}

const INSTALL_HINT =
  'redis-server and redis-cli were not found on PATH. The Redis Cluster tests start their own cluster: ' +
  'install them with `apt-get install redis-server` (Debian/Ubuntu; redis-cli comes with it) and run the tests again.';

/** Seconds to wait for the nodes to agree on the cluster (`cluster_state:ok` everywhere). */
const READY_TIMEOUT_MS = 20_000;

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], {
    timeout: 10_000,
  });
  return stdout;
}

/**
 * Start a three-master Redis Cluster of our own; fails (never skips) when redis-server
 * or redis-cli is missing, or when the cluster does not form in time.
 */
export async function startRedisCluster(): Promise<RedisCluster> {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  const cliProbe = spawnSync('redis-cli', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0 || cliProbe.error !== undefined) {
    throw new Error(INSTALL_HINT);
  }
  const version = /v=(\d+\.\d+\.\d+)/.exec(probe.stdout)?.[1] ?? 'unknown';
  const dir = mkdtempSync(join(tmpdir(), 'context-cache-cluster-'));
  const children: ChildProcess[] = [];
  const ports: number[] = [];

  async function stop(): Promise<void> {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(children.map(exited));
    rmSync(dir, { recursive: true, force: true });
  }

  try {
    for (let i = 0; i < 3; i++) {
      // The cluster bus listens on port + 10000: both must be free.
      let port = await freePort();
      while (port + 10_000 > 65_535 || !(await isFree(port + 10_000))) port = await freePort();
      const nodeDir = join(dir, String(port));
      mkdirSync(nodeDir);
      const child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(nodeDir, 'nodes.conf'),
          '--cluster-node-timeout',
          '2000',
          '--save',
          '',
          '--appendonly',
          'no',
          '--dir',
          nodeDir,
          '--daemonize',
          'no',
          '--loglevel',
          'warning',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      children.push(child);
      ports.push(port);
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      let up = false;
      for (let attempt = 0; attempt < 200 && !up; attempt++) {
        if (child.exitCode !== null) {
          throw new Error(
            `redis-server (cluster node) exited with code ${child.exitCode} on port ${port}: ${stderr}`,
          );
        }
        up = await canConnect(port);
        if (!up) await new Promise((resolve) => setTimeout(resolve, 25));
      }
      if (!up)
        throw new Error(`redis-server (cluster node) did not start on port ${port}: ${stderr}`);
    }
    await run(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...ports.map((port) => `127.0.0.1:${port}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { timeout: 30_000 },
    );
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const states = await Promise.all(ports.map((port) => cli(port, 'cluster', 'info')));
      if (states.every((info) => /cluster_state:ok/.test(info))) break;
      if (Date.now() > deadline) {
        throw new Error(
          `the Redis Cluster did not reach cluster_state:ok within ${READY_TIMEOUT_MS} ms`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    ports,
    nodes: ports.map((port) => ({ host: '127.0.0.1', port })),
    version,
    stop,
  };
}
