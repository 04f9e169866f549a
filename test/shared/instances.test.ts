/**
 * Two Node processes sharing one Redis, each with a tiered store (L1 in memory, L2 in
 * Redis), loading the built package by name as an app would (npm test builds first).
 */

import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeKey } from '../../src/keys.js';
import { defaultSerializer } from '../../src/shared/serializer.js';
import { eventually } from '../helpers/async.js';
import { type RedisServer, startRedis } from '../helpers/redis-server.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/instance.mjs', import.meta.url));

interface Instance {
  call(cmd: string, args?: Record<string, unknown>): Promise<unknown>;
  readonly events: string[];
  stop(): Promise<void>;
}

async function instance(url: string, name: string): Promise<Instance> {
  const child: ChildProcess = fork(fixture, [url, name], { cwd: root, stdio: 'inherit' });
  const waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const events: string[] = [];
  let next = 0;
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`instance ${name} exited with code ${code}`)));
    child.on('message', (message: { ready?: string }) => {
      if (message.ready === name) resolve();
    });
  });
  child.on(
    'message',
    (message: { id?: number; result?: unknown; error?: string; event?: string }) => {
      if (message.event !== undefined) events.push(message.event);
      if (message.id === undefined) return;
      const pending = waiting.get(message.id);
      waiting.delete(message.id);
      if (message.error !== undefined) pending?.reject(new Error(message.error));
      else pending?.resolve(message.result);
    },
  );
  return {
    events,
    call(cmd, args = {}) {
      const id = next++;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        child.send({ id, cmd, ...args });
      });
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill();
      await exited;
    },
  };
}

let server: RedisServer;
let admin: Redis;
let a: Instance;
let b: Instance;

beforeAll(async () => {
  if (!existsSync(new URL('../../dist/redis.js', import.meta.url))) {
    throw new Error('dist/redis.js is missing: build the package with `npx tsup` (npm test does).');
  }
  server = await startRedis();
  admin = new Redis(server.url);
  a = await instance(server.url, 'A');
  b = await instance(server.url, 'B');
});

afterAll(async () => {
  await a?.call('close').catch(() => {});
  await b?.call('close').catch(() => {});
  await a?.stop();
  await b?.stop();
  admin?.disconnect();
  await server?.stop();
});

describe('two instances sharing one Redis', () => {
  it("a write in one instance drops the key from the other's L1", async () => {
    const stored = `two:{${encodeKey('test', 'k')}}`;
    // A's write-back sets the key, then publishes it; B must have heard that message
    // before it caches the value, or the message would drop B's fresh copy.
    const listener = admin.duplicate();
    const published = new Promise<void>((resolve) => {
      listener.on('message', (_channel: string, key: string) => {
        // A message is the sender's instance id, a space, then the key.
        if (key.endsWith(` ${stored}`)) resolve();
      });
    });
    await listener.subscribe('context-cache:invalidate');
    expect(await a.call('load', { key: 'k' })).toBe('k loaded by A');
    await eventually(async () => (await admin.exists(stored)) === 1, 'A wrote the value back');
    await published;
    listener.disconnect();
    expect(await b.call('load', { key: 'k' })).toBe('k loaded by A'); // from Redis, into B's L1
    // Changed behind the cache's back (no invalidation): B keeps serving its L1 copy.
    await admin.set(stored, defaultSerializer.encode({ cc: 1, v: 'sneaked in' }), 'PX', 60_000);
    expect(await b.call('load', { key: 'k' })).toBe('k loaded by A');
    // Written through the cache: A publishes the key, B drops it and reads the new value.
    await a.call('set', { key: 'k', value: 'written by A' });
    await eventually(
      async () => (await b.call('load', { key: 'k' })) === 'written by A',
      "B saw A's write",
    );
    expect(await b.call('loads')).toBe(0);
  });

  it('the writer keeps its value: its next read is an L1 hit; the other drops its copy', async () => {
    /** GET and PTTL calls the server has answered (every read of a tiered store sends both). */
    const reads = async () => {
      const stats = await admin.info('commandstats');
      const calls = (cmd: string) =>
        Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      return calls('get') + calls('pttl');
    };
    const stored = `two:{${encodeKey('test', 'w')}}`;
    expect(await a.call('load', { key: 'w' })).toBe('w loaded by A');
    await eventually(async () => (await admin.exists(stored)) === 1, 'A wrote the value back');
    expect(await b.call('load', { key: 'w' })).toBe('w loaded by A'); // now in B's L1
    let before = await reads();
    expect(await a.call('load', { key: 'w' })).toBe('w loaded by A');
    expect(await reads()).toBe(before); // A's own write-back filled its L1
    // A's own set: A keeps the new value (it ignores its own message); B drops its copy.
    await a.call('set', { key: 'w', value: 'set by A' });
    before = await reads();
    expect(await a.call('load', { key: 'w' })).toBe('set by A');
    expect(await reads()).toBe(before);
    await eventually(
      async () => (await b.call('load', { key: 'w' })) === 'set by A',
      "B dropped its L1 copy on A's set",
    );
  });

  it('contextCached(...).invalidate() in one instance makes the other load again', async () => {
    expect(await a.call('item', { key: 'x' })).toBe('x loaded by A');
    const stored = `two:{${encodeKey('test', 'item')}${encodeKey('test', 'x')}}`;
    await eventually(async () => (await admin.exists(stored)) === 1, 'A wrote the item back');
    expect(await b.call('item', { key: 'x' })).toBe('x loaded by A');
    await a.call('invalidate', { key: 'x' });
    // What is left in Redis is the delete's tombstone, which reads as a miss.
    expect(await admin.get(stored)).toMatch(/^cc1:\d{16}!$/);
    await eventually(
      async () => (await b.call('item', { key: 'x' })) === 'x loaded by B',
      'B loaded the item itself',
    );
  });

  it('the lock lets one instance load a cold key while the other waits for its value', async () => {
    const before = Number(await a.call('loads')) + Number(await b.call('loads'));
    const [fromA, fromB] = await Promise.all([
      a.call('load', { key: 'cold' }),
      b.call('load', { key: 'cold' }),
    ]);
    const after = Number(await a.call('loads')) + Number(await b.call('loads'));
    expect(after - before).toBe(1);
    expect(fromA).toBe(fromB);
    expect(fromA).toMatch(/^cold loaded by [AB]$/);
    expect(a.events).toEqual([]);
    expect(b.events).toEqual([]);
  });
});
