export {
  contextCache,
  type Handler,
  type HandlerMissing,
  type Listener,
  type Options,
} from './http.js';
