/**
 * context-cache: request-level memoization for Node.js servers, carried by
 * AsyncLocalStorage. See the README for the concepts.
 *
 * @packageDocumentation
 */

export {
  BackgroundError,
  type BackgroundErrorCode,
  type BackgroundPool,
  type BackgroundPoolOptions,
  type BackgroundTaskOptions,
  createBackgroundPool,
  type DetachOptions,
  type DrainOptions,
  type DrainResult,
  detach,
  drainBackground,
  runInBackground,
} from './background.js';
export {
  type BatchFunction,
  type ContextBatchedFunction,
  type ContextBatchedOptions,
  contextBatched,
} from './batch.js';
export { LoadTimeoutError } from './deadline.js';
export {
  type CachedControls,
  type CachedDecorator,
  type CachedMethod,
  type CachedMethodDescriptor,
  type CachedMethodReplacement,
  cached,
  cachedControls,
} from './decorator.js';
export {
  type BatchMessage,
  diagnosticsChannels,
  type EndMessage,
  type LoadMessage,
} from './diagnostics.js';
export type { CacheStats, EphemeralCache } from './ephemeral.js';
export type { CacheKey, CacheKeyError, CheckedKey, KeyCandidate, KeyPart } from './keys.js';
export {
  type CacheContextOptions,
  currentSignal,
  getContextCache,
  type LoaderContext,
  withCacheContext,
  withNoCacheContext,
  withTransaction,
} from './scope.js';
export {
  createSharedCache,
  type Serializer,
  type SharedCacheOptions,
  type SharedErrorInfo,
  type SharedLockOptions,
} from './shared/index.js';
export { type MemoryStore, type MemoryStoreOptions, memoryStore } from './shared/memory.js';
export type {
  SharedCache,
  SharedLoaderContext,
  SharedSetOptions,
  Store,
  StoreEntry,
  StoreValue,
} from './shared/types.js';
export {
  type ContextCachedFunction,
  type ContextCachedOptions,
  contextCached,
  getContextData,
  getWithContextCache,
  getWithContextCacheSync,
  hasContextData,
  type LookupOptions,
  removeContextData,
  setContextData,
} from './wrap.js';
