// Type tests of the Store interface: checked by `tsc -p tsconfig.spec.json`, never run.
// A store written before versions existed (three-argument set, resolving nothing) still
// fits; a store that keeps the order takes the version and may resolve false.
import { expectTypeOf } from 'vitest';
import { createSharedCache, memoryStore, type Store, type StoreValue } from '../../src/index.js';
import { redisStore, tieredStore } from '../../src/shared/redis.js';

const map = new Map<string, StoreValue>();
const unordered: Store = {
  get: async (key) => map.get(key),
  set: async (key, value) => {
    map.set(key, value);
  },
  delete: async (key) => {
    map.delete(key);
  },
  close: async () => {},
};
createSharedCache({ store: unordered, ttl: 1000, namespace: 'app' });

const versions = new Map<string, number>();
const ordered: Store = {
  get: async (key) => map.get(key),
  async set(key, value, _ttl, version) {
    expectTypeOf(version).toEqualTypeOf<number | undefined>();
    const held = versions.get(key);
    if (version !== undefined && held !== undefined && held >= version) return false;
    map.set(key, value);
    if (version !== undefined) versions.set(key, version);
    return true;
  },
  delete: async (key) => {
    map.delete(key);
  },
  connection: () => 1,
  close: async () => {},
};
createSharedCache({ store: ordered, ttl: 1000, namespace: 'app' });

const l1 = memoryStore({ max: 10, ttl: 1000 });
expectTypeOf(l1.set('k', 'v', 1000, 1)).toEqualTypeOf<Promise<boolean>>();
const l2 = redisStore({ url: 'redis://127.0.0.1:6379' });
expectTypeOf(l2.set('k', 'v', 1000, 1)).toEqualTypeOf<Promise<boolean>>();
expectTypeOf(l2.connection()).toEqualTypeOf<number | Error>();
expectTypeOf(tieredStore({ l1, l2 }).instanceId).toEqualTypeOf<string>();
