import type { FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { feedHorizon } from '../assignments/feed.js'
import type { CallService } from '../calls/service.js'
import type { Db } from '../db/connect.js'
import { ESCALATION_STATUSES, outboxLag, overdueFollowUps, queueDepths } from '../reports/repository.js'
import { QUEUES } from '../routing/index.js'

/**
 * The service's Prometheus metrics. One Registry per app instance (not prom-client's global one),
 * so several apps in one process — as in the tests — never collide.
 */
export function createMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'cad_router_' })
  const registers = [registry]
  return {
    registry,
    httpRequests: new Counter({ name: 'cad_router_http_requests_total', help: 'HTTP requests by method, route and status', labelNames: ['method', 'route', 'status'] as const, registers }),
    httpDuration: new Histogram({
      name: 'cad_router_http_request_duration_seconds',
      help: 'HTTP request latency by method and route',
      labelNames: ['method', 'route'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    ingestBatchSize: new Histogram({
      name: 'cad_router_ingest_batch_events',
      help: 'Call events stored per ingest transaction (group commit: concurrent events share one)',
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers,
    }),
    decisions: new Counter({ name: 'cad_router_decisions_total', help: 'Routing decisions made by this process, by route and rule', labelNames: ['route', 'rule'] as const, registers }),
    queueDepth: new Gauge({ name: 'cad_router_queue_depth', help: 'Assignments waiting for a responder (queued, offered, reserved), per queue', labelNames: ['queue'] as const, registers }),
    queueAge: new Gauge({ name: 'cad_router_queue_oldest_age_seconds', help: 'How long the longest-waiting assignment has waited, per queue (0 when empty; a reserved follow-up waits from its reservedUntil)', labelNames: ['queue'] as const, registers }),
    outboxPending: new Gauge({ name: 'cad_router_outbox_pending', help: 'Outbox rows not yet relayed to Redis', registers }),
    outboxLag: new Gauge({ name: 'cad_router_outbox_lag_seconds', help: 'Age of the oldest outbox row not yet relayed (0 when none)', registers }),
    // Relay errors show here and in the lag, whichever process runs the relay: both are read from Postgres.
    outboxFailing: new Gauge({ name: 'cad_router_outbox_failing', help: 'Outbox rows whose last relay attempt failed (relay errors)', registers }),
    escalations: new Gauge({
      name: 'cad_router_escalation_records',
      help: 'Escalation records (transitions to escalated, expired or declined) since the start of the data, by the queue the assignment was in and status; only grows',
      labelNames: ['queue', 'status'] as const,
      registers,
    }),
    // What the gauge above has counted so far: the counts of every record written by a transaction
    // below `below` (see countEscalations).
    escalationTally: { below: '0', counts: new Map<string, number>() },
    followUpsOverdue: new Gauge({ name: 'cad_router_follow_ups_overdue', help: 'Follow-ups past their due time and still open', registers }),
    workerErrors: new Counter({
      name: 'cad_router_worker_errors_total',
      help: 'Responder worker errors and failed jobs in this process (counted when the api and worker roles share a process)',
      labelNames: ['queue', 'kind'] as const,
      registers,
    }),
    outboxResends: new Counter({
      name: 'cad_router_outbox_resends_total',
      help: 'Assignments re-sent by the relay in this process because their job ended without offering them (failed for good, missing from Redis), by queue and reason',
      labelNames: ['queue', 'reason'] as const,
      registers,
    }),
    redisBreakerOpen: new Gauge({
      name: 'cad_router_redis_breaker_open',
      help: 'Whether this API process skips Redis on the request path (1) after Redis failed to answer, its rate limits counted per process; 0 when Redis answers',
      registers,
    }),
    redisBreakerOpenings: new Counter({ name: 'cad_router_redis_breaker_openings_total', help: 'Times this API process stopped asking Redis on the request path because it failed to answer', registers }),
    scrapeErrors: new Counter({ name: 'cad_router_metrics_scrape_errors_total', help: 'Scrapes whose database read failed (the gauges keep their last values)', registers }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>

/** Counts worker errors and failed jobs; main.ts wires it when this process also runs the workers. */
export function observeWorkers(workers: ReadonlyArray<{ name: string; on(event: 'error' | 'failed', fn: () => void): unknown }>, metrics: Metrics): void {
  for (const w of workers) {
    w.on('error', () => metrics.workerErrors.inc({ queue: w.name, kind: 'error' }))
    w.on('failed', () => metrics.workerErrors.inc({ queue: w.name, kind: 'job_failed' }))
  }
}

/** Request rate and latency by route template (never the raw URL, which would carry ids). */
export function instrumentHttp(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched'
    metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) })
    metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000)
  })
}

