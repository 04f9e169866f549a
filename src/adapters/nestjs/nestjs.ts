import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type DynamicModule,
  Global,
  Inject,
  type MiddlewareConsumer,
  Module,
  type NestModule,
  Optional,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { type AdapterOptions, checkAdapterOptions, type Settings } from '../lifecycle.js';
import { runRequest } from '../node-response.js';

/**
 * Options of `ContextCacheModule.forRoot()`: those of every adapter. `onEnd` receives
 * the Node request (`IncomingMessage`): Express's `req` on the Express platform, the raw
 * request under Fastify's `request.raw` on the Fastify platform.
 */
export type Options = AdapterOptions<IncomingMessage>;

/** Token of the module's settings, one per `forRoot()`. */
const SETTINGS = Symbol('context-cache.nestjs.settings');

/** The Express or Fastify middleware the module mounts: one scope per request. */
type Middleware = (
  req: IncomingMessage,
  res: ServerResponse,
  next: (error?: unknown) => void,
) => void;

/** Express's error-handling middleware (four parameters). */
type ErrorMiddleware = (
  err: unknown,
  req: IncomingMessage,
  res: ServerResponse,
  next: (error?: unknown) => void,
) => void;

/**
 * A global Nest module that gives every HTTP request its own cache, on the Express and
 * the Fastify platform, GraphQL routes (Apollo, Mercurius) included. Import it once, in
 * the root module, with `ContextCacheModule.forRoot(options)`.
 *
 * The scope is opened by a middleware mounted for every route before Nest's own
 * middleware, so guards, interceptors, pipes, controllers, resolvers and exception
 * filters all run in it, and every singleton provider reads the request's cache through
 * `@cached` getters or `contextCached` functions: nothing needs `Scope.REQUEST`. The
 * cache ends once the response has been sent or the connection closed, `onEnd` runs once
 * per request, and `serverTiming` adds the `Server-Timing` entry, as with every adapter.
 *
 * Work outside HTTP requests (a cron job, an interval, a microservice message handler,
 * `onModuleInit`) runs without a cache unless it opens one with `withCacheContext`.
 *
 * @example
 * ```ts
 * import { Module } from '@nestjs/common';
 * import { ContextCacheModule } from 'context-cache/nestjs';
 *
 * @Module({
 *   imports: [ContextCacheModule.forRoot({ serverTiming: true })],
 *   controllers: [UsersController],
 *   providers: [UsersService],
 * })
 * export class AppModule {}
 * ```
 */
export class ContextCacheModule implements NestModule {
  private readonly adapterHost: HttpAdapterHost;
  private readonly settings: Settings<IncomingMessage>;

  /** `settings` is `undefined` when the module was imported without `forRoot()`: defaults. */
  constructor(adapterHost: HttpAdapterHost, settings: Settings<IncomingMessage> | undefined) {
    this.adapterHost = adapterHost;
    this.settings =
      settings ?? checkAdapterOptions<IncomingMessage>('ContextCacheModule', undefined);
  }

  /**
   * The module, configured: `options` are every adapter's (`lifetime`, `maxEntries`,
   * `serverTiming`, `onEnd`), checked now, each by name.
   *
   * @example
   * ```ts
   * ContextCacheModule.forRoot({ onEnd: (stats, req) => log.debug({ url: req.url, ...stats }) })
   * ```
   */
  static forRoot(options?: Options): DynamicModule {
    // Checked now, each by name: a misspelt `serverTimings` would otherwise do nothing.
    const settings = checkAdapterOptions<IncomingMessage>('ContextCacheModule.forRoot', options);
    return {
      module: ContextCacheModule,
      global: true,
      providers: [{ provide: SETTINGS, useValue: settings }],
    };
  }

  /**
   * Called by Nest before it registers any middleware: mount ours on the HTTP app itself
   * (Express's `app.use`, Fastify's middleware runner), for every route and ahead of
   * the middleware of every module.
   */
  configure(_consumer: MiddlewareConsumer): void {
    const httpAdapter = this.adapterHost.httpAdapter as
      | { use(middleware: Middleware | ErrorMiddleware): unknown; getType?(): string }
      | null
      | undefined;
    // A standalone application context or a pure microservice has no HTTP routes.
    if (httpAdapter === undefined || httpAdapter === null) return;
    const settings = this.settings;
    const middleware: Middleware = function contextCacheMiddleware(req, res, next) {
      runRequest(res, req, settings, next);
    };
    httpAdapter.use(middleware);
    // On Express, a request whose body Nest's parser refused (malformed JSON, too large)
    // skips the middleware above and goes down Express's error path to Nest's exception
    // filters: open its scope there, so the filters run in it and its end is reported.
    // (Fastify parses bodies after its hooks: such a request already has its scope.)
    if (httpAdapter.getType?.() === 'express') {
      const onError: ErrorMiddleware = function contextCacheOnError(err, req, res, next) {
        runRequest(res, req, settings, () => next(err));
      };
      httpAdapter.use(onError);
    }
  }
}

// Nest's decorators are applied by hand: this file is compiled with standard
// decorators, Nest's are the legacy kind.
Inject(HttpAdapterHost)(ContextCacheModule, undefined, 0);
Inject(SETTINGS)(ContextCacheModule, undefined, 1);
// Imported without forRoot() (`imports: [ContextCacheModule]`): the defaults.
Optional()(ContextCacheModule, undefined, 1);
Global()(ContextCacheModule);
Module({})(ContextCacheModule);
