/**
 * A TCP relay on loopback between one client and a real server, to play network faults
 * deterministically: `hold()` keeps what the client sends (the server sees nothing, the
 * client sees a connected but silent server) until `release()` delivers it in order;
 * while held, new connections wait too. Everything is relayed unchanged otherwise.
 */

import { createServer, type Server, Socket } from 'node:net';

export interface TcpProxy {
  readonly port: number;
  readonly url: string;
  /** Keep what clients send, and new connections, until `release()`. */
  hold(): void;
  /** Deliver what was kept, in order, and relay as usual again. */
  release(): void;
  /** Bytes the clients sent that are being kept. */
  readonly heldBytes: number;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket | undefined;
  queue: Buffer[];
}

export async function startProxy(targetPort: number): Promise<TcpProxy> {
  let holding = false;
  const pairs = new Set<Pair>();

  const connectUpstream = (pair: Pair): void => {
    const upstream = new Socket();
    pair.upstream = upstream;
    upstream.on('error', () => pair.client.destroy());
    upstream.on('close', () => pair.client.destroy());
    upstream.on('data', (chunk) => pair.client.write(chunk));
    upstream.connect(targetPort, '127.0.0.1', () => flush(pair));
  };

  const flush = (pair: Pair): void => {
    if (holding || pair.upstream === undefined || pair.upstream.connecting) return;
    for (const chunk of pair.queue.splice(0)) pair.upstream.write(chunk);
  };

  const server: Server = createServer((client) => {
    const pair: Pair = { client, upstream: undefined, queue: [] };
    pairs.add(pair);
    client.on('error', () => {});
    client.on('close', () => {
      pairs.delete(pair);
      pair.upstream?.destroy();
    });
    client.on('data', (chunk) => {
      pair.queue.push(chunk);
      flush(pair);
    });
    if (!holding) connectUpstream(pair);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    hold() {
      holding = true;
    },
    release() {
      holding = false;
      for (const pair of pairs) {
        if (pair.upstream === undefined) connectUpstream(pair);
        else flush(pair);
      }
    },
    get heldBytes() {
      let bytes = 0;
      for (const pair of pairs) for (const chunk of pair.queue) bytes += chunk.length;
      return bytes;
    },
    close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream?.destroy();
      }
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
