// A singleton service with @cached getters, as a Nest app would write it. Compiled by
// tsc with experimentalDecorators and emitDecoratorMetadata (see ../compile.ts).
import { Injectable } from '@nestjs/common';
import { cached } from '../../../src/index.js';

export interface Author {
  id: number;
  name: string;
}

/** A random delay of up to `max` ms, so that concurrent requests interleave. */
export const jitter = (max = 4): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, Math.random() * max));

let instances = 0;

@Injectable()
export class AuthorsService {
  /** Which instance this is: the same for every request while the app runs. */
  readonly instance = ++instances;
  /** Every id the getter loaded, in order, across requests. */
  readonly loads: number[] = [];

  @cached('nest-author')
  async getById(id: number): Promise<Author> {
    this.loads.push(id);
    await jitter();
    return { id, name: `author ${id}` };
  }

  /** Primed by each request with its own value; its loader says it was not. */
  @cached('nest-request-tag')
  async tag(_key: string): Promise<string> {
    return 'loaded: not primed';
  }
}
