export { ContextCacheModule, type Options } from './nestjs.js';
