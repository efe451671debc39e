import { sql } from 'kysely'
import type { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { Db } from '../db/connect.js'
import type { Metrics } from '../metrics/metrics.js'
import { listenToChannel, type ChannelListener, type Notifications } from '../db/listener.js'
import { prepared } from '../db/prepared.js'
import { withTimeout } from '../lib/timeout.js'
import { OUTBOX_CHANNEL } from '../calls/repository.js'
import type { QueueName } from '../routing/index.js'
import { ASSIGNMENT_JOB_NAME, type AssignmentJob, type AssignmentQueue } from './queues.js'
import { resendLost, type Resent } from './resend.js'

export interface OutboxRelayDeps {
  db: Db
  /** The process's LISTEN connection. */
  notifications?: Notifications
  /** Else a LISTEN connection of the relay's own (not from the pool). */
  databaseUrl?: string
  queues: Record<QueueName, AssignmentQueue>
  log: FastifyBaseLogger
  pollMs: number
  batchSize: number
  /** The queues' connection: when given, the relay wakes the moment Redis is back. */
  producer?: Redis
  /** Re-send assignments whose job ended without offering them (src/queue/resend.ts); off when not given. */
  resend?: RelayResendOptions
}

export interface RelayResendOptions {
  /** Still queued this long after the job was sent, and BullMQ no longer has the job to run: re-sent. */
  afterMs: number
  /** How often to look. */
  everyMs: number
  /** Counted in `cad_router_outbox_resends_total`, by queue and reason. */
  metrics?: Pick<Metrics, 'outboxResends'>
  /** Called for each re-send. */
  onResent?: (r: Resent) => void
  /** Pages of `batchSize` candidates one sweep looks at, at most (src/queue/resend.ts). */
  maxPages?: number
}

const MAX_BACKOFF_MS = 5000
/**
 * Backing off from a Postgres failure, a commit's NOTIFY (or the LISTEN connection coming back)
 * shows Postgres answers again: the relay tries this soon after it rather than at the end of the
 * backoff, which kept the calls committed first after an outage up to 5 s from their queues. Once
 * per run of failures: when that try fails too (the relay's own connections are the trouble, or
 * Postgres is slow but still committing), the backoff goes on, and commits never set the pace.
 */
const RETRY_AFTER_COMMIT_MS = 200
/** How long a batch may wait for Redis before it counts as a failure (and its row locks go). */
const REDIS_WAIT_MS = 2000

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => withTimeout(p, ms, `${what}: no answer from Redis within ${ms} ms`)

/**
 * Moves outbox rows to their BullMQ queues. Wakes on NOTIFY from the committing transaction, polls
 * slowly as a safety net, and keeps rows (retrying with backoff) while Redis is down. Several
 * relays may run: SKIP LOCKED hands each row to one of them, and the job id derived from the
 * assignment id makes a re-sent row a no-op in BullMQ. With `resend`, it also looks every
 * `everyMs` for assignments whose job ended without offering them, and sends them again.
 */
export function createOutboxRelay(deps: OutboxRelayDeps) {
  const { db, queues, log } = deps
  let running = false
  let loopDone: Promise<void> | undefined
  let stopping: Promise<void> | undefined
  let listener: ChannelListener | undefined
  let wake: (() => void) | undefined
  let pendingWake = false
  let failures = 0
  /** Whether the last failure came from Postgres (a Redis step's failure is Redis's). */
  let postgresFailed = false
  /** Whether this run of failures has had its early try (RETRY_AFTER_COMMIT_MS). */
  let triedEarly = false
  /** Set during a wait that a commit may shorten: a backoff from Postgres without its early try. */
  let soon: (() => void) | undefined
  let resendDone: Promise<void> | undefined
  let stopResendWait: (() => void) | undefined

  // A commit wakes the relay, except while it backs off from a Redis failure: then only the
  // timer, Redis coming back, or stop() does. Backing off from Postgres, it shortens the wait.
  const poke = () => {
    pendingWake = true
    if (!failures) wake?.()
    else soon?.()
  }
  let redisBack = false
  const onRedisReady = () => {
    // Between waits only: a wait it ends must not also cut the next one.
    if (wake) wake()
    else redisBack = true
  }

  const queueList = Object.values(queues)

  let redisFailed = false
  /**
   * A step that talks to Redis: its failure is Redis's, whatever Postgres does after it (a failed
   * rollback). Redis coming back wakes the relay; a commit must not cut that backoff short.
   */
  async function onRedis<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step()
    } catch (err) {
      redisFailed = true
      throw err
    }
  }

  async function sendBatch(): Promise<number> {
    redisFailed = false
    // Never hold row locks while waiting for a Redis that is not there.
    await onRedis(async () => {
      if (deps.producer && deps.producer.status !== 'ready') throw new Error(`Redis connection is ${deps.producer.status}`)
      await within(Promise.all(queueList.map((q) => q.waitUntilReady())), REDIS_WAIT_MS, 'queues not ready')
    })
    return db.transaction().execute(async (trx) => {
      const { rows } = await prepared(sql<{ id: number; queue: string; job_id: string; payload: unknown; trace_context: string | null }>`
        select id, queue, job_id, payload, trace_context from outbox where sent_at is null
        order by id limit ${deps.batchSize} for update skip locked`).execute(trx)
      if (!rows.length) return 0
      const byQueue = new Map<QueueName, typeof rows>()
      for (const r of rows) {
        const q = r.queue as QueueName
        byQueue.set(q, [...(byQueue.get(q) ?? []), r])
      }
      // A send that times out may still land in Redis: the rows are then sent again, and the
      // job ids make the second add a no-op.
      await onRedis(() =>
        within(
          Promise.all(
            [...byQueue].map(([q, list]) =>
              queues[q].addBulk(
                list.map((r) => ({
                  name: ASSIGNMENT_JOB_NAME,
                  data: r.payload as AssignmentJob,
                  // The job continues the trace of the request that wrote the row (tracing on).
                  opts: { jobId: r.job_id, ...(r.trace_context ? { telemetry: { metadata: r.trace_context } } : {}) },
                })),
              ),
            ),
          ),
          REDIS_WAIT_MS,
          'addBulk',
        ),
      )
      await prepared(sql`update outbox set sent_at = ${new Date()}, attempts = attempts + 1, last_error = null
        where id = any(${rows.map((r) => r.id)}::bigint[])`).execute(trx)
      return rows.length
    })
  }

  async function loop(): Promise<void> {
    while (running) {
      pendingWake = false
      let sent = 0
      try {
        sent = await sendBatch()
        if (failures) log.info({ afterFailures: failures, sent }, 'outbox relay recovered')
        failures = 0
        triedEarly = false
      } catch (err) {
        failures++
        postgresFailed = !redisFailed
        // Only the error's message: rows are never logged.
        log.warn({ err: { message: (err as Error).message }, failures, side: postgresFailed ? 'postgres' : 'redis' }, 'outbox relay could not send; rows stay in the outbox')
      }
      if (!running) break
      if (sent === deps.batchSize && !failures) continue
      const delay = failures ? Math.min(100 * 2 ** failures, MAX_BACKOFF_MS) : deps.pollMs
      if (pendingWake && !failures) continue
      if (redisBack) {
        redisBack = false
        continue
      }
      await new Promise<void>((resolve) => {
        const deadline = performance.now() + delay
        let timer = setTimeout(resolve, delay)
        wake = () => {
          clearTimeout(timer)
          resolve()
        }
        if (failures && postgresFailed && !triedEarly) {
          soon = () => {
            soon = undefined
            if (deadline - performance.now() <= RETRY_AFTER_COMMIT_MS) return
            triedEarly = true
            clearTimeout(timer)
            timer = setTimeout(resolve, RETRY_AFTER_COMMIT_MS)
          }
          // A commit during the failed attempt: Postgres answered someone meanwhile.
          if (pendingWake) soon()
        }
      })
      wake = undefined
      soon = undefined
    }
  }

  async function resendLoop(opts: RelayResendOptions): Promise<void> {
    // Where the last sweep stopped at its bound: the next carries on there, so a backlog longer
    // than one sweep looks at hides nothing behind it for longer than a few sweeps.
    let from: number | undefined
    while (running) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, opts.everyMs)
        stopResendWait = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      stopResendWait = undefined
      if (!running) break
      // Redis is down (the send loop reports it): whether a job is lost cannot be told now.
      if (failures || (deps.producer && deps.producer.status !== 'ready')) continue
      try {
        const swept = await resendLost(db, queues, {
          afterMs: opts.afterMs,
          batchSize: deps.batchSize,
          maxPages: opts.maxPages,
          from,
          redisWaitMs: REDIS_WAIT_MS,
          // As each commits: a sweep that fails at a later page has still made them.
          onResent: (r) => {
            // Ids only, like every relay line.
            log.warn({ assignmentId: r.assignmentId, queue: r.queue, jobId: r.jobId, previousJobId: r.previousJobId, resend: r.resend, reason: r.reason }, 'assignment re-sent: its job ended without offering it')
            opts.metrics?.outboxResends.inc({ queue: r.queue, reason: r.reason })
            opts.onResent?.(r)
          },
        })
        from = swept.next
        if (swept.failed) log.warn({ failed: swept.failed }, 'outbox re-send sweep could not re-send some lost jobs now; a later sweep tries again')
      } catch (err) {
        // `from` stays: the next sweep looks at the same candidates again.
        log.warn({ err: { message: (err as Error).message } }, 'outbox re-send sweep failed; trying again at the next one')
      }
    }
  }

  /** Stops asked for so far: a start that a later stop overtook must not go on. */
  let stops = 0

  return {
    async start(): Promise<void> {
      const seen = stops
      // A stop still under way: the loop and the listener it ends must be gone before new ones
      // start (its loop would see `running` again and go on, and it would close the new listener).
      if (stopping) await stopping.catch(() => {})
      // A stop asked for after this start is the caller's last word.
      if (stops !== seen || running) return
      running = true
      // A relay started again begins afresh, not at its last run's backoff.
      failures = 0
      triedEarly = false
      redisBack = false
      deps.producer?.on('ready', onRedisReady)
      // Each (re)connect pokes: rows committed while nobody listened. Until then the poll covers.
      listener = listenToChannel({ notifications: deps.notifications, databaseUrl: deps.databaseUrl, applicationName: 'cad-router-relay', log }, OUTBOX_CHANNEL, { onNotify: poke, onListening: poke })
      await listener?.started()
      // Stopped while the listener started: that stop closed it, and no loop may begin.
      if (stops !== seen) return
      loopDone = loop()
      resendDone = deps.resend ? resendLoop(deps.resend) : undefined
    },
    /** Stops after the batch in flight; safe to call twice (both calls wait for the same stop). */
    stop(): Promise<void> {
      stops++
      if (stopping) return stopping
      if (!running) return Promise.resolve()
      running = false
      wake?.()
      stopResendWait?.()
      deps.producer?.off('ready', onRedisReady)
      // Taken now: a close that fails must not leave it for the next start to overwrite.
      const closing = listener
      listener = undefined
      const stopped: Promise<void> = (async () => {
        await loopDone
        await resendDone
        await closing?.close()
      })().finally(() => {
        if (stopping === stopped) stopping = undefined
      })
      stopping = stopped
      return stopped
    },
  }
}

export type OutboxRelay = ReturnType<typeof createOutboxRelay>
