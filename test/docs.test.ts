/**
 * The API reference: TypeDoc (typedoc.config.mjs, `npm run docs`) documents one module
 * per subpath in package.json `exports`, from the same sources tsup builds, and every
 * public export has a doc comment; every function and class shows an example.
 */

import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Application, type DeclarationReflection, ReflectionKind, TSConfigReader } from 'typedoc';
import { beforeAll, describe, expect, it } from 'vitest';
import tsup from '../tsup.config.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const configUrl = pathToFileURL(join(root, 'typedoc.config.mjs')).href;
const config = (await import(configUrl)) as {
  entryPoints: Record<string, string>;
  default: Record<string, unknown>;
};
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
  name: string;
  exports: Record<string, unknown>;
};

/** Subpath specifier → source file, as package.json `exports` and tsup.config.ts define it. */
function builtEntryPoints(): Record<string, string> {
  const entry = (tsup as { entry: Record<string, string> }).entry;
  const out: Record<string, string> = {};
  for (const [key, target] of Object.entries(pkg.exports)) {
    if (key === './package.json') continue;
    const file = JSON.stringify(target).match(/"\.\/dist\/([\w-]+)\.js"/)?.[1];
    const source = file === undefined ? undefined : entry[file];
    if (source === undefined) throw new Error(`exports["${key}"] has no tsup entry`);
    out[key === '.' ? pkg.name : `${pkg.name}/${key.slice(2)}`] = source;
  }
  return out;
}

let modules: DeclarationReflection[] = [];
let errors = false;

beforeAll(async () => {
  // Absolute paths: the options are resolved against the working directory otherwise.
  const app = await Application.bootstrapWithPlugins(
    {
      ...config.default,
      entryPoints: Object.values(config.entryPoints).map((file) => join(root, file)),
      tsconfig: join(root, 'tsconfig.json'),
      plugin: [fileURLToPath(configUrl)],
      logLevel: 'Error',
      validation: false,
    },
    [new TSConfigReader()],
  );
  const project = await app.convert();
  errors = app.logger.hasErrors() || project === undefined;
  modules = project?.children ?? [];
}, 120_000);

describe('API reference (TypeDoc)', () => {
  it('documents exactly the subpaths of package.json exports, from the sources tsup builds', () => {
    expect(config.entryPoints).toEqual(builtEntryPoints());
  });

  it('converts without errors, one module per subpath named as users import it', () => {
    expect(errors).toBe(false);
    expect(modules.map((m) => m.name).sort()).toEqual(Object.keys(config.entryPoints).sort());
  });

  it('has a doc comment on every export, and an example on every function and class', () => {
    const values = ReflectionKind.Function | ReflectionKind.Class;
    const missing: string[] = [];
    for (const module of modules) {
      for (const item of module.children ?? []) {
        const declared =
          item.type?.type === 'reflection'
            ? item.type.declaration.signatures?.[0]?.comment
            : undefined;
        const comment = item.comment ?? item.signatures?.[0]?.comment ?? declared;
        const name = `${module.name}: ${item.name}`;
        if (comment === undefined) missing.push(`${name} has no doc comment`);
        else if (item.kindOf(values) && !comment.blockTags.some((tag) => tag.tag === '@example')) {
          missing.push(`${name} has no @example`);
        }
      }
    }
    expect(missing).toEqual([]);
  });

  it("is summed up in the README's API reference: every export, linked to its page", async () => {
    // TypeDoc's folder for each kind of page, and its file name: `<module>.<export>.html`
    // with the module's '/' written '_'.
    const folders: [ReflectionKind, string][] = [
      [ReflectionKind.Function, 'functions'],
      [ReflectionKind.Class, 'classes'],
      [ReflectionKind.Variable, 'variables'],
      [ReflectionKind.Interface, 'interfaces'],
      [ReflectionKind.TypeAlias, 'types'],
    ];
    const pages = modules.flatMap((module) =>
      (module.children ?? []).map((item) => {
        const folder = folders.find(([kind]) => item.kindOf(kind))?.[1] ?? 'unknown';
        return `${module.name} ${item.name} docs/${folder}/${module.name.replace('/', '_')}.${item.name}.html`;
      }),
    );
    const readme = await readFile(join(root, 'README.md'), 'utf8');
    const section = readme.split(/^## API reference$/m)[1]?.split(/^## /m)[0] ?? '';
    const listed: string[] = [];
    for (const part of section.split(/^### /m).slice(1)) {
      const module = part.match(/^`([^`]+)`/)?.[1];
      for (const link of part.matchAll(/\[`(\w+)`\]\((docs\/[^)]+)\)/g)) {
        listed.push(`${module} ${link[1]} ${link[2]}`);
      }
    }
    expect(listed.sort()).toEqual(pages.sort());
  });
});
