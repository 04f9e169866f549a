/**
 * Every code block in README.md is checked, so an example that no longer works fails the
 * build. What a block's info string asks for:
 *
 * - ```` ```ts ````: type-checked (strict, `moduleResolution: nodenext`) against the built
 *   package, as a module of its own. The globals the examples take for granted (`db`,
 *   `log`, `app`, ...) are declared in test/readme/prelude.ts.
 * - ```` ```ts run ````: type-checked, then compiled and run with Node (the prelude's
 *   in-memory database installed first); its standard output must equal the ```` ```text ````
 *   block that follows it.
 * - ```` ```ts nest ````: type-checked as a Nest project compiles (`experimentalDecorators`,
 *   `emitDecoratorMetadata`), in a program of its own; test/nestjs runs such an app.
 * - ```` ```ts server GET /path ````: type-checked, then started as a child process whose
 *   `listen(...)` is redirected to an ephemeral port on 127.0.0.1; one request is sent to
 *   the path, and the response body must equal the ```` ```text ```` block that follows.
 * - ```` ```js run ```` and ```` ```js server GET /path ````: CommonJS (`require`), run as a
 *   `.cjs` file the same way as the `ts` blocks of that mode (not type-checked).
 * - ```` ```sh ````: each command is checked against the repository: `npm run`, `npm start`
 *   and `npm test` name scripts of package.json, `npm i` installs this package or its
 *   peer dependencies, `node <file>` and `bash <file>` name files that exist, `npx <bin>`
 *   names an installed binary. A command the test does not know fails it.
 *
 * Any other block (another language, or a ```` ```text ```` block not after a running
 * one) fails, so a new kind of block cannot slip through unchecked. Needs a build
 * (`npm test` builds first).
 */

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { transform } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
  name: string;
  scripts: Record<string, string>;
  peerDependencies?: Record<string, string>;
};

interface Block {
  /** 1-based README line of the block's first code line. */
  line: number;
  lang: string;
  meta: string[];
  code: string;
  /** For `run` and `server` blocks: the text block that follows. */
  expected?: string;
}

/** The fenced code blocks of a Markdown document, in order. */
function parseBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,})(.*)$/.exec(lines[i] ?? '');
    if (open === null) continue;
    const [, indent = '', fence = '', info = ''] = open;
    const [lang = '', ...meta] = info.trim().split(/\s+/).filter(Boolean);
    const code: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !(lines[j] ?? '').trimStart().startsWith(fence); j++) {
      code.push((lines[j] ?? '').slice(indent.length));
    }
    blocks.push({ line: i + 2, lang, meta, code: code.join('\n') });
    i = j;
  }
  return blocks;
}

const readme = await readFile(join(root, 'README.md'), 'utf8');
const blocks = parseBlocks(readme);
const tsBlocks: Block[] = [];
const problems: string[] = [];
for (let i = 0; i < blocks.length; i++) {
  const block = blocks[i] as Block;
  if (block.lang === 'js' && block.meta[0] !== 'run' && block.meta[0] !== 'server') {
    problems.push(`line ${block.line}: a js block must be \`js run\` or \`js server GET /path\``);
  }
  if (block.lang === 'ts' || block.lang === 'js') {
    if (block.lang === 'ts') tsBlocks.push(block);
    const mode = block.meta[0];
    if (mode === 'run' || mode === 'server') {
      const next = blocks[i + 1];
      if (next?.lang !== 'text') {
        problems.push(
          `line ${block.line}: a \`${block.lang} ${mode}\` block must be followed by a text block`,
        );
      } else {
        block.expected = next.code;
        i++;
      }
      if (
        mode === 'server' &&
        !/^(GET|POST|PUT|DELETE) \/\S*$/.test(block.meta.slice(1).join(' '))
      ) {
        problems.push(`line ${block.line}: write \`${block.lang} server GET /path\``);
      }
    } else if (mode !== undefined && mode !== 'nest' && block.lang === 'ts') {
      problems.push(
        `line ${block.line}: unknown mode "ts ${mode}" (ts, ts run, ts server, ts nest)`,
      );
    }
  } else if (block.lang !== 'sh') {
    problems.push(
      `line ${block.line}: a "${block.lang}" block is not checked; use ts, ts run, ts server, js run, js server or sh` +
        (block.lang === 'text' ? ' (a text block must follow a ts run or ts server block)' : ''),
    );
  }
}

