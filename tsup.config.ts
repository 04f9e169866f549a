import { defineConfig } from 'tsup';

// One entry per public subpath. Each entry gets an ESM build with `.d.ts` and a CJS
// build with `.d.cts`, so `import` and `require` each see types for their own format.
export default defineConfig({
  entry: {
    index: 'src/index.ts',
    redis: 'src/shared/redis.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: false,
  treeshake: true,
});
