export { contextCache, type Options } from './fastify.js';