/** Problems with one shell command line, or none. */
function checkCommand(line: string): string[] {
  const out: string[] = [];
  const command = line.replace(/\s+#.*$/, '').trim();
  if (command === '' || command.startsWith('#')) return out;
  for (const part of command.split(/\s*&&\s*/)) {
    const words = part
      .split(/\s+/)
      .filter((word) => !/^[A-Z_][A-Z0-9_]*=/.test(word))
      .filter(Boolean);
    const [tool, sub, ...rest] = words;
    const args = rest.filter((word) => !word.startsWith('-'));
    if (
      tool === 'npm' &&
      (sub === 'ci' || ((sub === 'i' || sub === 'install') && args.length === 0))
    )
      continue;
    if (tool === 'npm' && (sub === 'i' || sub === 'install')) {
      const known = new Set([pkg.name, ...Object.keys(pkg.peerDependencies ?? {})]);
      for (const name of args.map((arg) => arg.replace(/(.)@.*$/, '$1'))) {
        if (!known.has(name)) out.push(`npm i ${name}: not this package or one of its peers`);
      }
      continue;
    }
    if (tool === 'npm' && (sub === 'start' || sub === 'test')) {
      if (pkg.scripts[sub] === undefined) out.push(`npm ${sub}: no "${sub}" script`);
      continue;
    }
    if (tool === 'npm' && sub === 'run') {
      const script = rest[0] ?? '';
      if (pkg.scripts[script] === undefined) out.push(`npm run ${script}: no such script`);
      continue;
    }
    if (tool === 'npx') {
      if (!existsSync(join(root, 'node_modules', '.bin', sub ?? ''))) {
        out.push(`npx ${sub}: not installed`);
      }
      continue;
    }
    if ((tool === 'node' || tool === 'bash') && sub !== undefined) {
      if (!existsSync(join(root, sub))) out.push(`${tool} ${sub}: no such file`);
      continue;
    }
    out.push(`"${part}": the README test does not know how to check this command`);
  }
  return out;
}

let workdir = '';
const typeErrors = new Map<Block, string[]>();
const preludeErrors: string[] = [];

/** A temporary project that resolves this package and every root dependency by name. */
async function setUpProject(): Promise<void> {
  workdir = await mkdtemp(join(tmpdir(), 'context-cache-readme-'));
  const modules = join(workdir, 'node_modules');
  await mkdir(modules);
  for (const entry of await readdir(join(root, 'node_modules'))) {
    if (entry.startsWith('.')) continue;
    await symlink(join(root, 'node_modules', entry), join(modules, entry), 'dir');
  }
  await symlink(root, join(modules, pkg.name), 'dir');
  await writeFile(join(workdir, 'package.json'), '{ "type": "module", "private": true }\n');
  await writeFile(
    join(workdir, 'prelude.ts'),
    await readFile(join(root, 'test/readme/prelude.ts')),
  );
  await writeFile(
    join(workdir, 'listen.mjs'),
    [
      "import net from 'node:net';",
      'const listen = net.Server.prototype.listen;',
      '// Whatever port and host the example asks for, listen on an ephemeral loopback port.',
      'net.Server.prototype.listen = function (...args) {',
      "  const done = typeof args.at(-1) === 'function' ? args.at(-1) : undefined;",
      "  this.once('listening', () => process.send?.({ port: this.address().port }));",
      "  return done ? listen.call(this, 0, '127.0.0.1', done) : listen.call(this, 0, '127.0.0.1');",
      '};',
    ].join('\n'),
  );
}

const fileOf = (block: Block) => `block-${block.line}.ts`;

async function typeCheck(): Promise<void> {
  const isNest = (block: Block) => block.meta[0] === 'nest';
  await typeCheckProgram(
    'tsconfig.json',
    tsBlocks.filter((block) => !isNest(block)),
    {},
  );
  // Nest projects compile with legacy decorators and their metadata.
  await typeCheckProgram('tsconfig.nest.json', tsBlocks.filter(isNest), {
    experimentalDecorators: true,
    emitDecoratorMetadata: true,
  });
}

async function typeCheckProgram(
  config: string,
  checked: Block[],
  extraOptions: Record<string, boolean>,
): Promise<void> {
  if (checked.length === 0) return;
  for (const block of checked) {
    await writeFile(join(workdir, fileOf(block)), `${block.code}\nexport {};\n`);
  }
  await writeFile(
    join(workdir, config),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        lib: ['ES2023'],
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        types: ['node'],
        ...extraOptions,
      },
      files: ['prelude.ts', ...checked.map(fileOf)],
    }),
  );
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const output = await run(process.execPath, [tsc, '-p', config, '--pretty', 'false'], {
    cwd: workdir,
  }).then(
    () => '',
    (err: { stdout?: string }) => String(err.stdout ?? err),
  );
  let current: string[] | undefined;
  for (const line of output.split('\n')) {
    const error = /^(block-(\d+)\.ts|prelude\.ts)\((\d+),(\d+)\): (.*)$/.exec(line);
    if (error === null) {
      if (current !== undefined && line.trim() !== '') current.push(line);
      continue;
    }
    const [, file, blockLine, row = '0', col, message] = error;
    const block = checked.find((b) => String(b.line) === blockLine);
    if (file === 'prelude.ts' || block === undefined) {
      current = preludeErrors;
      current.push(`${file}(${row},${col}): ${message}`);
    } else {
      current = typeErrors.get(block) ?? [];
      typeErrors.set(block, current);
      current.push(`README.md:${block.line + Number(row) - 1}:${col} ${message}`);
    }
  }
}

