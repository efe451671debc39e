import { performance } from 'node:perf_hooks'
import closeWithGrace from 'close-with-grace'
import pino from 'pino'
import { buildApp } from './app.js'
import { loadConfigOrExit, MIN_RETENTION_DAYS } from './config.js'
import { closePool, createDb, createPool } from './db/connect.js'
import { createNotifications, LISTEN_APPLICATION_NAME } from './db/listener.js'
import { createMigrationDb, ensureDatabase, migrateToLatest } from './db/migrate.js'
import { loggerOptions } from './logger.js'
import { ensureBootstrapKey } from './auth/keys.js'
import { createMetrics, observeWorkers } from './metrics/metrics.js'
import { createOutboxRelay } from './queue/outbox-relay.js'
import { createLifecycleQueue } from './queue/lifecycle.js'
import { createQueues } from './queue/queues.js'
import { closeRedis, createRedis, whenReady } from './queue/redis.js'
import { createRuleSetRegistry } from './rule-sets/registry.js'
import { createLifecycleWorker } from './workers/lifecycle-worker.js'
import { createResponderWorkers } from './workers/responder-worker.js'
import { createRetention } from './retention/scheduler.js'
import { withTimeout } from './lib/timeout.js'

/**
 * Entry point: runs the roles named in ROLE (api, relay, worker; all three by default) against
 * one Postgres and one Redis. Whoever creates a resource here closes it on shutdown.
 */
const config = loadConfigOrExit()
const log = pino(loggerOptions(config.LOG_LEVEL))
if (config.RETENTION_DAYS < MIN_RETENTION_DAYS) {
  log.warn(
    { RETENTION_DAYS: config.RETENTION_DAYS },
    `RETENTION_DAYS is below the ${MIN_RETENTION_DAYS}-day history window: calls scrubbed inside it no longer count as prior calls (the case-manager route, frequent callers)`,
  )
}
// The scrub goes by the call's close: a follow-up still open then loses whom it is to reach.
if (config.RETENTION_DAYS * 24 < config.FOLLOW_UP_DEADLINE_HOURS) {
  log.warn(
    { RETENTION_DAYS: config.RETENTION_DAYS, FOLLOW_UP_DEADLINE_HOURS: config.FOLLOW_UP_DEADLINE_HOURS },
    `RETENTION_DAYS is below the follow-up deadline (${config.FOLLOW_UP_DEADLINE_HOURS} h): a follow-up not done by then loses the caller and subject it is to reach`,
  )
}
const roles = new Set(config.ROLE)
interface Closer {
  name: string
  close: () => Promise<unknown>
}
// Closed role by role: the HTTP server first (in-flight requests finish, new ones are refused),
// then the relay, then the workers (their jobs finish, or go back to their queues), then what they
// all share. Within a role, the last thing started is closed first.
const closing: Record<'api' | 'relay' | 'worker' | 'shared', Closer[]> = { api: [], relay: [], worker: [], shared: [] }
const closers = closing.shared
const inClosingOrder = (): Closer[] => [...closing.api, ...closing.relay, ...closing.worker, ...closing.shared]
// When the shutdown began: the Postgres close takes what is left of SHUTDOWN_GRACE_MS from here.
let stoppingSince: number | undefined
// The shutdown closes what was registered when it began. start() goes on meanwhile, so it checks
// this after each wait: from then on it makes nothing more, and closes what the wait gave it.
const stopping = (): boolean => stoppingSince !== undefined
// When the grace timer fires (performance.now()); closed without a signal (a failed start), from now.
const graceEndsAt = (): number => (stoppingSince ?? performance.now()) + config.SHUTDOWN_GRACE_MS
// Kept back from the grace period for ending the sessions of statements still running, and the exit.
const PG_END_RESERVE_MS = Math.min(1000, Math.floor(config.SHUTDOWN_GRACE_MS / 4))
// Kept back before that for handing jobs back (a forced close waits up to about 1.2 s for its blocking connection).
const HAND_BACK_RESERVE_MS = Math.min(1500, Math.floor(config.SHUTDOWN_GRACE_MS / 4))
/**
 * When the workers stop waiting for their jobs: WORKER_DRAIN_MS from now, but never so late that
 * the hand-back and the Postgres close no longer fit in the grace period, which counts from the
 * signal (the HTTP server and the relay closed first, and may have taken seconds of it).
 */
const drainDeadline = (): number => Math.min(performance.now() + config.WORKER_DRAIN_MS, graceEndsAt() - PG_END_RESERVE_MS - HAND_BACK_RESERVE_MS)
// One registry for the process: /metrics (api role) also counts this process's worker errors.
const metrics = createMetrics()
// Loaded only when on: the OpenTelemetry SDK is some 300 modules a start would otherwise load for nothing.
const tracing = config.OTEL_EXPORTER_OTLP_ENDPOINT
  ? (await import('./telemetry/tracing.js')).startTracing({ endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName: config.OTEL_SERVICE_NAME })
  : undefined
