// Every contender of the micro suite, behind one interface:
//   name, scoped (request-scoped, so per-request setup means something),
//   request(fn)                    run fn in a new request (process-wide caches: just fn()),
//   getter(group, loader)          (key) => Promise of the value,
//   compositeGetter(group, loader) (a, b) => Promise, for a two-part key,
//   syncGetter?(group, loader)     (key) => value, where the library has a sync form.
import asyncCacheDedupe from './async-cache-dedupe.mjs';
import contextCache from './context-cache.mjs';
import dataloader from './dataloader.mjs';
import handRolled from './hand-rolled.mjs';
import lruCache from './lru-cache.mjs';
import noCache from './no-cache.mjs';
import pMemoize from './p-memoize.mjs';

export const contenders = [
  contextCache,
  handRolled,
  dataloader,
  lruCache,
  asyncCacheDedupe,
  pMemoize,
  noCache,
];
