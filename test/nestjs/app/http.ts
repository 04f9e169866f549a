// The HTTP app of the tests: a controller with a guard, an interceptor and a pipe that
// all read the singleton service, a GraphQL resolver on it, and a user middleware.

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import {
  type ArgumentMetadata,
  type ArgumentsHost,
  Body,
  type CallHandler,
  type CanActivate,
  Catch,
  Controller,
  type DynamicModule,
  type ExecutionContext,
  Get,
  Injectable,
  type MiddlewareConsumer,
  Module,
  type NestInterceptor,
  type NestModule,
  Param,
  type PipeTransform,
  Post,
  Req,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { BaseExceptionFilter, HttpAdapterHost, NestFactory } from '@nestjs/core';
import {
  Field,
  GraphQLModule,
  Int,
  ObjectType,
  Parent,
  Query,
  ResolveField,
  Resolver,
} from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import type { Observable } from 'rxjs';
import { ContextCacheModule, type Options } from '../../../src/adapters/nestjs/index.js';
import {
  cachedControls,
  currentSignal,
  type EphemeralCache,
  getContextCache,
} from '../../../src/index.js';
import { type Author, AuthorsService, jitter } from './authors.js';

export type Platform = 'express' | 'fastify';

/** What the tests read back after the responses: every request's cache. */
export const seenCaches: EphemeralCache[] = [];

/** For each exception Nest's filters handled: whether the request's cache was there. */
export const filterSawCache: boolean[] = [];

/** Nest's own exception filter, recording whether it ran in the request's scope. */
@Catch()
class RecordingFilter extends BaseExceptionFilter {
  override catch(exception: unknown, host: ArgumentsHost): void {
    filterSawCache.push(getContextCache() !== undefined);
    super.catch(exception, host);
  }
}

/** The signals of the requests to GET /slow, which waits until its client goes away. */
export const slowSignals: AbortSignal[] = [];

interface Tracked {
  params: Record<string, string>;
  middlewareSawCache?: boolean;
}

@Injectable()
class AuthorGuard implements CanActivate {
  constructor(private readonly authors: AuthorsService) {}
  async canActivate(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<Tracked>();
    await this.authors.getById(Number(request.params.id));
    return true;
  }
}

@Injectable()
class AuthorInterceptor implements NestInterceptor {
  constructor(private readonly authors: AuthorsService) {}
  async intercept(context: ExecutionContext, next: CallHandler): Promise<Observable<unknown>> {
    const request = context.switchToHttp().getRequest<Tracked>();
    await this.authors.getById(Number(request.params.id));
    return next.handle();
  }
}

@Injectable()
class AuthorIdPipe implements PipeTransform<string, Promise<number>> {
  constructor(private readonly authors: AuthorsService) {}
  async transform(value: string, _metadata: ArgumentMetadata): Promise<number> {
    const id = Number(value);
    await this.authors.getById(id);
    return id;
  }
}

@Controller()
class AuthorsController {
  constructor(private readonly authors: AuthorsService) {}

  /** The getter read several times here and once each in the guard, interceptor and pipe. */
  @Get('authors/:id')
  @UseGuards(AuthorGuard)
  @UseInterceptors(AuthorInterceptor)
  async author(@Param('id', AuthorIdPipe) id: number) {
    const first = await this.authors.getById(id);
    const again = await Promise.all([this.authors.getById(id), this.authors.getById(id)]);
    const cache = getContextCache();
    if (cache !== undefined) seenCaches.push(cache);
    return {
      author: first,
      sameObject: again.every((author) => author === first),
      stats: cache?.stats(),
      instance: this.authors.instance,
    };
  }

  /** Each request primes its own value, waits, and reads it back twice. */
  @Get('isolation/:tag')
  async isolation(@Param('tag') tag: string) {
    await jitter(8);
    cachedControls(this.authors.tag).prime('me', tag);
    await jitter(8);
    const first = await this.authors.tag('me');
    await jitter(8);
    const second = await this.authors.tag('me');
    const author = await this.authors.getById(Number(tag.split('-')[1]) % 10);
    return { first, second, author: author.id };
  }

  /** Loads, then throws: Nest's exception filter answers 500. */
  @Get('fail/:id')
  async fail(@Param('id') id: string): Promise<never> {
    await this.authors.getById(Number(id));
    throw new Error('the handler failed');
  }

  /** Waits (at most 10 s) until the request's signal aborts: the client went away. */
  @Get('slow')
  async slow(): Promise<string> {
    const signal = currentSignal();
    if (signal === undefined) return 'no signal';
    slowSignals.push(signal);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 10_000);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    return 'done';
  }

  /** Echoes a JSON body (a malformed one is refused by Nest's body parser). */
  @Post('echo')
  echo(@Body() body: unknown) {
    return { body };
  }

  /** What the user middleware saw (Fastify hands middleware the raw request). */
  @Get('middleware')
  middleware(@Req() req: Tracked & { raw?: Tracked }) {
    return { sawCache: (req.raw ?? req).middlewareSawCache };
  }
}

@ObjectType('Author')
class AuthorType {
  @Field(() => Int)
  id!: number;
  @Field()
  name!: string;
}

@ObjectType('Post')
class PostType {
  @Field(() => Int)
  id!: number;
  @Field()
  title!: string;
  @Field(() => Int)
  authorId!: number;
}

@Resolver(() => PostType)
class PostsResolver {
  constructor(private readonly authors: AuthorsService) {}

  /** Twenty posts by seven authors. */
  @Query(() => [PostType])
  posts(): PostType[] {
    return Array.from({ length: 20 }, (_, i) => ({
      id: i + 1,
      title: `post ${i + 1}`,
      authorId: (i % 7) + 1,
    }));
  }

  @ResolveField(() => AuthorType)
  author(@Parent() post: PostType): Promise<Author> {
    return this.authors.getById(post.authorId);
  }
}

@Module({})
class AppModule implements NestModule {
  /** `options` undefined: ContextCacheModule imported without forRoot(). */
  static forPlatform(platform: Platform, options: Options | undefined): DynamicModule {
    const graphql =
      platform === 'express'
        ? GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true })
        : GraphQLModule.forRoot<MercuriusDriverConfig>({
            driver: MercuriusDriver,
            autoSchemaFile: true,
          });
    return {
      module: AppModule,
      imports: [
        options === undefined ? ContextCacheModule : ContextCacheModule.forRoot(options),
        graphql,
      ],
      controllers: [AuthorsController],
      providers: [AuthorsService, PostsResolver],
    };
  }

  /** A user middleware for every route: it says whether it saw the request's cache. */
  configure(consumer: MiddlewareConsumer): void {
    consumer
      .apply((req: unknown, _res: unknown, next: () => void) => {
        (req as Tracked).middlewareSawCache = getContextCache() !== undefined;
        next();
      })
      .forRoutes('middleware');
  }
}

/** Start the app on 127.0.0.1, port 0, and tell its URL. */
export async function startApp(platform: Platform, options: Options | undefined) {
  const app = await NestFactory.create(
    AppModule.forPlatform(platform, options),
    platform === 'express' ? new ExpressAdapter() : new FastifyAdapter(),
    { logger: false, abortOnError: false },
  );
  app.useGlobalFilters(new RecordingFilter(app.get(HttpAdapterHost).httpAdapter));
  await app.listen(0, '127.0.0.1');
  const { port } = (app.getHttpServer() as Server).address() as AddressInfo;
  return { app, url: `http://127.0.0.1:${port}`, authors: app.get(AuthorsService) };
}
