import { transform } from 'esbuild';
import { defineConfig, type Plugin } from 'vitest/config';

// Vite's TypeScript transform does not lower standard (TC39) decorators, and Node 20 cannot
// run them: files that use one (`@cached(...)`) go through esbuild first, as a user's build would.
const standardDecorators: Plugin = {
  name: 'standard-decorators',
  enforce: 'pre',
  async transform(code, id) {
    if (!/\.[cm]?ts$/.test(id) || !/^\s*@[A-Za-z_$]/m.test(code)) return null;
    const out = await transform(code, {
      loader: 'ts',
      target: 'es2022',
      sourcemap: true,
      sourcefile: id,
    });
    return { code: out.code, map: out.map };
  },
};

export default defineConfig({
  plugins: [standardDecorators],
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 20_000,
    hookTimeout: 30_000,
    typecheck: { enabled: false },
  },
});
