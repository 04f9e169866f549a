// async-cache-dedupe with its in-memory (LRU) storage: dedupes loads in flight and keeps
// values for `ttl` seconds, process-wide.
import { createCache } from 'async-cache-dedupe';

let n = 0;

export default {
  name: 'async-cache-dedupe',
  scoped: false,
  request: (fn) => fn(),
  getter: (_group, loader) => {
    const name = `get${n++}`;
    const cache = createCache({ ttl: 60, storage: { type: 'memory', options: { size: 10_000 } } });
    cache.define(name, async (key) => loader(key));
    return (key) => cache[name](key);
  },
  compositeGetter: (_group, loader) => {
    const name = `get${n++}`;
    const cache = createCache({ ttl: 60, storage: { type: 'memory', options: { size: 10_000 } } });
    cache.define(name, async ({ a, b }) => loader(a, b));
    return (a, b) => cache[name]({ a, b });
  },
};
