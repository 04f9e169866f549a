// Work that runs outside HTTP requests in a Nest app with ContextCacheModule: an
// OnModuleInit warm-up, @nestjs/schedule intervals and a microservice message handler.
import { Controller, Injectable, Module, type OnModuleInit } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  type ClientProxy,
  ClientProxyFactory,
  MessagePattern,
  type MicroserviceOptions,
  Transport,
} from '@nestjs/microservices';
import { ExpressAdapter } from '@nestjs/platform-express';
import { Interval, ScheduleModule, SchedulerRegistry } from '@nestjs/schedule';
import { firstValueFrom } from 'rxjs';
import { ContextCacheModule } from '../../../src/adapters/nestjs/index.js';
import { getContextCache, withCacheContext } from '../../../src/index.js';
import { AuthorsService } from './authors.js';

/** What a piece of work saw: whether a cache was open, and how many loads two reads made. */
export interface Run {
  sawCache: boolean;
  loads: number;
}

/** Read the same author twice, as any job would, and say what it cost. */
async function readTwice(authors: AuthorsService, id: number): Promise<Run> {
  const before = authors.loads.length;
  const sawCache = getContextCache() !== undefined;
  await authors.getById(id);
  await authors.getById(id);
  // Jobs run concurrently: count this id's loads only.
  return { sawCache, loads: authors.loads.slice(before).filter((loaded) => loaded === id).length };
}

@Injectable()
class Jobs implements OnModuleInit {
  readonly warmUp: Run[] = [];
  readonly plainInterval: Run[] = [];
  readonly ownScopeInterval: Run[] = [];

  constructor(
    private readonly authors: AuthorsService,
    private readonly scheduler: SchedulerRegistry,
  ) {}

  async onModuleInit(): Promise<void> {
    this.warmUp.push(await readTwice(this.authors, 1));
  }

  /** A job with no scope of its own: cache-free, each read loads. */
  @Interval('plain', 5)
  async plain(): Promise<void> {
    this.scheduler.deleteInterval('plain'); // once is enough
    this.plainInterval.push(await readTwice(this.authors, 2));
  }

  /** A job that opens its own cache for its run, as the README shows. */
  @Interval('own-scope', 5)
  async ownScope(): Promise<void> {
    this.scheduler.deleteInterval('own-scope');
    this.ownScopeInterval.push(await withCacheContext(() => readTwice(this.authors, 3)));
  }
}

@Controller()
class AuthorsMessages {
  constructor(private readonly authors: AuthorsService) {}

  @MessagePattern('author.read-twice')
  readTwice(id: number): Promise<Run> {
    return readTwice(this.authors, id);
  }
}

@Module({
  imports: [ContextCacheModule.forRoot(), ScheduleModule.forRoot()],
  controllers: [AuthorsMessages],
  providers: [AuthorsService, Jobs],
})
class WorkerModule {}

/**
 * Start the app as a hybrid: HTTP on 127.0.0.1 and a TCP microservice on `port`, and a
 * client for the microservice.
 */
export async function startWorker(port: number) {
  const app = await NestFactory.create(WorkerModule, new ExpressAdapter(), {
    logger: false,
    abortOnError: false,
  });
  app.connectMicroservice<MicroserviceOptions>({
    transport: Transport.TCP,
    options: { host: '127.0.0.1', port },
  });
  await app.startAllMicroservices();
  await app.listen(0, '127.0.0.1');
  const client: ClientProxy = ClientProxyFactory.create({
    transport: Transport.TCP,
    options: { host: '127.0.0.1', port },
  });
  return {
    app,
    jobs: app.get(Jobs),
    send: (id: number) => firstValueFrom(client.send<Run, number>('author.read-twice', id)),
    close: async () => {
      await client.close();
      await app.close();
    },
  };
}
