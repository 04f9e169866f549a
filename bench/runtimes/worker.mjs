// Cloudflare Workers (workerd, nodejs_compat): bundled by bench/runtimes.mjs.
import { handle } from './scenarios.mjs';

export default { fetch: handle };
