// TypeDoc: the API reference, generated from the doc comments into docs/ (`npm run docs`).
// One module per public entry point, named by the specifier users import. The entry
// points mirror tsup.config.ts and package.json `exports`; test/docs.test.ts checks that
// they stay in step and that every export is documented.
import { fileURLToPath } from 'node:url';

/** Import specifier → source file, one per subpath in package.json `exports`. */
export const entryPoints = {
  'context-cache': 'src/index.ts',
  'context-cache/express': 'src/adapters/express/index.ts',
  'context-cache/fastify': 'src/adapters/fastify/index.ts',
  'context-cache/koa': 'src/adapters/koa/index.ts',
  'context-cache/hono': 'src/adapters/hono/index.ts',
  'context-cache/http': 'src/adapters/http/index.ts',
  'context-cache/nestjs': 'src/adapters/nestjs/index.ts',
  'context-cache/redis': 'src/shared/redis.ts',
};

/** TypeDoc's name for a module (its path under src/), and the specifier to show instead. */
const names = new Map(
  Object.entries(entryPoints).map(([specifier, file]) => [
    file.replace(/^src\//, '').replace(/(\/index)?\.ts$/, ''),
    specifier,
  ]),
);

/** This file is also a TypeDoc plugin: it renames each module to its import specifier. */
export function load(app) {
  app.converter.on('resolveBegin', (context) => {
    for (const module of context.project.children ?? []) {
      const name = names.get(module.name);
      if (name !== undefined) module.name = name;
    }
  });
}

/** @type {Partial<import('typedoc').TypeDocOptions>} */
export default {
  name: 'context-cache',
  entryPoints: Object.values(entryPoints),
  out: 'docs',
  tsconfig: 'tsconfig.json',
  plugin: [fileURLToPath(import.meta.url)],
  excludePrivate: true,
  excludeProtected: true,
  excludeInternal: true,
  sort: ['source-order'],
  includeVersion: false,
  githubPages: false,
  disableSources: true,
  validation: { notExported: true, invalidLink: true, notDocumented: true },
};
