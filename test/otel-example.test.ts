import * as dc from 'node:diagnostics_channel';
import { context, SpanStatusCode } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { instrumentContextCache } from '../examples/otel/instrument.mjs';
import {
  getContextCache,
  getWithContextCache,
  getWithContextCacheSync,
  withCacheContext,
} from '../src/index.js';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const tracer = provider.getTracer('test');
const contextManager = new AsyncLocalStorageContextManager();
let stop: (() => void) | undefined;

beforeAll(() => {
  context.setGlobalContextManager(contextManager.enable());
});
afterAll(async () => {
  context.disable();
  await provider.shutdown();
});
afterEach(() => {
  stop?.();
  stop = undefined;
  exporter.reset();
});

const tick = () => new Promise((resolve) => setImmediate(resolve));
const loadsOf = (spans: ReadableSpan[]) =>
  spans.filter((span) => span.name.startsWith('context-cache load'));

/** One "request": a server span, a request cache inside it, ended before the span ends. */
function request(fn: () => Promise<void>): Promise<ReadableSpan> {
  return tracer.startActiveSpan('GET /issues', async (span) => {
    await withCacheContext(async () => {
      await fn();
      getContextCache()?.end();
    });
    span.end();
    return exporter.getFinishedSpans().find((s) => s.name === 'GET /issues') as ReadableSpan;
  });
}

describe('OpenTelemetry example (examples/otel)', () => {
  it('makes one span per load, a child of the request span, and none for hits or joins', async () => {
    stop = instrumentContextCache({ tracer });
    const db = async (id: number) => {
      await tick();
      return { id };
    };
    const server = await request(async () => {
      await Promise.all([getWithContextCache('user', 1, db), getWithContextCache('user', 1, db)]);
      await getWithContextCache('user', 1, db);
      await getWithContextCache('user', 2, db);
      await getWithContextCache('membership', [10, 2], () => true);
      getWithContextCacheSync('loaders', 'user', () => ({}));
    });
    const loads = loadsOf(exporter.getFinishedSpans());
    expect(loads.map((s) => [s.name, s.attributes['context_cache.key']])).toEqual([
      ['context-cache load user', '1'],
      ['context-cache load user', '2'],
      ['context-cache load membership', ['10', '2']],
      ['context-cache load loaders', 'user'],
    ]);
    for (const span of loads) {
      expect(span.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
      expect(span.spanContext().traceId).toBe(server.spanContext().traceId);
      expect(span.status.code).toBe(SpanStatusCode.UNSET);
      expect(span.ended).toBe(true);
    }
    expect(loads[0]?.attributes).toEqual({
      'context_cache.group': 'user',
      'context_cache.key': '1',
      'context_cache.sync': false,
      'context_cache.stored': true,
    });
    expect(loads[3]?.attributes['context_cache.sync']).toBe(true);
  });

  it('marks failed loads as errors with the exception, whether they reject or throw', async () => {
    stop = instrumentContextCache({ tracer });
    await request(async () => {
      await expect(
        getWithContextCache('user', 9, () => Promise.reject(new Error('db timeout'))),
      ).rejects.toThrow('db timeout');
      await expect(
        getWithContextCache('setting', 'x', () => {
          throw new Error('bad setting');
        }),
      ).rejects.toThrow('bad setting');
      await tick();
    });
    const loads = loadsOf(exporter.getFinishedSpans());
    expect(loads.map((s) => [s.name, s.status])).toEqual([
      ['context-cache load user', { code: SpanStatusCode.ERROR, message: 'db timeout' }],
      ['context-cache load setting', { code: SpanStatusCode.ERROR, message: 'bad setting' }],
    ]);
    expect(loads[0]?.events.map((e) => e.name)).toEqual(['exception']);
    expect(loads[0]?.events[0]?.attributes?.['exception.message']).toBe('db timeout');
  });

  it("adds the request's cache stats as an event on the active span when the cache ends", async () => {
    stop = instrumentContextCache({ tracer });
    const server = await request(async () => {
      await getWithContextCache('user', 1, async () => 1);
      await getWithContextCache('user', 1, async () => 1);
    });
    expect(server.events.map((e) => [e.name, e.attributes])).toEqual([
      [
        'context-cache.end',
        {
          'context_cache.hits': 1,
          'context_cache.joins': 0,
          'context_cache.misses': 1,
          'context_cache.loads': 1,
          'context_cache.errors': 0,
          'context_cache.evictions': 0,
        },
      ],
    ]);
  });

  it('stops making spans, and leaves the channels without subscribers, once stopped', async () => {
    instrumentContextCache({ tracer })();
    expect(dc.tracingChannel('context-cache:load').hasSubscribers).toBe(false);
    expect(dc.hasSubscribers('context-cache:end')).toBe(false);
    const server = await request(async () => {
      await getWithContextCache('user', 1, async () => 1);
    });
    expect(loadsOf(exporter.getFinishedSpans())).toEqual([]);
    expect(server.events).toEqual([]);
  });
});
