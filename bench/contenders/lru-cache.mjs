// A process-wide lru-cache with `fetch()` (which dedupes loads in flight) and `memo()`
// for the sync case. Not request-scoped: entries outlive the request, bounded by `max`.
import { LRUCache } from 'lru-cache';

const MAX = 10_000;

export default {
  name: 'lru-cache fetch',
  scoped: false,
  request: (fn) => fn(),
  getter: (_group, loader) => {
    const cache = new LRUCache({ max: MAX, fetchMethod: (key) => loader(key) });
    return (key) => cache.fetch(key);
  },
  compositeGetter: (_group, loader) => {
    const cache = new LRUCache({
      max: MAX,
      fetchMethod: (_key, _stale, { context }) => loader(...context),
    });
    return (a, b) => cache.fetch(`${a}:${b}`, { context: [a, b] });
  },
  syncGetter: (_group, loader) => {
    const cache = new LRUCache({ max: MAX, memoMethod: (key) => loader(key) });
    return (key) => cache.memo(key);
  },
};
