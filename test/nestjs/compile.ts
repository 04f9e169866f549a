/**
 * Compile a Nest app of test/nestjs/app the way `nest new` sets a project up: the
 * TypeScript compiler with experimentalDecorators and emitDecoratorMetadata (esbuild,
 * which runs the other tests, emits no decorator metadata, and Nest's injection needs
 * it). The output goes under node_modules/.cache, so that the app resolves the
 * project's node_modules, and is imported from there by the test.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface CompiledApp {
  /** Import a compiled module of the app, by its source path (`test/nestjs/app/http.ts`). */
  load<T>(source: string): Promise<T>;
  /** Remove the output. */
  remove(): void;
}

export function compileNestApp(
  entries: string[],
  { emitDecoratorMetadata = true }: { emitDecoratorMetadata?: boolean } = {},
): CompiledApp {
  const cache = join(root, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const outDir = mkdtempSync(join(cache, 'context-cache-nest-'));
  // Below node_modules Node looks for no package.json of ours: say the output is ESM.
  writeFileSync(join(outDir, 'package.json'), '{ "type": "module" }\n');
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    experimentalDecorators: true,
    emitDecoratorMetadata,
    useDefineForClassFields: false,
    strict: true,
    skipLibCheck: true,
    types: ['node'],
    rootDir: root,
    outDir,
  };
  const program = ts.createProgram(
    entries.map((entry) => resolve(root, entry)),
    options,
  );
  const result = program.emit();
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...result.diagnostics];
  if (diagnostics.length > 0) {
    rmSync(outDir, { recursive: true, force: true });
    throw new Error(
      ts.formatDiagnostics(diagnostics, {
        getCanonicalFileName: (name) => name,
        getCurrentDirectory: () => root,
        getNewLine: () => '\n',
      }),
    );
  }
  return {
    load: <T>(source: string) => {
      const out = join(outDir, source.replace(/\.ts$/, '.js'));
      return import(pathToFileURL(out).href) as Promise<T>;
    },
    remove: () => rmSync(outDir, { recursive: true, force: true }),
  };
}
