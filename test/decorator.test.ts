import { describe, expect, it, vi } from 'vitest';
import {
  cached,
  cachedControls,
  contextCached,
  getContextCache,
  getContextData,
  type LoaderContext,
  withCacheContext,
} from '../src/index.js';
import { noUnhandledRejections } from './helpers/async.js';

interface User {
  id: number;
  name: string;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

noUnhandledRejections();

/** A repository with its own "database" and query log, as an app would have. */
class UserRepository {
  readonly queries: number[] = [];
  readonly signals: (AbortSignal | undefined)[] = [];
  constructor(readonly names: Map<number, string>) {}

  @cached('user')
  async getById(id: number, ctx?: LoaderContext): Promise<User | undefined> {
    this.queries.push(id);
    this.signals.push(ctx?.signal);
    await tick();
    const name = this.names.get(id);
    if (name === 'broken') throw new Error(`row ${id} is corrupt`);
    return name === undefined ? undefined : { id, name };
  }

  async rename(id: number, name: string): Promise<void> {
    this.names.set(id, name);
    await cachedControls(this.getById).invalidate(id);
  }

  @cached('user-by-login')
  static async byLogin(login: string): Promise<string> {
    return `${login}:${Math.random()}`;
  }
}

describe('@cached(group)', () => {
  it('loads each key once per request, sharing concurrent calls, with this bound', async () => {
    const repo = new UserRepository(new Map([[1, 'ada']]));
    await withCacheContext(async () => {
      const [a, b] = [repo.getById(1), repo.getById(1)];
      expect(a).toBe(b);
      expect(await a).toEqual({ id: 1, name: 'ada' });
      expect(await repo.getById(1)).toBe(await a);
      expect(await repo.getById(2)).toBeUndefined();
      expect(await repo.getById(2)).toBeUndefined();
      expect(getContextCache()?.stats()).toMatchObject({ hits: 2, joins: 1, misses: 2, loads: 2 });
    });
    expect(repo.queries).toEqual([1, 2]);
  });

  it('calls the method every time outside a cache context', async () => {
    const repo = new UserRepository(new Map([[1, 'ada']]));
    await repo.getById(1);
    await repo.getById(1);
    expect(repo.queries).toEqual([1, 1]);
  });

  it('keeps requests apart and hands the method the request signal', async () => {
    const repo = new UserRepository(new Map([[1, 'ada']]));
    const controller = new AbortController();
    await withCacheContext(() => repo.getById(1), { signal: controller.signal });
    await withCacheContext(() => repo.getById(1));
    expect(repo.queries).toEqual([1, 1]);
    expect(repo.signals).toEqual([controller.signal, undefined]);
  });

  it('does not cache errors: every waiter gets the rejection, the next call loads again', async () => {
    const repo = new UserRepository(new Map([[3, 'broken']]));
    await withCacheContext(async () => {
      const calls = [repo.getById(3), repo.getById(3)];
      for (const call of calls) await expect(call).rejects.toThrow('row 3 is corrupt');
      repo.names.set(3, 'fixed');
      expect(await repo.getById(3)).toEqual({ id: 3, name: 'fixed' });
    });
    expect(repo.queries).toEqual([3, 3]);
  });

  it('shares entries by group, as contextCached does, across instances and getters', async () => {
    const first = new UserRepository(new Map([[1, 'ada']]));
    const second = new UserRepository(new Map([[1, 'grace']]));
    // A function getter of the method's group, with a loader of its own: they share
    // entries, and the library says so once.
    const warned = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const getUser = contextCached('user', async (id: number) => ({ id, name: 'from function' }));
    expect(warned.mock.calls.map((call) => (call as unknown[])[2])).toEqual([
      'CONTEXT_CACHE_GROUP_REUSED',
    ]);
    warned.mockRestore();
    await withCacheContext(async () => {
      expect(await first.getById(1)).toEqual({ id: 1, name: 'ada' });
      expect(await second.getById(1)).toEqual({ id: 1, name: 'ada' });
      expect(await getUser(1)).toEqual({ id: 1, name: 'ada' });
    });
    expect(second.queries).toEqual([]);
  });

  it('decorates static methods, and composite keys work as in contextCached', async () => {
    await withCacheContext(async () => {
      expect(await UserRepository.byLogin('ada')).toBe(await UserRepository.byLogin('ada'));
    });
    class Members {
      loads = 0;
      @cached('member')
      async role(key: readonly [repoId: number, userId: number]): Promise<string> {
        this.loads++;
        return `role of ${key.join('/')}`;
      }
    }
    const members = new Members();
    await withCacheContext(async () => {
      expect(await members.role([1, 2])).toBe('role of 1/2');
      expect(await members.role([1, 2])).toBe('role of 1/2');
      expect(await members.role([12, 0])).toBe('role of 12/0');
    });
    expect(members.loads).toBe(2);
  });

  it('rejects object keys with the TypeError of contextCached, naming the method', async () => {
    const repo = new UserRepository(new Map());
    const getUser = contextCached('user id', async (id: number) => id);
    const bad = { id: 1 } as unknown as number;
    const message = (caller: string) =>
      `${caller}: key must be a string, number, bigint, boolean, null, undefined or an ` +
      'array of those, got an object. Pass the id (user.id) or a composite key ([repo.id, user.id]) instead.';
    await withCacheContext(async () => {
      expect(() => getUser(bad)).toThrow(
        new TypeError(message("the getter of contextCached('user id')")),
      );
      expect(() => repo.getById(bad)).toThrow(new TypeError(message("@cached('user') getById()")));
      expect(() => cachedControls(repo.getById).invalidate(bad)).toThrow(
        new TypeError(message("@cached('user').invalidate()")),
      );
    });
  });
});

describe('cachedControls(method)', () => {
  it('invalidates a key for the rest of the request (the write path of a repository)', async () => {
    const repo = new UserRepository(new Map([[1, 'ada']]));
    await withCacheContext(async () => {
      expect(await repo.getById(1)).toEqual({ id: 1, name: 'ada' });
      await repo.rename(1, 'ada lovelace');
      expect(await repo.getById(1)).toEqual({ id: 1, name: 'ada lovelace' });
      await expect(cachedControls(repo.getById).invalidate(2)).resolves.toBeUndefined();
    });
    expect(repo.queries).toEqual([1, 1]);
  });

  it('primes a key, and gives the same controls for every instance and the prototype', async () => {
    const repo = new UserRepository(new Map([[5, 'db value']]));
    const controls = cachedControls(repo.getById);
    expect(controls).toBe(cachedControls(UserRepository.prototype.getById));
    expect(controls).toBe(cachedControls(new UserRepository(new Map()).getById));
    expect(controls.group).toBe('user');
    expect(cachedControls(UserRepository.byLogin).group).toBe('user-by-login');
    await withCacheContext(async () => {
      controls.prime(5, { id: 5, name: 'primed' });
      expect(getContextData('user', 5)).toEqual({ id: 5, name: 'primed' });
      expect(await repo.getById(5)).toEqual({ id: 5, name: 'primed' });
    });
    expect(repo.queries).toEqual([]);
  });

  it('names the argument when given a method that is not decorated', () => {
    class Plain {
      async get(id: number) {
        return id;
      }
    }
    expect(() => cachedControls(new Plain().get)).toThrow(
      new TypeError(
        'cachedControls(): method must be a method decorated with @cached(group), such as ' +
          'repo.getById, got a function (get).',
      ),
    );
  });
});

describe('misuse', () => {
  it('checks the group and options when the decorator is made', () => {
    expect(() => cached('')).toThrow(
      new TypeError(
        "cached(): group must be a non-empty string naming what is cached, such as 'user', got an empty string.",
      ),
    );
    expect(() => cached('user', { shared: new Map() as never })).toThrow(
      new TypeError(
        'cached(): options.shared must be a cache made by createSharedCache(), got an object (Map).',
      ),
    );
    expect(() => cached('user', 5 as never)).toThrow(
      new TypeError(
        'cached(): options must be an object such as { shared, timeout: 5000 }, got a number (5).',
      ),
    );
  });

  it('explains a target that is not a method, in either form', () => {
    const decorate = cached('user') as unknown as (...args: unknown[]) => unknown;
    expect(() => decorate(undefined, { kind: 'field', name: 'user' })).toThrow(
      new TypeError(
        "@cached('user') decorates a class method such as getById(id), got a field (user).",
      ),
    );
    // Legacy forms: a field has no descriptor, an accessor has get/set.
    expect(() => decorate({}, 'user', undefined)).toThrow(
      new TypeError(
        "@cached('user') decorates a class method such as getById(id), got a field (user).",
      ),
    );
    expect(() => decorate({}, 'current', { get: () => 1, configurable: true })).toThrow(
      new TypeError(
        "@cached('user') decorates a class method such as getById(id), got a getter or setter (current).",
      ),
    );
    expect(() => decorate(async () => 1, 5)).toThrow(
      new TypeError(
        "@cached('user') decorates a class method such as getById(id), but it was called with " +
          "a number (5) as its second argument, which is neither a standard decorator's context " +
          "nor a legacy decorator's member name. Apply it with @ to a method.",
      ),
    );
  });
});
