// Type tests of context-cache/redis: checked by `tsc -p tsconfig.spec.json`, never run.
import type { Cluster, Redis } from 'ioredis';
import { expectTypeOf } from 'vitest';
import { createSharedCache, memoryStore, type Serializer } from '../../src/index.js';
import { type RedisStore, redisStore, tieredStore } from '../../src/shared/redis.js';

declare const cluster: Cluster;
declare const redis: Redis;

// ioredis's Redis and Cluster are both clients, without a cast.
expectTypeOf(redisStore({ client: redis })).toEqualTypeOf<RedisStore>();
expectTypeOf(redisStore({ client: cluster })).toEqualTypeOf<RedisStore>();
tieredStore({ l1: memoryStore({ max: 10, ttl: 1000 }), l2: redisStore({ client: cluster }) });

// @ts-expect-error a client must have get, set and del
redisStore({ client: { get: async () => null } });

// A serializer takes the envelope and returns a string or a Buffer.
const json: Serializer = {
  encode: (value) => JSON.stringify(value),
  decode: (raw) => JSON.parse(String(raw)),
};
createSharedCache({
  store: memoryStore({ max: 10 }),
  ttl: 1000,
  namespace: 'app',
  serializer: json,
});
