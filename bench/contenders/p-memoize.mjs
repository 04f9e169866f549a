// p-memoize over a bounded lru-cache (its README suggests a bounded cache for servers):
// dedupes loads in flight, process-wide.
import { LRUCache } from 'lru-cache';
import pMemoize from 'p-memoize';

export default {
  name: 'p-memoize',
  scoped: false,
  request: (fn) => fn(),
  getter: (_group, loader) =>
    pMemoize(async (key) => loader(key), { cache: new LRUCache({ max: 10_000 }) }),
  compositeGetter: (_group, loader) =>
    pMemoize(async (a, b) => loader(a, b), {
      cache: new LRUCache({ max: 10_000 }),
      cacheKey: ([a, b]) => `${a}:${b}`,
    }),
};
