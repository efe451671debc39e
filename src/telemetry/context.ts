import { context, propagation, trace } from '@opentelemetry/api'

/**
 * The active trace context, serialised the way BullMQ's telemetry reads job metadata; null when no
 * span is active (tracing off), so nothing is stored. On the OpenTelemetry API alone, which is a
 * no-op until ./tracing.ts registers the SDK.
 */
export function activeTraceMetadata(): string | null {
  if (!trace.getSpan(context.active())) return null
  const carrier: Record<string, string> = {}
  propagation.inject(context.active(), carrier)
  return carrier.traceparent ? JSON.stringify(carrier) : null
}
