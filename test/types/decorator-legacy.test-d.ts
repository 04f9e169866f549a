// Type tests of @cached under experimentalDecorators and emitDecoratorMetadata, the
// settings of every Nest project: checked by `tsc -p tsconfig.decorators-legacy.json`
// (which also checks decorator.test-d.ts in this mode), never run.
import { Injectable } from '@nestjs/common';
import { expectTypeOf } from 'vitest';
import {
  type CachedControls,
  type CachedDecorator,
  cached,
  cachedControls,
  type LoaderContext,
} from '../../src/index.js';

interface Author {
  id: number;
  name: string;
}

@Injectable()
class AuthorsDb {
  async find(id: number, signal?: AbortSignal): Promise<Author> {
    return { id, name: signal?.aborted ? '' : 'ada' };
  }
}

@Injectable()
class AuthorsService {
  constructor(private readonly db: AuthorsDb) {}

  @cached('author')
  async getById(id: number, ctx?: LoaderContext): Promise<Author> {
    return this.db.find(id, ctx?.signal);
  }

  @cached('author-slug')
  static async bySlug(slug: string): Promise<number> {
    return slug.length;
  }

  // @ts-expect-error an object parameter is not a cache key: take the id
  @cached('author')
  async byFilter(filter: { name: string }): Promise<Author> {
    return this.db.find(filter.name.length);
  }

  // @ts-expect-error a synchronous method would become async: return a promise
  @cached('author')
  getSync(id: number): Author {
    return { id, name: '' };
  }

  // @ts-expect-error only methods can be decorated, not fields
  @cached('author')
  field = async (id: number): Promise<Author> => this.db.find(id);

  // @ts-expect-error a getter cannot be decorated
  @cached('author')
  get current(): Promise<Author> {
    return this.db.find(1);
  }
}

// The method keeps its type under legacy decorators, and the controls are typed from it.
declare const service: AuthorsService;
expectTypeOf(service.getById).toEqualTypeOf<(id: number, ctx?: LoaderContext) => Promise<Author>>();
expectTypeOf(cachedControls(service.getById)).toEqualTypeOf<CachedControls<number, Author>>();
expectTypeOf(cachedControls(AuthorsService.bySlug)).toEqualTypeOf<CachedControls<string, number>>();
// @ts-expect-error invalidate takes the method's key type
cachedControls(service.getById).invalidate('1');

// One decorator type serves both forms.
expectTypeOf(cached('author')).toEqualTypeOf<CachedDecorator<unknown>>();
expectTypeOf(cached<Author>('author')).toEqualTypeOf<CachedDecorator<Author>>();
