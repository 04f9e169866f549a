// @cached under TypeScript's experimentalDecorators, as every Nest project compiles: the
// class below is compiled by the TypeScript compiler itself (not esbuild), with and
// without emitDecoratorMetadata, and run.
import 'reflect-metadata';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import {
  cached,
  cachedControls,
  getContextCache,
  getContextData,
  type LoaderContext,
  withCacheContext,
} from '../src/index.js';

const source = `
class UserService {
  constructor(names) { this.names = names; this.queries = []; this.signals = []; }

  @cached('legacy-user')
  async getById(id: number, ctx?: LoaderContext): Promise<string | undefined> {
    this.queries.push(id);
    this.signals.push(ctx?.signal);
    await new Promise((resolve) => setImmediate(resolve));
    const name = this.names.get(id);
    if (name === 'broken') throw new Error('row ' + id + ' is corrupt');
    return name;
  }

  async rename(id: number, name: string): Promise<void> {
    this.names.set(id, name);
    await cachedControls(this.getById).invalidate(id);
  }

  @cached('legacy-slug')
  static async bySlug(slug: string): Promise<string> {
    return slug + ':' + Math.random();
  }
}
return UserService;
`;

interface UserService {
  readonly names: Map<number, string>;
  readonly queries: number[];
  readonly signals: (AbortSignal | undefined)[];
  getById(id: number, ctx?: LoaderContext): Promise<string | undefined>;
  rename(id: number, name: string): Promise<void>;
}
interface UserServiceClass {
  new (names: Map<number, string>): UserService;
  bySlug(slug: string): Promise<string>;
  readonly prototype: UserService;
}

/** The prefix of the groups of the copy compiled with or without metadata. */
function groupPrefix(emitDecoratorMetadata: boolean): string {
  return `legacy-${emitDecoratorMetadata ? 'metadata' : 'plain'}-`;
}

/** Compile the class with tsc's legacy decorators and evaluate it with our exports. */
function compile(emitDecoratorMetadata: boolean): { js: string; UserService: UserServiceClass } {
  // Each compiled copy gets groups of its own (two classes sharing a group would warn).
  const groups = source.replaceAll("'legacy-", `'${groupPrefix(emitDecoratorMetadata)}`);
  const { outputText: js } = ts.transpileModule(groups, {
    compilerOptions: {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      experimentalDecorators: true,
      emitDecoratorMetadata,
      useDefineForClassFields: false,
    },
  });
  const UserService = new Function('cached', 'cachedControls', js)(
    cached,
    cachedControls,
  ) as UserServiceClass;
  return { js, UserService };
}

for (const emitDecoratorMetadata of [false, true]) {
  describe(`@cached under experimentalDecorators, emitDecoratorMetadata ${emitDecoratorMetadata ? 'on' : 'off'}`, () => {
    const { js, UserService } = compile(emitDecoratorMetadata);

    it('is applied in the legacy form (the compiled code calls __decorate)', () => {
      expect(js).toContain('__decorate([');
      expect(js.includes('design:paramtypes')).toBe(emitDecoratorMetadata);
    });

    it('loads each key once per request, sharing concurrent calls, with this bound', async () => {
      const service = new UserService(new Map([[1, 'ada']]));
      const controller = new AbortController();
      await withCacheContext(
        async () => {
          const [a, b] = [service.getById(1), service.getById(1)];
          expect(a).toBe(b);
          expect(await a).toBe('ada');
          expect(await service.getById(1)).toBe('ada');
          expect(await service.getById(2)).toBeUndefined();
          expect(getContextCache()?.stats()).toMatchObject({ hits: 1, joins: 1, misses: 2 });
        },
        { signal: controller.signal },
      );
      await withCacheContext(() => service.getById(1));
      expect(service.queries).toEqual([1, 2, 1]);
      expect(service.signals[0]).toBe(controller.signal);
    });

    it('calls the method every time outside a cache context, and does not cache errors', async () => {
      const service = new UserService(new Map([[3, 'broken']]));
      await service.getById(3).catch(() => undefined);
      await service.getById(3).catch(() => undefined);
      await withCacheContext(async () => {
        await expect(service.getById(3)).rejects.toThrow('row 3 is corrupt');
        service.names.set(3, 'fixed');
        expect(await service.getById(3)).toBe('fixed');
      });
      expect(service.queries).toEqual([3, 3, 3, 3]);
    });

    it('has the same cachedControls, for instances, the prototype and static methods', async () => {
      const service = new UserService(new Map([[1, 'ada']]));
      const controls = cachedControls(service.getById);
      expect(controls).toBe(cachedControls(UserService.prototype.getById));
      const prefix = groupPrefix(emitDecoratorMetadata);
      expect(controls.group).toBe(`${prefix}user`);
      expect(cachedControls(UserService.bySlug).group).toBe(`${prefix}slug`);
      await withCacheContext(async () => {
        expect(await service.getById(1)).toBe('ada');
        await service.rename(1, 'ada lovelace');
        expect(await service.getById(1)).toBe('ada lovelace');
        controls.prime(7, 'primed');
        expect(getContextData(`${prefix}user`, 7)).toBe('primed');
        expect(await service.getById(7)).toBe('primed');
        expect(await UserService.bySlug('x')).toBe(await UserService.bySlug('x'));
      });
      expect(service.queries).toEqual([1, 1]);
    });

    it(`keeps the design-time metadata Nest reads, when the compiler emits it`, () => {
      const meta = (key: string) =>
        Reflect.getMetadata(key, UserService.prototype, 'getById') as unknown;
      if (emitDecoratorMetadata) {
        expect(meta('design:paramtypes')).toEqual([Number, Object]);
        expect(meta('design:returntype')).toBe(Promise);
        expect(meta('design:type')).toBe(Function);
      } else {
        expect(meta('design:paramtypes')).toBeUndefined();
      }
    });
  });
}
