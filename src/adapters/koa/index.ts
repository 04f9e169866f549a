export { contextCache, type Options } from './koa.js';
