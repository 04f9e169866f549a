// context-cache itself, through its public API, as a user's repository module would use it.
import { getWithContextCache, getWithContextCacheSync, withCacheContext } from 'context-cache';

export default {
  name: 'context-cache',
  scoped: true,
  request: (fn) => withCacheContext(fn),
  getter: (group, loader) => (key) => getWithContextCache(group, key, loader),
  compositeGetter: (group, loader) => (a, b) =>
    getWithContextCache(group, [a, b], ([a, b]) => loader(a, b)),
  syncGetter: (group, loader) => (key) => getWithContextCacheSync(group, key, loader),
};
