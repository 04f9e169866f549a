export { contextCache, type Options } from './hono.js';
