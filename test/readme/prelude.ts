/**
 * The application the README's examples take for granted: a small database of users,
 * repositories and settings with a query counter, a logger, and ORM-style clients. Every
 * README code block is type-checked with these globals declared; blocks that run (`ts
 * run`, `ts server`) get these implementations installed before they start.
 */

import type { Express } from 'express';

interface UserRow {
  id: number;
  name: string;
}
interface SettingRow {
  name: string;
  value: string;
}

const users = new Map<number, UserRow>([
  [1, { id: 1, name: 'ada' }],
  [2, { id: 2, name: 'grace' }],
  [3, { id: 3, name: 'linus' }],
]);
const settings = new Map<string, SettingRow>([['theme', { name: 'theme', value: 'dark' }]]);
const permissions = new Map<string, 'read' | 'write'>([
  ['1:10', 'write'],
  ['2:10', 'read'],
]);
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** An in-memory database; every method is one query and counts in `db.queries`. */
const database = {
  queries: 0,
  users: {
    async findById(id: number): Promise<UserRow | undefined> {
      database.queries++;
      await tick();
      const row = users.get(id);
      return row && { ...row };
    },
    async findMany(ids: readonly number[]): Promise<UserRow[]> {
      database.queries++;
      await tick();
      return ids.flatMap((id) => {
        const row = users.get(id);
        return row ? [{ ...row }] : [];
      });
    },
    async update(id: number, patch: Partial<Omit<UserRow, 'id'>>): Promise<void> {
      database.queries++;
      await tick();
      const row = users.get(id);
      if (row) users.set(id, { ...row, ...patch });
    },
  },
  permissions: {
    async find(userId: number, repoId: number): Promise<'read' | 'write' | undefined> {
      database.queries++;
      await tick();
      return permissions.get(`${userId}:${repoId}`);
    },
  },
  async findSetting(name: string): Promise<SettingRow | null> {
    database.queries++;
    await tick();
    return settings.get(name) ?? null;
  },
  async updateSetting(name: string, value: string): Promise<void> {
    database.queries++;
    await tick();
    settings.set(name, { name, value });
  },
};

type Logger = Record<'debug' | 'info' | 'warn' | 'error', (...args: unknown[]) => void>;
const logger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** The shape of the Prisma client calls the recipes use. */
interface PrismaLike {
  user: {
    findUnique(args: { where: { id: number } }): Promise<UserRow | null>;
    update(args: { where: { id: number }; data: Partial<UserRow> }): Promise<UserRow>;
  };
}
/** The shape of the Kysely calls the recipes use (a query builder, run by execute*). */
interface KyselyLike {
  selectFrom(table: 'users'): {
    selectAll(): {
      where(
        column: 'id',
        op: '=',
        value: number,
      ): {
        executeTakeFirst(): Promise<UserRow | undefined>;
      };
    };
  };
}
const notConnected = (): never => {
  throw new Error('the README recipes that use an ORM are type-checked, not run');
};

declare global {
  /** A user row. */
  interface User extends UserRow {}
  /** A setting row. */
  interface Setting extends SettingRow {}
  var db: typeof database;
  var log: Logger;
  var prisma: PrismaLike;
  var kysely: KyselyLike;
  /** The Express app of the snippets that only add a route or a middleware to one. */
  var app: Express;
  /** Bun's server, as the Bun quick start uses it (declared only: such blocks are type-checked). */
  var Bun: {
    serve(options: {
      port?: number;
      hostname?: string;
      fetch(request: Request): Response | Promise<Response>;
    }): { readonly port: number; stop(): void };
  };
  /** Deno's server, as the Deno quick start uses it (declared only). */
  var Deno: {
    serve(
      options: { port?: number; hostname?: string },
      handler: (request: Request) => Response | Promise<Response>,
    ): { shutdown(): Promise<void> };
  };
}

globalThis.db = database;
globalThis.log = logger;
globalThis.prisma = {
  user: { findUnique: notConnected, update: notConnected },
};
globalThis.kysely = { selectFrom: notConnected };