// Closed after everything but Postgres, so the spans of the shutdown itself are exported; within
// the grace period, less Postgres's share: a collector that does not answer (the exporter waits 10 s
// a try) held the exit past it, and the grace timer then exited 1 before the Postgres close ended
// the statements of jobs handed back.
if (tracing) {
  closers.push({
    name: 'tracing',
    close: () => withTimeout(tracing.shutdown(), Math.max(0, graceEndsAt() - 2 * PG_END_RESERVE_MS - performance.now()), 'spans not exported within the grace period'),
  })
}

async function start(): Promise<void> {
  const created = await ensureDatabase(config.DATABASE_URL, config.DATABASE_QUERY_TIMEOUT_MS).catch((err: unknown) => {
    // Name the setting to fix; the address only, never the URL (it may hold a password).
    const { hostname, port } = new URL(config.DATABASE_URL)
    throw new Error(`could not connect to Postgres at ${hostname}:${port || 5432} or create the database there (DATABASE_URL); the cause says why`, { cause: err })
  })
  if (created) log.info('database created')
  const migrationDb = createMigrationDb(config.DATABASE_URL, config.DATABASE_STATEMENT_TIMEOUT_MS, config.DATABASE_QUERY_TIMEOUT_MS)
  const applied = await migrateToLatest(migrationDb, {
    onNewerSchema: (names) => log.warn({ newer: names }, 'the database has migrations of a later release: this release runs on its schema, as each release runs on the one after it during an upgrade'),
  }).finally(() => migrationDb.destroy())
  if (stopping()) return
  const pool = createPool({
    connectionString: config.DATABASE_URL,
    max: config.DATABASE_POOL_SIZE,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
    lockTimeoutMs: config.DATABASE_LOCK_TIMEOUT_MS,
    queryTimeoutMs: config.DATABASE_QUERY_TIMEOUT_MS,
    log,
  })
  const db = createDb(pool)
  closers.push({
    name: 'postgres',
    close: () =>
      closePool(db, pool, {
        until: graceEndsAt() - PG_END_RESERVE_MS,
        terminateMs: PG_END_RESERVE_MS / 2,
        connectionString: config.DATABASE_URL,
        log,
      }),
  })
  if (applied.length) log.info({ applied }, 'migrations applied')
  // One LISTEN connection for the whole process: every listening connection costs Postgres at
  // every notifying commit (src/db/listener.ts). It connects on the first subscription.
  const notifications = createNotifications({ databaseUrl: config.DATABASE_URL, applicationName: LISTEN_APPLICATION_NAME, log })
  closers.unshift({ name: 'postgres (listen)', close: () => notifications.close() })
  if (config.ADMIN_API_KEY && (await ensureBootstrapKey(db, config.ADMIN_API_KEY))) log.info('admin key from ADMIN_API_KEY stored')
  if (stopping()) return

  // The API first: ingest needs only Postgres, so it serves while the workers below still wait for
  // a Redis that is down (their schedules are written to it before they start).
  if (roles.has('api')) {
    const probe = createRedis(config.REDIS_URL, 'probe', log)
    closing.api.unshift({ name: 'redis (readiness)', close: () => closeRedis(probe) })
    const ruleSets = await createRuleSetRegistry(db, { notifications, checkEveryMs: config.RULE_SET_CHECK_MS, log })
    if (stopping()) return ruleSets.close()
    closing.api.unshift({ name: 'rule sets', close: () => ruleSets.close() })
    const app = await buildApp({ config, db, redis: probe, ruleSets, notifications, logger: log, metrics, ...(tracing ? { tracing } : {}) })
    // Listening only when no shutdown began meanwhile: its close is registered just after.
    if (stopping()) return app.close()
    await app.listen({ port: config.PORT, host: config.HOST })
    if (stopping()) return app.close()
    closing.api.unshift({ name: 'http', close: () => app.close() })
    log.info({ ruleSetVersion: ruleSets.active().version }, 'api ready')
  }

  if (roles.has('relay')) {
    const producer = createRedis(config.REDIS_URL, 'producer', log)
    closing.relay.unshift({ name: 'redis (relay)', close: () => closeRedis(producer) })
    // Else the relay's first send fails on a connection still connecting, and every start logs a warning.
    await whenReady(producer, 2000)
    if (stopping()) return
    const queues = createQueues(producer, config.BULLMQ_PREFIX, tracing?.bullmq)
    const relay = createOutboxRelay({
      db,
      notifications,
      queues,
      producer,
      log,
      pollMs: config.RELAY_POLL_MS,
      batchSize: config.RELAY_BATCH_SIZE,
      resend: { afterMs: config.RELAY_RESEND_AFTER_MS, everyMs: config.RELAY_RESEND_SWEEP_MS, metrics },
    })
    closing.relay.unshift({ name: 'queues', close: () => Promise.all(Object.values(queues).map((q) => q.close())) })
    // Registered before the start: a stop during it (SIGTERM) leaves the relay's loop never running.
    closing.relay.unshift({ name: 'outbox relay', close: () => relay.stop() })
    await relay.start()
    if (stopping()) return
    log.info('outbox relay started')
  }

  if (roles.has('worker')) {
    // Each closer is registered as soon as its resource exists: a SIGTERM while a later step waits
    // (for a Redis that is down, say) still drains what already runs. The last one made closes first.
    const connection = createRedis(config.REDIS_URL, 'worker', log)
    closing.worker.unshift({ name: 'redis (workers)', close: () => closeRedis(connection) })
    const lifecycleQueue = createLifecycleQueue(connection, config.BULLMQ_PREFIX)
    closing.worker.unshift({ name: 'lifecycle queue', close: () => lifecycleQueue.close() })
    // All the workers stop together: each is paused at once, and the jobs in flight of all of them
    // get the same WORKER_DRAIN_MS before they are handed back (not one drain after another).
    const draining: Array<(until: number) => Promise<void>> = []
    // Settled, not all: one close that fails must not let the shared connection below close under the others' hand-backs.
    const drainAll = async (until: number) => {
      for (const r of await Promise.allSettled(draining.map((close) => close(until)))) {
        if (r.status === 'rejected') log.warn({ resource: 'workers', err: { message: (r.reason as Error).message } }, 'close failed')
      }
    }
    closing.worker.unshift({ name: 'workers', close: () => drainAll(drainDeadline()) })
    const workers = createResponderWorkers({
      db,
      connection,
      prefix: config.BULLMQ_PREFIX,
      concurrency: config.WORKER_CONCURRENCY,
      concurrencyPerQueue: config.WORKER_CONCURRENCY_PER_QUEUE,
      lifecycle: lifecycleQueue,
      ackDeadlines: config.ACK_DEADLINES,
      drainMs: config.WORKER_DRAIN_MS,
      lockDurationMs: config.WORKER_LOCK_DURATION_MS,
      stalledIntervalMs: config.WORKER_STALLED_INTERVAL_MS,
      log,
      ...(tracing ? { telemetry: tracing.bullmq } : {}),
    })
    draining.push((until) => workers.close(until))
    const lifecycle = await createLifecycleWorker({
      db,
      connection,
      prefix: config.BULLMQ_PREFIX,
      queue: lifecycleQueue,
      ackDeadlines: config.ACK_DEADLINES,
      sweepEveryMs: config.LIFECYCLE_SWEEP_MS,
      drainMs: config.WORKER_DRAIN_MS,
      lockDurationMs: config.WORKER_LOCK_DURATION_MS,
      stalledIntervalMs: config.WORKER_STALLED_INTERVAL_MS,
      log,
    })
    draining.push((until) => lifecycle.close(until))
    if (stopping()) return
    const retention = await createRetention({ db, connection, prefix: config.BULLMQ_PREFIX, retentionDays: config.RETENTION_DAYS, everyMs: config.RETENTION_EVERY_MS, drainMs: config.WORKER_DRAIN_MS, log })
    // The same deadline: the run stops after the batch in hand, and one still running then (a batch
    // stuck in Postgres) is handed back to its queue, its session ended by the Postgres close.
    draining.push((until) => retention.close(until))
    // Started together, once the waits are over: a shutdown that began during one drained the
    // workers registered then, and one started after it would take jobs the exit abandons.
    if (stopping()) return
    observeWorkers([...workers.workers, lifecycle.worker, retention.worker], metrics)
    workers.start()
    lifecycle.start()
    retention.start()
    log.info({ queues: workers.workers.map((w) => w.name), concurrency: config.WORKER_CONCURRENCY, perQueue: config.WORKER_CONCURRENCY_PER_QUEUE, ackDeadlines: config.ACK_DEADLINES }, 'responder and lifecycle workers started')
  }
}

closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
  stoppingSince = performance.now()
  if (err) log.error({ err }, 'shutting down after an error')
  else log.info({ signal }, 'shutting down')
  for (const c of inClosingOrder()) {
    try {
      await c.close()
    } catch (e) {
      log.warn({ resource: c.name, err: { message: (e as Error).message } }, 'close failed')
    }
  }
})

try {
  log.info({ roles: [...roles] }, 'starting')
  await start()
} catch (err) {
  // Cut short by the shutdown, a step fails on what the shutdown closed under it (a connection, the
  // pool): not a failed start, and the shutdown, not this, ends the process.
  if (stopping()) log.info({ err: { message: (err as Error).message } }, 'start cut short by the shutdown')
  else {
    log.fatal({ err }, 'start failed')
    for (const c of inClosingOrder()) await c.close().catch(() => {})
    process.exit(1)
  }
}
