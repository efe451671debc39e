import { context, propagation, trace, type Context } from '@opentelemetry/api'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BatchSpanProcessor, type ReadableSpan, type Span, type SpanProcessor } from '@opentelemetry/sdk-trace-base'
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import { BullMQOtel } from 'bullmq-otel'
import { redactUrl } from '../logger.js'

/**
 * OpenTelemetry traces across API → outbox → relay → worker, off unless an OTLP endpoint is
 * configured. The request span's context is stored with each outbox row, so the relay adds the job
 * under it and BullMQ's telemetry carries it on to the worker: one trace per call event, although
 * the hop through Postgres crosses processes and time.
 *
 * The SDK is some 300 modules: main imports this file only when tracing is on. What the rest of the
 * code needs of the active trace is in ./context.ts, on the API package alone.
 */
export interface Tracing {
  /** Registered first in the app, so every route and hook is covered. */
  fastify: FastifyOtelInstrumentation
  /** Passed to every Queue and Worker. */
  bullmq: BullMQOtel
  shutdown(): Promise<void>
}

export const TRACER_NAME = 'cad-router'

/** Tracing through a given span processor (tests pass an in-memory one). */
export function startTracingWith(processor: SpanProcessor, serviceName: string): Tracing {
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName }),
    spanProcessors: [redactingUrls(processor)],
  })
  // Sets the global provider, the W3C propagator and the AsyncLocalStorage context manager.
  provider.register()
  const fastify = new FastifyOtelInstrumentation()
  fastify.setTracerProvider(provider)
  return {
    fastify,
    bullmq: new BullMQOtel(TRACER_NAME),
    async shutdown() {
      await provider.shutdown()
      trace.disable()
      propagation.disable()
      context.disable()
    },
  }
}

/**
 * The request span's `url.path` is the URL as sent, query included, so it may hold a county person
 * id (`/v1/case-links/P-…`, `?targetId=P-…`). A span leaves for a collector we don't run; it gets
 * what a log line gets. Set when the span starts, so this is the last moment it can change.
 */
function redactingUrls(next: SpanProcessor): SpanProcessor {
  return {
    onStart(span: Span, parent: Context) {
      const url = span.attributes['url.path']
      if (typeof url === 'string') span.setAttribute('url.path', redactUrl(url))
      next.onStart(span, parent)
    },
    onEnd: (span: ReadableSpan) => next.onEnd(span),
    forceFlush: () => next.forceFlush(),
    shutdown: () => next.shutdown(),
  }
}

/** Tracing to an OTLP/HTTP collector, or nothing when no endpoint is configured. */
export function startTracing(opts: { endpoint?: string | undefined; serviceName: string }): Tracing | undefined {
  if (!opts.endpoint) return undefined
  const url = `${opts.endpoint.replace(/\/+$/, '')}/v1/traces`
  return startTracingWith(new BatchSpanProcessor(new OTLPTraceExporter({ url })), opts.serviceName)
}
