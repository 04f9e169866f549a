import { describe, expect, it } from 'vitest';
import {
  type EphemeralCache,
  getContextCache,
  getWithContextCache,
  withCacheContext,
  withNoCacheContext,
} from '../src/index.js';

// DESIGN.md "Nesting rules": `With` = withCacheContext, `WithNo` = withNoCacheContext.
// `path` lists the wrappers from the outside in; `inside` names the cache seen innermost:
// 'none' for no scope at all, a letter for a cache, a letter with ′ for "caching off
// inside, with that cache discarded".
type Wrapper = 'With' | 'WithNo';
const table: { nesting: string; path: Wrapper[]; inside: string; meaning: string }[] = [
  { nesting: 'With(ctx)', path: ['With'], inside: 'A', meaning: 'new cache' },
  {
    nesting: 'With(With(ctx))',
    path: ['With', 'With'],
    inside: 'A',
    meaning: 'reuse, never stack',
  },
  {
    nesting: 'With(With(With(ctx)))',
    path: ['With', 'With', 'With'],
    inside: 'A',
    meaning: 'ditto',
  },
  { nesting: 'WithNo(ctx)', path: ['WithNo'], inside: 'none', meaning: 'nothing created' },
  { nesting: 'WithNo(With(ctx))', path: ['With', 'WithNo'], inside: "A'", meaning: 'caching off' },
  {
    nesting: 'WithNo(WithNo(With(ctx)))',
    path: ['With', 'WithNo', 'WithNo'],
    inside: "A'",
    meaning: 'stays off, nothing new',
  },
  {
    nesting: 'With(WithNo(With(ctx)))',
    path: ['With', 'WithNo', 'With'],
    inside: 'B',
    meaning: 'a discarded cache is never reused',
  },
  {
    nesting: 'WithNo(With(WithNo(With(ctx))))',
    path: ['With', 'WithNo', 'With', 'WithNo'],
    inside: "B'",
    meaning: '',
  },
  {
    nesting: 'With(WithNo(With(WithNo(With(ctx)))))',
    path: ['With', 'WithNo', 'With', 'WithNo', 'With'],
    inside: 'C',
    meaning: 'only one live cache at a time',
  },
];

/** Run the wrappers of `path` from the outside in; record the cache seen at each level. */
function walk(path: Wrapper[]): (EphemeralCache | undefined)[] {
  const seen: (EphemeralCache | undefined)[] = [];
  const step = (i: number): void => {
    seen.push(getContextCache());
    if (i === path.length) return;
    if (path[i] === 'With') withCacheContext(() => step(i + 1));
    else withNoCacheContext(() => step(i + 1));
  };
  step(0);
  return seen.slice(1); // seen[k] is the cache inside the k-th wrapper
}

describe('nesting rules (DESIGN.md table)', () => {
  it('the table matches DESIGN.md row for row', () => {
    expect(table.map((row) => row.nesting)).toEqual([
      'With(ctx)',
      'With(With(ctx))',
      'With(With(With(ctx)))',
      'WithNo(ctx)',
      'WithNo(With(ctx))',
      'WithNo(WithNo(With(ctx)))',
      'With(WithNo(With(ctx)))',
      'WithNo(With(WithNo(With(ctx))))',
      'With(WithNo(With(WithNo(With(ctx)))))',
    ]);
  });

  for (const row of table) {
    it(`${row.nesting} → ${row.inside}${row.meaning ? ` (${row.meaning})` : ''}`, () => {
      const seen = walk(row.path);
      // Name the caches in order of first appearance: A, B, C…
      const names = new Map<EphemeralCache, string>();
      const label = (cache: EphemeralCache | undefined, i: number): string => {
        if (cache !== undefined) {
          if (!names.has(cache)) names.set(cache, String.fromCharCode(65 + names.size));
          return names.get(cache) as string;
        }
        // Off: name the last cache opened outside this level, primed.
        const outer = seen
          .slice(0, i)
          .filter((c) => c !== undefined)
          .at(-1);
        return outer === undefined ? 'none' : `${names.get(outer)}'`;
      };
      expect(seen.map(label).at(-1)).toBe(row.inside);
    });
  }
});

describe('the deliberate difference from Go', () => {
  it('inside WithNo the parent cache is unreachable', async () => {
    await withCacheContext(async () => {
      let loads = 0;
      const load = async () => ++loads;
      await getWithContextCache('g', 1, load);
      await withNoCacheContext(async () => {
        expect(getContextCache()).toBeUndefined();
        // Not served from A: the loader runs, and again, since nothing caches inside.
        expect(await getWithContextCache('g', 1, load)).toBe(2);
        expect(await getWithContextCache('g', 1, load)).toBe(3);
      });
    });
  });

  it('the parent keeps caching after (and while) a WithNo block runs', async () => {
    await withCacheContext(async () => {
      const parent = getContextCache();
      let loads = 0;
      const load = async () => ++loads;
      const inside = withNoCacheContext(async () => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        return getWithContextCache('g', 2, load);
      });
      expect(await getWithContextCache('g', 1, load)).toBe(1);
      expect(await getWithContextCache('g', 1, load)).toBe(1);
      await inside;
      expect(getContextCache()).toBe(parent);
      expect(await getWithContextCache('g', 1, load)).toBe(1);
      expect(parent?.stats()).toMatchObject({ hits: 2, misses: 1 });
    });
  });
});
