// One Nest benchmark server, in a process of its own. Configured by one JSON argument:
//   { platform: 'express' | 'fastify', contender: 'none' | 'context-cache' | 'request-scope',
//     calls?: number }
// GET /page reads a user `calls` times (ids 1, 2, 3 in turn) through:
//   - none: a singleton service that queries every time;
//   - context-cache: ContextCacheModule and a singleton service whose getter is @cached;
//   - request-scope: a Scope.REQUEST provider holding a Map, which makes the controller
//     that injects it request-scoped too (Nest builds both for every request).
// GET /__stats tells the queries run so far. Listens on 127.0.0.1, port 0, and prints
// `READY <port>`. The Nest packages are the root's devDependencies (one copy for this
// file and context-cache/nestjs); decorators are applied as tsc's legacy output does.
import 'reflect-metadata';
import { Controller, Get, Inject, Injectable, Module, Scope } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { cached } from 'context-cache';
import { ContextCacheModule } from 'context-cache/nestjs';

const { platform, contender, calls = 20 } = JSON.parse(process.argv[2] ?? '{}');

/** What `@decorator` compiles to under experimentalDecorators (TypeScript's __decorate). */
function decorate(decorators, target, key) {
  if (key === undefined) return Reflect.decorate(decorators, target);
  const descriptor = Reflect.decorate(
    decorators,
    target,
    key,
    Object.getOwnPropertyDescriptor(target, key),
  );
  Object.defineProperty(target, key, descriptor);
}

/** The database: ready values, so that what is measured is the framework and the cache. */
let queries = 0;
class Db {
  async findUser(id) {
    queries++;
    return { id, name: `user ${id}` };
  }
}
decorate([Injectable()], Db);

/** The singleton service of `none` and `context-cache`. */
class UsersService {
  constructor(db) {
    this.db = db;
  }
  getById(id) {
    return this.db.findUser(id);
  }
}
Inject(Db)(UsersService, undefined, 0);
decorate([Injectable()], UsersService);
if (contender === 'context-cache') decorate([cached('user')], UsersService.prototype, 'getById');

/** The request-scoped cache of `request-scope`: one instance and one Map per request. */
class RequestCache {
  constructor(db) {
    this.db = db;
    this.users = new Map();
  }
  getById(id) {
    let user = this.users.get(id);
    if (user === undefined) {
      user = this.db.findUser(id);
      this.users.set(id, user);
    }
    return user;
  }
}
Inject(Db)(RequestCache, undefined, 0);
decorate([Injectable({ scope: Scope.REQUEST })], RequestCache);

class PageController {
  constructor(users) {
    this.users = users;
  }
  async page() {
    const names = [];
    for (let i = 0; i < calls; i++) names.push((await this.users.getById((i % 3) + 1)).name);
    return { calls: names.length, first: names[0] };
  }
  stats() {
    return { queries };
  }
}
Inject(contender === 'request-scope' ? RequestCache : UsersService)(PageController, undefined, 0);
decorate([Get('page')], PageController.prototype, 'page');
decorate([Get('__stats')], PageController.prototype, 'stats');
decorate([Controller()], PageController);

class AppModule {}
decorate(
  [
    Module({
      imports: contender === 'context-cache' ? [ContextCacheModule.forRoot()] : [],
      controllers: [PageController],
      providers: [Db, UsersService, RequestCache],
    }),
  ],
  AppModule,
);

const app = await NestFactory.create(
  AppModule,
  platform === 'fastify' ? new FastifyAdapter() : new ExpressAdapter(),
  { logger: false, abortOnError: false },
);
await app.listen(0, '127.0.0.1');
console.log(`READY ${app.getHttpServer().address().port}`);
process.on('SIGTERM', () => app.close().then(() => process.exit(0)));
