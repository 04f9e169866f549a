// What a careful engineer writes instead of a library: a Map of promises per group in an
// AsyncLocalStorage, opened per request with `als.run(new Map(), next)`. It dedupes
// concurrent loads and drops failed ones, and nothing else (no bound, no lifetime, no end).
import { AsyncLocalStorage } from 'node:async_hooks';

export const als = new AsyncLocalStorage();

function groupMap(store, group) {
  let map = store.get(group);
  if (map === undefined) {
    map = new Map();
    store.set(group, map);
  }
  return map;
}

export function cached(group, key, loader) {
  const store = als.getStore();
  if (store === undefined) return Promise.resolve(loader(key));
  const map = groupMap(store, group);
  let promise = map.get(key);
  if (promise === undefined) {
    promise = Promise.resolve(loader(key));
    map.set(key, promise);
    promise.catch(() => map.delete(key));
  }
  return promise;
}

export function cachedSync(group, key, loader) {
  const store = als.getStore();
  if (store === undefined) return loader(key);
  const map = groupMap(store, group);
  if (map.has(key)) return map.get(key);
  const value = loader(key);
  map.set(key, value);
  return value;
}

export default {
  name: 'hand-rolled ALS Map',
  scoped: true,
  request: (fn) => als.run(new Map(), fn),
  getter: (group, loader) => (key) => cached(group, key, loader),
  compositeGetter: (group, loader) => (a, b) => cached(group, `${a}:${b}`, () => loader(a, b)),
  syncGetter: (group, loader) => (key) => cachedSync(`sync:${group}`, key, loader),
};
