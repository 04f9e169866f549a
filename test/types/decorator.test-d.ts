// Type tests of @cached and cachedControls: checked by `tsc -p tsconfig.spec.json`, never run.
import { expectTypeOf } from 'vitest';
import {
  type CachedControls,
  cached,
  cachedControls,
  type LoaderContext,
  type SharedCache,
} from '../../src/index.js';

interface User {
  id: number;
  name: string;
}
declare const db: { findUser(id: number, signal?: AbortSignal): Promise<User> };
declare const userCache: SharedCache<User>;
declare const repoCache: SharedCache<{ slug: string }>;

class UserRepository {
  @cached('user')
  async getById(id: number): Promise<User> {
    return db.findUser(id);
  }

  // The loader context is the optional second parameter.
  @cached('user-with-signal')
  async getWithSignal(id: number, ctx?: LoaderContext): Promise<User> {
    return db.findUser(id, ctx?.signal);
  }

  @cached('user', { shared: userCache })
  async getShared(id: number): Promise<User> {
    return db.findUser(id);
  }

  @cached('membership')
  async membership([repoId, userId]: readonly [number, number]): Promise<boolean> {
    return repoId === userId;
  }

  @cached('by-login')
  static async byLogin(login: string): Promise<User | undefined> {
    return login === '' ? undefined : db.findUser(1);
  }
}

// The decorated method keeps its type: the key in, a promise of the value out.
declare const repo: UserRepository;
expectTypeOf(repo.getById).toEqualTypeOf<(id: number) => Promise<User>>();
expectTypeOf(repo.getById(1)).toEqualTypeOf<Promise<User>>();
expectTypeOf(UserRepository.byLogin('ada')).toEqualTypeOf<Promise<User | undefined>>();

// cachedControls takes its key and value types from the method.
expectTypeOf(cachedControls(repo.getById)).toEqualTypeOf<CachedControls<number, User>>();
expectTypeOf(cachedControls(repo.getWithSignal).invalidate).toEqualTypeOf<
  (key: number) => Promise<void>
>();
expectTypeOf(cachedControls(repo.membership).prime).toEqualTypeOf<
  (key: readonly [number, number], value: boolean) => void
>();
expectTypeOf(cachedControls(UserRepository.byLogin)).toEqualTypeOf<
  CachedControls<string, User | undefined>
>();
// @ts-expect-error invalidate takes the method's key type
cachedControls(repo.getById).invalidate('1');
// @ts-expect-error prime takes the method's value type
cachedControls(repo.getById).prime(1, { id: 1 });
// @ts-expect-error cachedControls needs a method that takes a key and returns a promise
cachedControls((a: number, b: number) => a + b);

class Misuse {
  // @ts-expect-error an object parameter is not a cache key: take the id
  @cached('user')
  async byFilter(filter: { name: string }): Promise<User> {
    return db.findUser(filter.name.length);
  }

  // @ts-expect-error a synchronous method would become async: return a promise
  @cached('user')
  getSync(id: number): User {
    return { id, name: '' };
  }

  // @ts-expect-error a shared cache must hold the method's value type
  @cached('user', { shared: repoCache })
  async getMismatched(id: number): Promise<User> {
    return db.findUser(id);
  }

  // @ts-expect-error only methods can be decorated
  @cached('user')
  field = async (id: number): Promise<User> => db.findUser(id);

  // @ts-expect-error a getter cannot be decorated
  @cached('user')
  get current(): Promise<User> {
    return db.findUser(1);
  }
}
expectTypeOf<Misuse>().toBeObject();

// @ts-expect-error the group is a string
cached(1);
// @ts-expect-error options.shared is a shared cache
cached('user', { shared: new Map() });