/** Write a block to a file Node runs: `ts` compiled to ESM, `js` as it is, as CommonJS. */
async function compile(name: string, source: string, lang = 'ts'): Promise<string> {
  if (lang === 'js') {
    const file = join(workdir, name.replace(/\.mjs$/, '.cjs'));
    await writeFile(file, source);
    return file;
  }
  const out = await transform(source, { loader: 'ts', format: 'esm', target: 'es2022' });
  const file = join(workdir, name);
  await writeFile(file, out.code);
  return file;
}

function collect(child: ChildProcess): { stdout: () => string; stderr: () => string } {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  return { stdout: () => stdout, stderr: () => stderr };
}

async function runBlock(block: Block): Promise<string> {
  const file = await compile(`block-${block.line}.mjs`, block.code, block.lang);
  const { stdout } = await run(process.execPath, ['--import', './prelude.mjs', file], {
    cwd: workdir,
    timeout: 20_000,
  });
  return stdout;
}

async function serveBlock(block: Block): Promise<{ status: number; body: string }> {
  const file = await compile(`block-${block.line}.mjs`, block.code, block.lang);
  const [method = 'GET', path = '/'] = block.meta.slice(1);
  const child = spawn(
    process.execPath,
    ['--import', './prelude.mjs', '--import', './listen.mjs', file],
    { cwd: workdir, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
  );
  const output = collect(child);
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  try {
    const port = await new Promise<number>((done, fail) => {
      const timer = setTimeout(
        () => fail(new Error('the server did not listen within 20 s')),
        20_000,
      );
      child.once('message', (message) => {
        clearTimeout(timer);
        done((message as { port: number }).port);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`the server exited (${code}) before listening:\n${output.stderr()}`));
      });
    });
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      signal: AbortSignal.timeout(20_000),
    });
    return { status: response.status, body: await response.text() };
  } finally {
    child.kill();
    await exited;
  }
}

beforeAll(async () => {
  if (!existsSync(join(root, 'dist', 'index.js'))) {
    throw new Error('The README test runs the examples against dist/: run `npm run build` first.');
  }
  await setUpProject();
  await typeCheck();
  await compile('prelude.mjs', await readFile(join(root, 'test/readme/prelude.ts'), 'utf8'));
}, 120_000);

afterAll(async () => {
  if (workdir !== '') await rm(workdir, { recursive: true, force: true });
});

describe('README.md code blocks', () => {
  it('are all of a kind this test checks', () => {
    expect(blocks.length).toBeGreaterThan(0);
    expect(problems).toEqual([]);
  });

  it('share a prelude that compiles', () => {
    expect(preludeErrors).toEqual([]);
  });

  for (const block of blocks) {
    const title = `line ${block.line}: ${[block.lang, ...block.meta].join(' ')}`;
    if (block.lang === 'sh') {
      it(`${title} names scripts, packages and files that exist`, () => {
        expect(block.code.split('\n').flatMap(checkCommand)).toEqual([]);
      });
    }
    if (block.lang !== 'ts' && block.lang !== 'js') continue;
    if (block.lang === 'ts') {
      it(`${title} type-checks`, () => {
        expect(typeErrors.get(block) ?? []).toEqual([]);
      });
    }
    if (block.meta[0] === 'run') {
      it(`${title} prints what the README shows`, async () => {
        expect((await runBlock(block)).trimEnd()).toBe((block.expected ?? '').trimEnd());
      });
    }
    if (block.meta[0] === 'server') {
      it(`${title} answers ${block.meta.slice(1).join(' ')} as the README shows`, async () => {
        const { status, body } = await serveBlock(block);
        expect(status).toBe(200);
        expect(body.trimEnd()).toBe((block.expected ?? '').trimEnd());
      });
    }
  }
});

describe('README.md Troubleshooting', () => {
  it('explains every warning and error code the sources emit', async () => {
    const codes = new Set<string>();
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) await walk(path);
        else if (/\.ts$/.test(entry.name) && !/\.test(-d)?\.ts$/.test(entry.name)) {
          for (const m of (await readFile(path, 'utf8')).matchAll(/CONTEXT_CACHE_[A-Z_]+/g))
            codes.add(m[0]);
        }
      }
    };
    await walk(join(root, 'src'));
    expect(codes.size).toBeGreaterThan(0);
    const section = readme.split(/^## Troubleshooting$/m)[1]?.split(/^## /m)[0] ?? '';
    const explained = new Set(
      [...section.matchAll(/^\| `(CONTEXT_CACHE_[A-Z_]+)` \|/gm)].map((m) => m[1]),
    );
    expect([...codes].filter((code) => !explained.has(code))).toEqual([]);
  });
});
