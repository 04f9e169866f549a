// The compiler's own words for the common mistakes: each snippet is type-checked against
// the sources (as a user's editor would show it) and the message must name the fix.
import { rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const file = fileURLToPath(new URL('./types/messages.tmp.ts', import.meta.url));

const snippets = {
  dateKey: "getWithContextCache('day', new Date(), async () => 1);",
  objectKey: "getContextData('user', { id: 1 });",
  httpOptionsFirst: 'createServer(http.contextCache({ serverTiming: true }));',
  httpTypo: 'http.contextCache({ serverTimng: true });',
  fastifyCalled: 'Fastify().register(fastify.contextCache());',
} as const;

let messages: Record<keyof typeof snippets, string>;

beforeAll(() => {
  const names = Object.keys(snippets) as (keyof typeof snippets)[];
  const lines = [
    "import { createServer } from 'node:http';",
    "import Fastify from 'fastify';",
    "import * as fastify from '../../src/adapters/fastify/index.js';",
    "import * as http from '../../src/adapters/http/index.js';",
    "import { getContextData, getWithContextCache } from '../../src/index.js';",
    ...names.map((name) => snippets[name]),
  ];
  writeFileSync(file, `${lines.join('\n')}\n`);
  const config = ts.readConfigFile(`${root}/tsconfig.spec.json`, ts.sys.readFile);
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, root);
  const program = ts.createProgram([file], { ...parsed.options, noEmit: true });
  const source = program.getSourceFile(file);
  const diagnostics = ts.getPreEmitDiagnostics(program, source);
  messages = {} as typeof messages;
  names.forEach((name, i) => {
    const line = 5 + i; // zero-based line of the snippet
    const found = diagnostics.filter(
      (d) =>
        d.file === source &&
        d.start !== undefined &&
        source?.getLineAndCharacterOfPosition(d.start).line === line,
    );
    messages[name] = found
      .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))
      .join('\n');
  });
}, 60_000);

afterAll(() => rmSync(file, { force: true }));

describe('type errors name the fix', () => {
  it('a Date or object key: says what a cache key is and what to pass', () => {
    const text =
      'CacheKey must be a string, number, bigint, boolean, null, undefined or an array of them: pass date.getTime() or an id';
    expect(messages.dateKey).toContain(
      `Argument of type 'Date' is not assignable to parameter of type '"${text}"'`,
    );
    expect(messages.objectKey).toContain(
      `Argument of type '{ id: number; }' is not assignable to parameter of type '"${text}"'`,
    );
  });

  it('node:http options without a handler: says the handler comes first', () => {
    expect(messages.httpOptionsFirst).toContain(
      'contextCache(handler, options) wraps your request listener: createServer(contextCache((req, res) => { ... }, options))',
    );
    expect(messages.httpOptionsFirst).not.toContain("does not exist in type 'Handler'");
  });

  it('a misspelled node:http option: the first message is about the options', () => {
    const first = messages.httpTypo.split('\n').find((line) => line.includes('serverTimng'));
    expect(first).toContain("'serverTimng' does not exist in type 'Options'");
  });

  it('a called Fastify plugin: says arguments are missing (register it, do not call it)', () => {
    expect(messages.fastifyCalled).toMatch(/Expected 3 arguments, but got 0/);
  });
});
