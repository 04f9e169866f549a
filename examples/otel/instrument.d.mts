import type { Tracer } from '@opentelemetry/api';

/**
 * Subscribe OpenTelemetry to context-cache's diagnostics channels: a span per load,
 * and a `context-cache.end` event with the stats on the active span when a request
 * cache ends. Returns the function that unsubscribes.
 */
export function instrumentContextCache(options?: { tracer?: Tracer }): () => void;
