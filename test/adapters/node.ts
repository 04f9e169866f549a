/** Small helpers the drivers share: listen on 127.0.0.1:0 and close without waiting for idle sockets. */

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'vitest';
import type { RunningApp } from './table.js';

/** Listen on an ephemeral loopback port and read it back. */
export async function listen(server: Server): Promise<RunningApp> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { port: (server.address() as AddressInfo).port, close: () => closeServer(server) };
}

/** Close idle keep-alive sockets first, then the server, then whatever is still open. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeIdleConnections();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/**
 * An adapter mounted twice: the outer one's cache served both (`seen`: what the outer
 * and the inner code got from getContextCache()), and only the outer one reported onEnd.
 */
export async function expectOuterCacheOnly(seen: unknown[], ends: string[]): Promise<void> {
  await expect.poll(() => ends).toEqual(['outer']);
  expect(seen).toHaveLength(2);
  expect(seen[0]).toBeDefined();
  expect(seen[1]).toBe(seen[0]);
}
