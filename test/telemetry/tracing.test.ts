import { createServer, type AddressInfo, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { createOutboxRelay } from '../../src/queue/outbox-relay.js'
import { createQueues } from '../../src/queue/queues.js'
import { createRedis } from '../../src/queue/redis.js'
import { startTracingWith } from '../../src/telemetry/tracing.js'
import { createResponderWorkers } from '../../src/workers/responder-worker.js'
import { callEvent } from '../helpers/events.js'
import { startService } from '../helpers/service-process.js'
import { createWorld, eventually, quietLog, REDIS_URL } from '../helpers/world.js'

// Tracing is process-global (the OpenTelemetry API's provider), so this file has a process of its own.
const exporter = new InMemorySpanExporter()
const tracing = startTracingWith(new SimpleSpanProcessor(exporter), 'cad-router-test')
const world = await createWorld(t, { tracing })
const { app, db, prefix, databaseUrl } = world

const producer = createRedis(REDIS_URL, 'producer')
const queues = createQueues(producer, prefix, tracing.bullmq)
const relay = createOutboxRelay({ db, databaseUrl, queues, log: quietLog, pollMs: 60_000, batchSize: 20 })
const workerConnection = createRedis(REDIS_URL, 'worker')
const workers = createResponderWorkers({ db, connection: workerConnection, prefix, concurrency: 2, log: quietLog, telemetry: tracing.bullmq })
await relay.start()
workers.start()
t.teardown(async () => {
  await relay.stop()
  await workers.close()
  await Promise.all(Object.values(queues).map((q) => q.close()))
  await producer.quit()
  await workerConnection.quit()
  await tracing.shutdown()
})

t.test('one trace from the call event through the outbox and the relay to the worker', async (t) => {
  const event = callEvent({ natureCode: 'EDP' })
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: event, headers: { 'x-request-id': 'trace-me' } })
  t.equal(res.statusCode, 201)
  const assignmentIds: string[] = res.json().decision.assignments.map((a: { id: string }) => a.id)
  t.ok(assignmentIds.length > 0)

  const stored = await db.selectFrom('outbox').select(['trace_context']).where('assignment_id', 'in', assignmentIds).execute()
  t.ok(stored.every((r) => /"traceparent":"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]"/.test(r.trace_context ?? '')), 'each outbox row carries the request\'s trace context')

  const request = await eventually(async () => exporter.getFinishedSpans().find((s) => s.name === 'request' && s.attributes['http.route'] === '/v1/call-events'))
  const traceId = request.spanContext().traceId
  // The worker's span for each delivered job belongs to the same trace.
  const consumed = await eventually(async () => {
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId && s.name.startsWith('process'))
    return spans.length >= assignmentIds.length ? spans : undefined
  })
  t.equal(consumed.length, assignmentIds.length, 'one worker span per assignment, in the request\'s trace')
  // The relay's addBulk span serves a batch of many calls, so it is a trace of its own; each job in
  // it carries its own call's context, which is what the worker continues.
  t.ok(stored.every((r) => r.trace_context?.includes(traceId)), 'the stored context is the request\'s trace')

  // No personal data in any span.
  const everything = JSON.stringify(exporter.getFinishedSpans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events })))
  for (const value of [event.call.description, event.call.caller.name, event.call.caller.phone, event.call.subject.name, event.call.location.address]) {
    t.notOk(everything.includes(value), `no span holds "${value}"`)
  }
})

t.test('a person id in the URL reaches no span', async (t) => {
  const personId = 'P-TRACE-SECRET-41'
  t.equal((await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-3' } })).statusCode, 201)
  t.equal((await app.inject({ method: 'GET', url: `/v1/audit?targetType=person&target%49d=${personId}` })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: `/v1/case%2Dlinks/${personId}` })).statusCode, 200, 'the router decodes the path')
  const spans = await eventually(async () => {
    const found = exporter.getFinishedSpans().filter((s) => s.name === 'request' && (s.attributes['http.route'] === '/v1/case-links/:personId' || s.attributes['http.route'] === '/v1/audit'))
    return found.length >= 3 ? found : undefined
  })
  t.same(spans.map((s) => s.attributes['url.path']).sort(), ['/v1/audit?targetType=person&target%49d=[redacted]', '/v1/case%2Dlinks/[redacted]', '/v1/case-links/[redacted]'])
  const everything = JSON.stringify(exporter.getFinishedSpans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events })))
  t.notOk(everything.includes(personId), 'no span holds the person id')
})

t.test('without tracing, nothing is stored for it', async (t) => {
  await tracing.shutdown()
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'EDP' }) })
  t.equal(res.statusCode, 201)
  const ids: string[] = res.json().decision.assignments.map((a: { id: string }) => a.id)
  const rows = await db.selectFrom('outbox').select(['trace_context']).where('assignment_id', 'in', ids).execute()
  t.same(rows.map((r) => r.trace_context), ids.map(() => null))
})

t.test('a collector that never answers does not hold the exit past the grace period: the service still exits 0', async (t) => {
  // Takes the connection, reads nothing back: an OTLP endpoint behind a dead load balancer.
  const held: Socket[] = []
  const collector = createServer((socket) => void held.push(socket.on('error', () => {})))
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of held) s.destroy()
    collector.close()
  })
  const { port } = collector.address() as AddressInfo
  const GRACE_MS = 4000
  const api = await startService(t, {
    name: 'api',
    roles: 'api',
    env: {
      DATABASE_URL: databaseUrl,
      REDIS_URL,
      BULLMQ_PREFIX: prefix,
      LOG_LEVEL: 'info',
      SHUTDOWN_GRACE_MS: String(GRACE_MS),
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
    },
  })
  // Its readiness polls made spans: the shutdown has something to flush.
  const asked = performance.now()
  const exit = await api.kill('SIGTERM')
  const ms = performance.now() - asked
  // Past the grace period the grace timer exits 1: 0 is the exit within it.
  t.equal(exit.code, 0, `exit 0 after ${Math.round(ms)} ms (${api.output().slice(-1500)})`)
  t.ok(api.said('close failed'), 'the tracing close said it gave up')
  t.match(api.output(), /"resource":"tracing"[^\n]*spans not exported within the grace period/)
})