/** Counts each decision the call service makes (repeats of stored events are not new decisions). */
export function instrumentCallService(calls: CallService, metrics: Metrics): CallService {
  return {
    ...calls,
    // Forward every argument: dropping the scope once let a CAD post into another agency's call.
    async ingest(...args) {
      const out = await calls.ingest(...args)
      if (out.created && out.result.applied) metrics.decisions.inc({ route: out.result.decision.route, rule: out.result.decision.ruleId })
      return out
    },
  }
}

/**
 * Reads the state-derived gauges from Postgres (the system of record) at scrape time. The
 * escalation count may fail alone (a process's first count reads every record, and on a large
 * history can pass the statement timeout): the other gauges are still set, its own keep their
 * values, and the error is thrown afterwards for the route to count and log.
 */
export async function refreshFromDb(db: Db, metrics: Metrics, now: Date): Promise<void> {
  let escalationError: unknown
  const [depths, lag, overdue, failing, escalations] = await Promise.all([
    queueDepths(db),
    outboxLag(db),
    overdueFollowUps(db, now),
    db.selectFrom('outbox').select((eb) => eb.fn.countAll<number>().as('n')).where('sent_at', 'is', null).where('last_error', 'is not', null).executeTakeFirstOrThrow(),
    countEscalations(db, metrics.escalationTally).catch((err: unknown) => {
      escalationError = err
      return undefined
    }),
  ])
  for (const queue of QUEUES) {
    const rows = depths.filter((d) => d.queue === queue)
    metrics.queueDepth.set({ queue }, rows.reduce((s, r) => s + r.waiting, 0))
    const oldest = Math.min(...rows.map((r) => r.oldestWaitingSince?.getTime() ?? Infinity))
    metrics.queueAge.set({ queue }, Number.isFinite(oldest) ? Math.max(0, (now.getTime() - oldest) / 1000) : 0)
    if (escalations) for (const status of ESCALATION_STATUSES) metrics.escalations.set({ queue, status }, escalations.get(`${queue}/${status}`) ?? 0)
  }
  metrics.outboxPending.set(lag.pending)
  metrics.outboxLag.set(lag.oldestCreatedAt ? Math.max(0, (now.getTime() - lag.oldestCreatedAt.getTime()) / 1000) : 0)
  metrics.outboxFailing.set(Number(failing.n))
  metrics.followUpsOverdue.set(overdue.reduce((s, r) => s + r.overdue, 0))
  if (escalationError !== undefined) throw escalationError
}

/**
 * Counts escalation records incrementally. They only grow (retention scrubs text, never deletes
 * rows), and a count of them all on every scrape grew with the table: months of transitions read
 * every 15 s by every API process. Each scrape now reads only the records written since the one
 * before, by writing transaction (feed_xid, indexed), below the console feed's horizon (the oldest
 * transaction of this database still open; feedHorizon): a record a long transaction commits late
 * is counted once every older transaction here has ended, never skipped. The first scrape of a
 * process counts everything once.
 *
 * The queue is the one the assignment was in when the record was written (feed_queue), so a count
 * never moves to another label when an assignment moves later. Two scrapes at once both read from
 * the same point; the one that ends second finds the tally moved on and adds nothing, so nothing
 * is counted twice (its gauges read as of the first). A horizon lower than the last one means
 * transaction ids started again (a restore into another cluster): the count starts again from 0.
 */
export async function countEscalations(db: Db, tally: Metrics['escalationTally']): Promise<ReadonlyMap<string, number>> {
  const seen = tally.below
  const below = String(await feedHorizon(db))
  const restart = BigInt(below) < BigInt(seen)
  const from = restart ? '0' : seen
  const rows = await db
    .selectFrom('assignment_transitions')
    .select((eb) => ['feed_queue', 'to_status', eb.fn.countAll<string>().as('n')])
    .where(sql<boolean>`feed_xid >= ${from}::xid8 and feed_xid < ${below}::xid8`)
    .where('to_status', 'in', ESCALATION_STATUSES)
    .groupBy(['feed_queue', 'to_status'])
    .execute()
  if (tally.below !== seen) return tally.counts
  if (restart) tally.counts.clear()
  for (const r of rows) {
    const key = `${r.feed_queue}/${r.to_status}`
    tally.counts.set(key, (tally.counts.get(key) ?? 0) + Number(r.n))
  }
  tally.below = below
  return tally.counts
}
