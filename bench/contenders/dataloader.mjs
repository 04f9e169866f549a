// One DataLoader per request and group, created on first use and kept in the request's
// AsyncLocalStorage: the pattern DataLoader's README recommends for servers.
import { AsyncLocalStorage } from 'node:async_hooks';
import DataLoader from 'dataloader';

export const als = new AsyncLocalStorage();

function loaderFor(group, batch, options) {
  const store = als.getStore();
  if (store === undefined) throw new Error('dataloader contender used outside a request');
  let loader = store.get(group);
  if (loader === undefined) {
    loader = new DataLoader(batch, options);
    store.set(group, loader);
  }
  return loader;
}

const batchOf = (loader) => (keys) => Promise.all(keys.map((key) => loader(key)));

export default {
  name: 'DataLoader per request',
  scoped: true,
  request: (fn) => als.run(new Map(), fn),
  getter: (group, loader) => {
    const batch = batchOf(loader);
    return (key) => loaderFor(group, batch).load(key);
  },
  compositeGetter: (group, loader) => {
    const batch = batchOf(([a, b]) => loader(a, b));
    const options = { cacheKeyFn: ([a, b]) => `${a}:${b}` };
    return (a, b) => loaderFor(group, batch, options).load([a, b]);
  },
};
