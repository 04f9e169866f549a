/**
 * The built root entry is portable: it imports nothing of Node's but AsyncLocalStorage
 * (node:diagnostics_channel only where present, dynamically), and every Node global it
 * touches is checked for first. Scans dist/ (npm test builds before it tests); the
 * runtime suites show the same by running it (workerd.test.ts: `nodejs_als` alone).
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { root } from './driver.js';

const entries = ['dist/index.js', 'dist/index.cjs'];

/** Every import the bundle of `entry` makes, with its dependencies (lru-cache) inlined. */
async function importsOf(entry: string) {
  const result = await build({
    entryPoints: [join(root, entry)],
    bundle: true,
    write: false,
    metafile: true,
    format: 'esm',
    platform: 'neutral',
    mainFields: ['module', 'main'],
    external: ['node:*'],
    logLevel: 'silent',
  });
  const found = new Set<string>();
  for (const input of Object.values(result.metafile.inputs)) {
    for (const imported of input.imports) {
      if (imported.external) found.add(`${imported.kind} ${imported.path}`);
    }
  }
  return [...found].sort();
}

/** The names a file imports from `module` with static import statements. */
function namedImports(source: string, module: string): string[] {
  const file = ts.createSourceFile('entry.js', source, ts.ScriptTarget.ES2022, true);
  const names: string[] = [];
  for (const statement of file.statements) {
    if (!ts.isImportDeclaration(statement)) continue;
    if ((statement.moduleSpecifier as ts.StringLiteral).text !== module) continue;
    const bindings = statement.importClause?.namedBindings;
    if (bindings !== undefined && ts.isNamedImports(bindings)) {
      for (const element of bindings.elements) {
        names.push((element.propertyName ?? element.name).text);
      }
    } else {
      names.push('* or default');
    }
  }
  return names;
}

const NODE_GLOBALS = new Set([
  'Buffer',
  'process',
  'setImmediate',
  'performance',
  'Deno',
  'global',
]);
/** Guards the source uses for Node's warnings (warnings.ts). */
const GUARD_CALLS = ['canEmitWarning()'];

/**
 * Node globals read by `source` without a check first: a free identifier from
 * NODE_GLOBALS that is not itself the operand of `typeof` and has no enclosing condition
 * that tests it, plus any `.unref()` called on a value that was not checked for it.
 */
function unguardedGlobals(source: string): string[] {
  const file = ts.createSourceFile('entry.js', source, ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const guarded = (node: ts.Node, name: string): boolean => {
    for (let at: ts.Node | undefined = node; at !== undefined; at = at.parent) {
      const parent: ts.Node | undefined = at.parent;
      if (parent === undefined) return false;
      let condition: ts.Node | undefined;
      if (ts.isIfStatement(parent) && parent.expression !== at) condition = parent.expression;
      if (ts.isConditionalExpression(parent) && parent.condition !== at)
        condition = parent.condition;
      if (
        ts.isBinaryExpression(parent) &&
        parent.operatorToken.kind === ts.SyntaxKind.AmpersandAmpersandToken &&
        parent.right === at
      ) {
        condition = parent.left;
      }
      if (condition !== undefined) {
        const text = condition.getText(file);
        if (text.includes(`typeof ${name}`) || GUARD_CALLS.some((call) => text.includes(call))) {
          return true;
        }
      }
    }
    return false;
  };
  const visit = (node: ts.Node): void => {
    if (ts.isIdentifier(node) && NODE_GLOBALS.has(node.text)) {
      const parent = node.parent;
      const isName =
        (ts.isPropertyAccessExpression(parent) && parent.name === node) ||
        (ts.isPropertyAssignment(parent) && parent.name === node) ||
        ts.isVariableDeclaration(parent) ||
        ts.isParameter(parent);
      const isTypeof = ts.isTypeOfExpression(parent);
      if (!isName && !isTypeof && !guarded(node, node.text)) {
        found.push(`${node.text}: ${parent.getText(file).slice(0, 80)}`);
      }
    }
    if (
      ts.isCallExpression(node) &&
      ts.isPropertyAccessExpression(node.expression) &&
      node.expression.name.text === 'unref'
    ) {
      found.push(`unref(): ${node.getText(file).slice(0, 80)}`);
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

describe('the built root entry', () => {
  for (const entry of entries) {
    it(`${entry} imports only AsyncLocalStorage of Node's statically, node:diagnostics_channel dynamically, lru-cache and msgpackr`, async () => {
      const source = readFileSync(join(root, entry), 'utf8');
      expect(await importsOf(entry)).toEqual([
        'dynamic-import node:diagnostics_channel',
        entry.endsWith('.cjs')
          ? 'require-call node:async_hooks'
          : 'import-statement node:async_hooks',
      ]);
      if (entry.endsWith('.js')) {
        expect(namedImports(source, 'node:async_hooks')).toEqual(['AsyncLocalStorage']);
        const imported = ts
          .createSourceFile('entry.js', source, ts.ScriptTarget.ES2022, true)
          .statements.filter(ts.isImportDeclaration)
          .map((statement) => (statement.moduleSpecifier as ts.StringLiteral).text);
        expect(imported.sort()).toEqual(['lru-cache', 'msgpackr', 'node:async_hooks']);
      }
    });

    it(`${entry} checks for every Node global before it uses one`, () => {
      expect(unguardedGlobals(readFileSync(join(root, entry), 'utf8'))).toEqual([]);
    });
  }

  it('the scan finds what it looks for', () => {
    // The check itself must be able to fail: unguarded uses are reported, guarded ones not.
    expect(
      unguardedGlobals(
        'const n = Buffer.byteLength(s); setInterval(f, 5).unref(); process.emitWarning(m);',
      ),
    ).toEqual([
      'Buffer: Buffer.byteLength',
      'unref(): setInterval(f, 5).unref()',
      'process: process.emitWarning',
    ]);
    expect(
      unguardedGlobals(
        'if (typeof Buffer === "function") Buffer.byteLength(s); const p = globalThis.process; typeof setImmediate === "function" ? setImmediate(f) : setTimeout(f, 0);',
      ),
    ).toEqual([]);
  });
});
