/**
 * The package as a user gets it: `npm pack`, then the tarball installed into two fresh
 * projects in the system's temporary directory — an ESM TypeScript project
 * (`moduleResolution: nodenext`, type-checked and compiled with this repository's
 * TypeScript) and a plain CommonJS one. Each imports every subpath listed in `exports`
 * and serves one request through the node:http adapter. Frameworks (optional peers) are
 * linked from this repository's node_modules; the package's own dependencies come from
 * the npm cache (`--prefer-offline`).
 *
 * Needs a build (`npm test` builds before running the tests).
 */

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const rootPackage = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  exports: Record<string, unknown>;
  peerDependencies?: Record<string, string>;
};
const subpaths = Object.keys(rootPackage.exports)
  .filter((key) => key !== './package.json')
  .map((key) => (key === '.' ? rootPackage.name : `${rootPackage.name}/${key.slice(2)}`));
const adapters = ['express', 'fastify', 'koa', 'hono', 'http']
  .map((name) => `${rootPackage.name}/${name}`)
  .filter((name) => subpaths.includes(name));

const npmEnv = {
  ...process.env,
  npm_config_loglevel: 'error',
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
};
const npm = (args: string[], cwd: string) =>
  run('npm', args, { cwd, env: npmEnv, maxBuffer: 16 * 1024 * 1024 });

let workdir = '';
let tarball = '';
let packedFiles: string[] = [];

/** Every file path named in `exports` (all conditions), relative to the package root. */
function exportedFiles(value: unknown): string[] {
  if (typeof value === 'string') return [value.replace(/^\.\//, '')];
  if (value === null || typeof value !== 'object') return [];
  return Object.values(value).flatMap(exportedFiles);
}

/** A fresh project with the tarball installed and the optional peers linked. */
async function project(name: string, packageJson: object): Promise<string> {
  const dir = join(workdir, name);
  await mkdir(dir);
  await writeFile(join(dir, 'package.json'), JSON.stringify(packageJson, null, 2));
  await npm(['install', '--prefer-offline', '--no-save', '--ignore-scripts', tarball], dir);
  const links = Object.keys(rootPackage.peerDependencies ?? {});
  links.push(...links.map((peer) => `@types/${peer.replace(/^@(.*)\//, '$1__')}`), '@types/node');
  for (const dependency of links) {
    const source = join(root, 'node_modules', dependency);
    const target = join(dir, 'node_modules', dependency);
    if (!existsSync(source) || existsSync(target)) continue;
    await mkdir(dirname(target), { recursive: true });
    await symlink(source, target, 'dir');
  }
  return dir;
}

/** The program both projects run: import every subpath, serve one request. */
function program(kind: 'esm' | 'cjs'): string {
  const load =
    kind === 'esm'
      ? subpaths.map((s, i) => `import * as m${i} from '${s}';`).join('\n')
      : subpaths.map((s, i) => `const m${i} = require('${s}');`).join('\n');
  const names = subpaths.map((s, i) => `${JSON.stringify(s)}: Object.keys(m${i}).sort()`);
  const pkg =
    kind === 'esm'
      ? `import { createRequire } from 'node:module';\nconst pkg = createRequire(import.meta.url)('${rootPackage.name}/package.json') as { version: string };`
      : `const pkg = require('${rootPackage.name}/package.json');`;
  const types = kind === 'esm';
  return `${kind === 'cjs' ? "'use strict';\nconst { createServer } = require('node:http');" : "import { createServer } from 'node:http';\nimport type { AddressInfo } from 'node:net';"}
${load}
${pkg}

const { contextCached, getContextCache } = m0;
const { contextCache } = m${subpaths.indexOf(`${rootPackage.name}/http`)};

let loads = 0;
const getUser = contextCached('user', async (id${types ? ': number' : ''}) => {
  loads++;
  return { id, name: 'ada' };
});
${types ? 'const check: (id: number) => Promise<{ id: number; name: string }> = getUser;\nvoid check;' : ''}

const server = createServer(
  contextCache(
    async (_req${types ? ': unknown' : ''}, res${types ? ': import("node:http").ServerResponse' : ''}) => {
      const [a, b] = await Promise.all([getUser(1), getUser(1)]);
      const c = await getUser(1);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ same: a === b && b === c, stats: getContextCache()?.stats() }));
    },
    { serverTiming: true },
  ),
);
server.listen(0, '127.0.0.1', async () => {
  const { port } = server.address()${types ? ' as AddressInfo' : ''};
  try {
    const response = await fetch(\`http://127.0.0.1:\${port}/\`);
    console.log(
      JSON.stringify({
        exports: { ${names.join(', ')} },
        version: pkg.version,
        status: response.status,
        serverTiming: response.headers.get('server-timing'),
        body: await response.json(),
        loads,
      }),
    );
  } finally {
    server.close();
    server.closeAllConnections();
  }
});
`;
}

interface Outcome {
  exports: Record<string, string[]>;
  version: string;
  status: number;
  serverTiming: string | null;
  body: { same: boolean; stats: Record<string, number> };
  loads: number;
}

let esm: Outcome;
let cjs: Outcome;

beforeAll(async () => {
  if (!existsSync(join(root, 'dist', 'index.js'))) {
    throw new Error('The consumer test packs dist/: run `npm run build` first.');
  }
  workdir = await mkdtemp(join(tmpdir(), 'context-cache-consumer-'));
  const { stdout } = await npm(['pack', '--json', '--pack-destination', workdir], root);
  const [packed] = JSON.parse(stdout) as [{ filename: string; files: { path: string }[] }];
  tarball = join(workdir, packed.filename);
  packedFiles = packed.files.map((file) => file.path).sort();

  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const [esmDir, cjsDir] = await Promise.all([
    project('esm-ts', { name: 'consumer-esm', private: true, type: 'module' }),
    project('cjs', { name: 'consumer-cjs', private: true }),
  ]);
  await writeFile(
    join(esmDir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        exactOptionalPropertyTypes: true,
        noUncheckedIndexedAccess: true,
        skipLibCheck: false,
        types: ['node'],
        outDir: 'out',
      },
      include: ['main.ts'],
    }),
  );
  await writeFile(join(esmDir, 'main.ts'), program('esm'));
  await writeFile(join(cjsDir, 'main.js'), program('cjs'));
  // Type-check and compile with this repository's TypeScript. Our declaration files are
  // checked too (no skipLibCheck); errors inside other packages' types are theirs.
  const compiled = await run(process.execPath, [tsc, '-p', '.', '--pretty', 'false'], {
    cwd: esmDir,
  }).then(
    () => '',
    (err: { stdout?: string }) => String(err.stdout ?? err),
  );
  const ours = compiled
    .split('\n')
    .filter((line) => /^\S+\(\d+,\d+\): error/.test(line))
    .filter(
      (line) =>
        !line.includes('node_modules/') || line.includes(`node_modules/${rootPackage.name}/`),
    );
  if (ours.length > 0) {
    throw new Error(`The ESM TypeScript consumer does not compile:\n${ours.join('\n')}`);
  }
  const outputs = await Promise.all([
    run(process.execPath, [join(esmDir, 'out', 'main.js')], { cwd: esmDir }),
    run(process.execPath, [join(cjsDir, 'main.js')], { cwd: cjsDir }),
  ]);
  [esm, cjs] = outputs.map(({ stdout }) => JSON.parse(stdout) as Outcome) as [Outcome, Outcome];
}, 180_000);

