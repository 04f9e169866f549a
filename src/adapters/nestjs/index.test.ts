import { describe, expect, it } from 'vitest';
import { ContextCacheModule } from './index.js';

describe('ContextCacheModule.forRoot(options)', () => {
  it('is a global module with the settings, and defaults without options', () => {
    const module = ContextCacheModule.forRoot();
    expect(module).toMatchObject({ module: ContextCacheModule, global: true });
    expect(ContextCacheModule.forRoot({ serverTiming: true, lifetime: 1000 }).global).toBe(true);
  });

  it('checks each option by name, so a misspelt one is not silently ignored', () => {
    expect(() => ContextCacheModule.forRoot({ serverTimings: true } as never)).toThrow(
      new TypeError(
        "ContextCacheModule.forRoot(): unknown option options.serverTimings (did you mean 'serverTiming'?). " +
          "The known options are 'lifetime', 'maxEntries', 'serverTiming' or 'onEnd'.",
      ),
    );
  });

  it('checks values as every adapter does, naming the argument', () => {
    expect(() => ContextCacheModule.forRoot({ lifetime: -1 })).toThrow(
      new TypeError(
        'ContextCacheModule.forRoot(): options.lifetime must be a positive number of milliseconds such as 60_000, got a number (-1).',
      ),
    );
    expect(() => ContextCacheModule.forRoot({ onEnd: 'log' as never })).toThrow(
      /^ContextCacheModule\.forRoot\(\): options\.onEnd must be a function/,
    );
    expect(() => ContextCacheModule.forRoot('fast' as never)).toThrow(
      /^ContextCacheModule\.forRoot\(\): options must be an object such as \{ serverTiming: true \}, got a string/,
    );
  });
});
