import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type CacheKey,
  contextCached,
  getContextData,
  getWithContextCache,
  getWithContextCacheSync,
  hasContextData,
  type KeyPart,
  removeContextData,
  setContextData,
  withCacheContext,
  withNoCacheContext,
} from '../src/index.js';
import { encodeKey } from '../src/keys.js';

/** Store each key under its own index, then read every key back. */
function roundTrip(keys: CacheKey[]): unknown[] {
  return withCacheContext(() => {
    keys.forEach((key, i) => {
      setContextData('k', key, i);
    });
    return keys.map((key) => getContextData('k', key));
  });
}

describe('keys', () => {
  it('primitives compare by value and by type', () => {
    const keys: CacheKey[] = [1, '1', true, 'true', 1n, 0, '', false, null, undefined, NaN, 'NaN'];
    expect(roundTrip(keys)).toEqual(keys.map((_, i) => i));
    withCacheContext(() => {
      setContextData('k', NaN, 'nan');
      expect(getContextData('k', Number.NaN)).toBe('nan');
      setContextData('k', 5, 'five');
      expect(getContextData('k', 5)).toBe('five');
      expect(getContextData('k', 5n)).toBeUndefined();
    });
  });

  it('arrays of primitives are composite keys compared by value', async () => {
    await withCacheContext(async () => {
      let loads = 0;
      const load = async () => ++loads;
      await getWithContextCache('perm', [1, 2], load);
      expect(await getWithContextCache('perm', [1, 2], load)).toBe(1);
      expect(await getWithContextCache('perm', [2, 1], load)).toBe(2);
      expect(getWithContextCacheSync('perm', [1, 2], () => 0)).toBe(1);
    });
  });

  it('never collides the cases that naive encodings collide', () => {
    const keys: CacheKey[] = [
      ['a,b'],
      ['a', 'b'],
      [1],
      ['1'],
      [null],
      [undefined],
      [],
      [''],
      ['', ''],
      '["a"]',
      ['a'],
      'a',
      ['s1:a'],
      [1n],
      [true],
      ['t'],
      [NaN],
    ];
    expect(roundTrip(keys)).toEqual(keys.map((_, i) => i));
  });

  it('no two different keys share an entry (property)', () => {
    const part: fc.Arbitrary<KeyPart> = fc.oneof(
      fc.string({ maxLength: 6 }),
      fc.constantFrom('', ',', ':', ';', 's1:', 'n1;', 'a'),
      fc.integer({ min: -3, max: 3 }),
      fc.double(),
      fc.bigInt({ min: -3n, max: 3n }),
      fc.boolean(),
      fc.constant(null),
      fc.constant(undefined),
    );
    const key: fc.Arbitrary<CacheKey> = fc.oneof(part, fc.array(part, { maxLength: 4 }));
    // The same key means: the same primitive (SameValueZero), or arrays of the same length
    // whose elements are the same primitives.
    const same = (a: CacheKey, b: CacheKey): boolean => {
      if (Array.isArray(a) && Array.isArray(b)) {
        return a.length === b.length && a.every((x, i) => new Set([x]).has(b[i]));
      }
      return !Array.isArray(a) && !Array.isArray(b) && new Set([a]).has(b);
    };
    fc.assert(
      fc.property(key, key, (a, b) => {
        withCacheContext(() => {
          setContextData('p', a, 'a');
          setContextData('p', b, 'b');
          expect(getContextData('p', a)).toBe(same(a, b) ? 'b' : 'a');
        });
        // The string encoding used by shared stores is injective too.
        expect(encodeKey('test', a) === encodeKey('test', b)).toBe(same(a, b));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('misuse is a TypeError that says what to pass', () => {
  const keyMessage = (fn: string, got: string) =>
    `${fn}(): key must be a string, number, bigint, boolean, null, undefined or an array of those, got ${got}. Pass the id (user.id) or a composite key ([repo.id, user.id]) instead.`;

  it('object and function keys', () => {
    for (const scoped of [true, false]) {
      const run = (fn: () => unknown) => (scoped ? withCacheContext(fn) : withNoCacheContext(fn));
      run(() => {
        expect(() => getWithContextCache('user', { id: 1 } as never, async () => 1)).toThrow(
          new TypeError(keyMessage('getWithContextCache', 'an object')),
        );
        expect(() => getWithContextCache('user', new Map() as never, async () => 1)).toThrow(
          new TypeError(keyMessage('getWithContextCache', 'an object (Map)')),
        );
        expect(() => getWithContextCacheSync('user', (() => 1) as never, () => 1)).toThrow(
          new TypeError(keyMessage('getWithContextCacheSync', 'a function')),
        );
        expect(() => setContextData('user', Symbol('s') as never, 1)).toThrow(
          new TypeError(keyMessage('setContextData', 'a symbol (s)')),
        );
        expect(() => getContextData('user', {} as never)).toThrow(
          new TypeError(keyMessage('getContextData', 'an object')),
        );
        expect(() => hasContextData('user', {} as never)).toThrow(TypeError);
        expect(() => removeContextData('user', {} as never)).toThrow(TypeError);
      });
    }
  });

  it('an object inside a composite key', () => {
    withCacheContext(() => {
      expect(() => getWithContextCache('perm', [1, { id: 2 }] as never, async () => 1)).toThrow(
        new TypeError(
          'getWithContextCache(): key[1] must be a string, number, bigint, boolean, null or undefined, got an object. A composite key holds primitives only, such as [repo.id, user.id].',
        ),
      );
      expect(() => setContextData('perm', [[1]] as never, 1)).toThrow(
        new TypeError(
          'setContextData(): key[0] must be a string, number, bigint, boolean, null or undefined, got an array. A composite key holds primitives only, such as [repo.id, user.id].',
        ),
      );
    });
  });

  it('an empty or non-string group', () => {
    const message = (fn: string, got: string) =>
      `${fn}(): group must be a non-empty string naming what is cached, such as 'user', got ${got}.`;
    withCacheContext(() => {
      expect(() => getWithContextCache('', 1, async () => 1)).toThrow(
        new TypeError(message('getWithContextCache', 'an empty string')),
      );
      expect(() => getWithContextCache(7 as never, 1, async () => 1)).toThrow(
        new TypeError(message('getWithContextCache', 'a number (7)')),
      );
      expect(() => getWithContextCacheSync(undefined as never, 1, () => 1)).toThrow(
        new TypeError(message('getWithContextCacheSync', 'undefined')),
      );
      expect(() => setContextData('', 1, 1)).toThrow(
        new TypeError(message('setContextData', 'an empty string')),
      );
    });
    expect(() => contextCached('', async () => 1)).toThrow(
      new TypeError(message('contextCached', 'an empty string')),
    );
    expect(() => getWithContextCache(null as never, 1, async () => 1)).toThrow(
      new TypeError(message('getWithContextCache', 'null')),
    );
  });

  it('a non-function loader', () => {
    const message = (fn: string, got: string) =>
      `${fn}(): loader must be a function that loads the value for a key, such as (id) => db.users.find(id), got ${got}.`;
    withCacheContext(() => {
      expect(() => getWithContextCache('user', 1, 'load' as never)).toThrow(
        new TypeError(message('getWithContextCache', 'a string ("load")')),
      );
      expect(() => getWithContextCacheSync('user', 1, undefined as never)).toThrow(
        new TypeError(message('getWithContextCacheSync', 'undefined')),
      );
    });
    expect(() => getWithContextCache('user', 1, null as never)).toThrow(
      new TypeError(message('getWithContextCache', 'null')),
    );
    expect(() => contextCached('user', {} as never)).toThrow(
      new TypeError(message('contextCached', 'an object')),
    );
  });

  it('bad scope arguments and options', () => {
    expect(() => withCacheContext(42 as never)).toThrow(
      new TypeError(
        'withCacheContext(): fn must be the function to run inside the scope, such as () => next(), got a number (42).',
      ),
    );
    expect(() => withNoCacheContext(undefined as never)).toThrow(TypeError);
    expect(() => withCacheContext(() => 1, { lifetime: -1 })).toThrow(
      new TypeError(
        'withCacheContext(): options.lifetime must be a positive number of milliseconds, got a number (-1).',
      ),
    );
    expect(() => withCacheContext(() => 1, { maxEntries: 1.5 })).toThrow(
      new TypeError(
        'withCacheContext(): options.maxEntries must be a positive integer, got a number (1.5).',
      ),
    );
    expect(() => withCacheContext(() => 1, { signal: 'stop' as never })).toThrow(
      new TypeError(
        'withCacheContext(): options.signal must be an AbortSignal (such as an AbortController\'s signal) or a function returning one, got a string ("stop").',
      ),
    );
  });
});