afterAll(async () => {
  if (workdir !== '') await rm(workdir, { recursive: true, force: true });
});

describe('the published package', () => {
  it('holds only the build, README, LICENSE, CHANGELOG and package.json', () => {
    const allowed =
      /^(dist\/.+\.(js|cjs|d\.ts|d\.cts|map)|README\.md|LICENSE|CHANGELOG\.md|package\.json)$/;
    expect(packedFiles.filter((file) => !allowed.test(file))).toEqual([]);
    for (const file of ['README.md', 'LICENSE', 'CHANGELOG.md', 'package.json']) {
      expect(packedFiles).toContain(file);
    }
    for (const file of exportedFiles(rootPackage.exports)) expect(packedFiles).toContain(file);
  });

  it('imports every subpath in an ESM TypeScript project (nodenext) and in plain CommonJS', () => {
    expect(Object.keys(esm.exports).sort()).toEqual([...subpaths].sort());
    expect(cjs.exports).toEqual(esm.exports);
    for (const subpath of subpaths) expect(esm.exports[subpath]?.length).toBeGreaterThan(0);
    for (const adapter of adapters) expect(esm.exports[adapter]).toContain('contextCache');
    expect(esm.exports[rootPackage.name]).toEqual(
      expect.arrayContaining(['withCacheContext', 'contextCached', 'cached', 'detach']),
    );
    expect([esm.version, cjs.version]).toEqual([rootPackage.version, rootPackage.version]);
  });

  it('serves a request through the node:http adapter, loading once, from both projects', () => {
    for (const outcome of [esm, cjs]) {
      expect(outcome.status).toBe(200);
      expect(outcome.loads).toBe(1);
      expect(outcome.body.same).toBe(true);
      expect(outcome.body.stats).toEqual({
        hits: 1,
        joins: 1,
        misses: 1,
        loads: 1,
        errors: 0,
        evictions: 0,
        batches: 0,
      });
    }
  });

  it('adds the Server-Timing entry when asked', () => {
    for (const outcome of [esm, cjs]) {
      expect(outcome.serverTiming).toBe(
        'context-cache;desc="hits=1 joins=1 misses=1 loads=1 batches=0"',
      );
    }
  });
});
