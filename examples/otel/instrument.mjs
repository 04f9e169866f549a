// Turns context-cache's diagnostics channels into OpenTelemetry spans: one span per load
// (a cache miss), named after its group, and an event with the request's cache stats on
// the active span when a request cache ends. Hits make no span: they cost two map reads.
//
//   import { instrumentContextCache } from './instrument.mjs';
//   const stop = instrumentContextCache(); // uses the global tracer provider
//
// Spans start as children of the active span (the request's, with a context manager
// registered). The loader's own spans (a database query) are siblings of the load span.
import { subscribe, tracingChannel, unsubscribe } from 'node:diagnostics_channel';
import { SpanStatusCode, trace } from '@opentelemetry/api';
import { diagnosticsChannels } from 'context-cache';

/** A key as a span attribute: strings, or an array of strings for a composite key. */
function keyAttribute(key) {
  return Array.isArray(key) ? key.map((part) => String(part)) : String(key);
}

export function instrumentContextCache({ tracer = trace.getTracer('context-cache') } = {}) {
  const spans = new WeakMap();

  function finish(message) {
    const span = spans.get(message);
    if (span === undefined) return;
    spans.delete(message);
    if (message.failed) {
      const error = message.error;
      if (error instanceof Error || typeof error === 'string') span.recordException(error);
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? error.message : String(error),
      });
    }
    span.end();
  }

  const loadHandlers = {
    start(message) {
      const span = tracer.startSpan(`context-cache load ${message.group}`, {
        attributes: {
          'context_cache.group': message.group,
          'context_cache.key': keyAttribute(message.key),
          'context_cache.sync': message.sync,
          'context_cache.stored': message.stored,
        },
      });
      spans.set(message, span);
    },
    // A loader that returned a plain value or threw is over at `end` (`failed` is set);
    // one that returned a promise is over at `asyncEnd`.
    end(message) {
      if (message.failed !== undefined) finish(message);
    },
    asyncStart() {},
    asyncEnd: finish,
    error() {},
  };

  function onEnd({ stats }) {
    trace.getActiveSpan()?.addEvent('context-cache.end', {
      'context_cache.hits': stats.hits,
      'context_cache.joins': stats.joins,
      'context_cache.misses': stats.misses,
      'context_cache.loads': stats.loads,
      'context_cache.errors': stats.errors,
      'context_cache.evictions': stats.evictions,
    });
  }

  const loads = tracingChannel(diagnosticsChannels.load);
  loads.subscribe(loadHandlers);
  subscribe(diagnosticsChannels.end, onEnd);
  return function stopInstrumentation() {
    loads.unsubscribe(loadHandlers);
    unsubscribe(diagnosticsChannels.end, onEnd);
  };
}
