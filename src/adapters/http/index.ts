export { contextCache, type Handler, type Options } from './http.js';
