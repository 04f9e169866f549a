import { defineConfig } from 'tsup';

// One entry per public subpath. Each entry gets an ESM build with `.d.ts` and a CJS
// build with `.d.cts`, so `import` and `require` each see types for their own format.
export default defineConfig({
  entry: {
    index: 'src/index.ts',
    express: 'src/adapters/express/index.ts',
    fastify: 'src/adapters/fastify/index.ts',
    koa: 'src/adapters/koa/index.ts',
    hono: 'src/adapters/hono/index.ts',
    http: 'src/adapters/http/index.ts',
    nestjs: 'src/adapters/nestjs/index.ts',
    redis: 'src/shared/redis.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: false,
  treeshake: true,
  // Keep `node:` in imports: Deno and Workers resolve Node's modules by that prefix.
  removeNodeProtocol: false,
});
