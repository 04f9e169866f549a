// Getters inside a database transaction, on a real embedded PostgreSQL (PGlite, the
// demo's database): the loader runs on the transaction, a read after a write in the same
// transaction sees the write, and nothing loaded inside reaches the request cache or the
// shared tier, so a rollback leaves no trace.
import { PGlite, type Transaction } from '@electric-sql/pglite';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  contextCached,
  createSharedCache,
  getContextCache,
  getContextData,
  getWithContextCache,
  memoryStore,
  type Store,
  withCacheContext,
  withTransaction,
} from '../src/index.js';
import { eventually, noUnhandledRejections } from './helpers/async.js';

noUnhandledRejections();

let db: PGlite;
/** Every query a loader ran, and on which connection: 'db' or 'tx'. */
let queries: string[] = [];
/** Every key the shared store was asked to write, with the value. */
let sharedWrites: [string, string][] = [];

beforeAll(async () => {
  db = await PGlite.create();
  await db.exec('create table users (id int primary key, name text not null)');
});
afterAll(async () => {
  await db.close();
});
beforeEach(async () => {
  queries = [];
  sharedWrites = [];
  await db.exec("delete from users; insert into users values (1, 'ada'), (2, 'alan')");
});

function recordingStore(): Store {
  const store = memoryStore({ max: 100 });
  return {
    ...store,
    get: store.get.bind(store),
    delete: store.delete.bind(store),
    close: store.close.bind(store),
    set(key, value, ttl) {
      sharedWrites.push([key, String(value)]);
      return store.set(key, value, ttl);
    },
  } as Store;
}

function makeGetter(group: string) {
  const shared = createSharedCache<string | undefined>({
    store: recordingStore(),
    ttl: 60_000,
    namespace: 'tx-test',
  });
  const getUserName = contextCached(
    group,
    async (id: number, { transaction }) => {
      const tx = transaction as Transaction | undefined;
      queries.push(tx === undefined ? 'db' : 'tx');
      const result = await (tx ?? db).query<{ name: string }>(
        'select name from users where id = $1',
        [id],
      );
      return result.rows[0]?.name;
    },
    { shared },
  );
  return { getUserName, shared };
}

const rename = (tx: Transaction, id: number, name: string) =>
  tx.query('update users set name = $1 where id = $2', [name, id]);

describe('withTransaction', () => {
  it('reads after a write in the same transaction see the write; commit then shows it everywhere', async () => {
    const { getUserName, shared } = makeGetter('tx-commit');
    await withCacheContext(async () => {
      expect(await getUserName(1)).toBe('ada'); // request cache and shared tier now hold 'ada'
      const inside = await db.transaction((tx) =>
        withTransaction(tx, async () => {
          expect(await getUserName(1)).toBe('ada'); // loaded on tx, not the request's entry
          await rename(tx, 1, 'grace');
          await getUserName.invalidate(1);
          const after = await getUserName(1);
          expect(await getUserName(1)).toBe(after); // cached inside the transaction
          return after;
        }),
      );
      expect(inside).toBe('grace');
      expect(queries).toEqual(['db', 'tx', 'tx']);
      // invalidate() inside the transaction also dropped the request's and shared entry.
      expect(await getUserName(1)).toBe('grace');
      expect(queries).toEqual(['db', 'tx', 'tx', 'db']);
    });
    await shared.close();
  });

  it('leaves no trace of a rolled-back transaction in the request cache or the shared tier', async () => {
    const { getUserName, shared } = makeGetter('tx-rollback');
    await withCacheContext(async () => {
      const rolledBack = db.transaction((tx) =>
        withTransaction(tx, async () => {
          await rename(tx, 2, 'never');
          expect(await getUserName(2)).toBe('never');
          expect(getContextData('tx-rollback', 2)).toBe('never'); // the transaction's own cache
          throw new Error('roll back');
        }),
      );
      await expect(rolledBack).rejects.toThrow('roll back');
      // The request's cache never held the transaction's value, and nothing was shared.
      expect(getContextData('tx-rollback', 2)).toBeUndefined();
      expect(await getUserName(2)).toBe('alan');
      expect(queries).toEqual(['tx', 'db']);
    });
    // The committed value's write-back (detached) lands; the rolled-back one never did.
    await eventually(() => sharedWrites.length > 0, 'the write-back of alan');
    expect(sharedWrites.map(([, data]) => data.includes('alan'))).toEqual([true]);
    expect(sharedWrites.some(([, data]) => data.includes('never'))).toBe(false);
    await shared.close();
  });

  it('prime() inside a transaction drops the key from the request cache, never writes it there', async () => {
    const getUserName = contextCached('tx-prime', async (id: number, { transaction }) => {
      const tx = transaction as Transaction | undefined;
      const result = await (tx ?? db).query<{ name: string }>(
        'select name from users where id = $1',
        [id],
      );
      return result.rows[0]?.name;
    });
    await withCacheContext(async () => {
      expect(await getUserName(1)).toBe('ada');
      await db.transaction((tx) =>
        withTransaction(tx, async () => {
          await rename(tx, 1, 'grace');
          getUserName.prime(1, 'grace');
          expect(getContextData('tx-prime', 1)).toBe('grace'); // the transaction's own cache
        }),
      );
      // Committed: the request cache no longer holds the old row, nor an uncommitted value.
      expect(getContextData('tx-prime', 1)).toBeUndefined();
      expect(await getUserName(1)).toBe('grace');
    });
  });

  it('returns what a thenable of fn settles to, and drops its cache when that settles', async () => {
    let txCache: ReturnType<typeof getContextCache>;
    const answered = await withTransaction({ tx: 1 }, () => {
      txCache = getContextCache();
      // biome-ignore lint/suspicious/noThenProperty: a thenable that is not a promise
      return { then: (resolve: (value: number) => void) => resolve(42) };
    });
    expect(answered).toBe(42);
    expect(txCache?.ended).toBe(true);
    const failed = withTransaction({ tx: 2 }, () => {
      txCache = getContextCache();
      return {
        // biome-ignore lint/suspicious/noThenProperty: a thenable whose then() throws
        then() {
          throw new Error('then() threw');
        },
      };
    });
    await expect(failed).rejects.toThrow('then() threw');
    expect(txCache?.ended).toBe(true);
  });

  it('hands the transaction to getWithContextCache loaders, and keeps it out of the request counts', async () => {
    await withCacheContext(async () => {
      const requestCache = getContextCache();
      await db.transaction((tx) =>
        withTransaction(tx, async () => {
          const seen = await getWithContextCache('tx-raw', 1, (_id, ctx) => ctx.transaction);
          expect(seen).toBe(tx);
          expect(getContextCache()).not.toBe(requestCache);
        }),
      );
      expect(getContextCache()).toBe(requestCache);
      expect(requestCache?.stats().loads).toBe(0);
    });
  });

  it('works outside a request, caching for the transaction alone', async () => {
    const { getUserName, shared } = makeGetter('tx-no-request');
    await db.transaction((tx) =>
      withTransaction(tx, async () => {
        await getUserName(1);
        await getUserName(1);
      }),
    );
    expect(queries).toEqual(['tx']);
    expect(sharedWrites).toEqual([]);
    await shared.close();
  });

  it('rejects a missing transaction or function', () => {
    expect(() => withTransaction(undefined as never, () => 1)).toThrow(
      new TypeError(
        'withTransaction(): transaction must be the transaction your loaders should query, such as the tx of db.transaction(async (tx) => ...), got undefined.',
      ),
    );
    expect(() => withTransaction({}, 1 as never)).toThrow(/withTransaction\(\): fn must be/);
  });
});
