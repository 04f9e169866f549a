import { describe, expect, it } from 'vitest';
import {
  contextCached,
  getContextData,
  getWithContextCache,
  setContextData,
  withCacheContext,
} from '../src/index.js';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('isolation', () => {
  it('500 concurrent scopes with randomly interleaved awaits never read each other', async () => {
    // Every scope loads the same (group, key) to its own value, and writes its own data,
    // with random pauses between steps so the awaits of all scopes interleave.
    const getWhoAmI = contextCached('whoami', async (_key: string): Promise<string> => {
      await pause(Math.random() * 5);
      throw new Error('replaced per scope below');
    });
    const results = await Promise.all(
      Array.from({ length: 500 }, (_, id) =>
        withCacheContext(async () => {
          const seen: unknown[] = [];
          await pause(Math.random() * 5);
          getWhoAmI.prime('me', `scope ${id}`);
          setContextData('data', 'id', id);
          for (let step = 0; step < 4; step++) {
            await pause(Math.random() * 3);
            seen.push(
              await getWithContextCache('shared', 'key', async () => {
                await pause(Math.random() * 3);
                return id;
              }),
            );
            seen.push(getContextData('data', 'id'));
            seen.push(await getWhoAmI('me'));
          }
          return { id, seen };
        }),
      ),
    );
    for (const { id, seen } of results) {
      expect(seen).toEqual(Array.from({ length: 4 }, () => [id, id, `scope ${id}`]).flat());
    }
  });
});
