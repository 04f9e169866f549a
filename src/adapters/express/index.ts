export { type ContextCacheMiddleware, contextCache, type Options } from './express.js';
