import { setTimeout as sleep } from 'node:timers/promises'
import { Job, type QueueBase } from 'bullmq'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'

export interface OrphanWatch {
  /** Runs one search now; resolves with the number of jobs handed back. */
  sweep(): Promise<number>
  stop(): void
}

/** What of a BullMQ Worker this reads, whatever its job types. */
type WatchedWorker = QueueBase & {
  readonly id: string
  on(event: 'active', listener: (job: { id?: string | undefined; token?: string | undefined }) => void): unknown
  on(event: 'completed' | 'failed', listener: (job: { id?: string | undefined } | undefined) => void): unknown
}

// Lost hand-overs are rare; should the record of jobs heard of ever grow this big, it is dropped
// (the price: a job a worker was about to run may be handed back, and run twice, idempotently).
const MAX_HEARD = 10_000

/**
 * Hands back the jobs Redis gave a worker that never heard of them.
 *
 * A worker takes a job with a script that moves it to active under a lock holding the worker's
 * token (`<worker id>:<n>`). When Redis dies after running the script but before its answer
 * reaches the worker (with an append-only file, the move survives the restart), the job sits in
 * active under a lock nobody renews: only the stalled check frees it, once the lock has lapsed
 * (WORKER_LOCK_DURATION_MS, then up to WORKER_STALLED_INTERVAL_MS). A call waits that long.
 *
 * After each (re)connect of the worker's connection, this looks for active jobs locked with this
 * worker's id that the worker has not heard of (BullMQ's 'active' event, the earliest sign) and
 * does not run, and moves them back to wait with the token from the lock (the script checks it,
 * so a job whose lock changed hands in between is left alone). On reconnect ioredis sends the
 * lost fetch again, and its job may still be on its way to the processor: candidates are looked
 * at again after `settleMs`, twice BullMQ's retry delay (runRetryDelay, 1 s here).
 *
 * It reads two things BullMQ does not document: the lock key (`<job key>:lock`) and the token's
 * form. test/assignments/workers.test.ts fails if either changes.
 */
export function watchForOrphans(
  worker: WatchedWorker,
  // The connection the worker was given: it fetches on it (BullMQ duplicates it only for blocking waits).
  connection: Redis,
  isRunning: (jobId: string) => boolean,
  log: Pick<FastifyBaseLogger, 'warn'>,
  settleMs = 2000,
): OrphanWatch {
  let stopped = false
  const mine = `${worker.id}:`
  const heard = new Map<string, string | undefined>()
  worker.on('active', (job) => {
    if (!job.id) return
    if (heard.size >= MAX_HEARD) heard.clear()
    heard.set(job.id, job.token)
  })
  const forget = (job: { id?: string | undefined } | undefined) => {
    if (job?.id) heard.delete(job.id)
  }
  worker.on('completed', forget)
  worker.on('failed', forget)
  const known = (id: string, token: string) => isRunning(id) || heard.get(id) === token

  async function lockedByUs(ids: string[]): Promise<{ id: string; token: string }[]> {
    if (!ids.length) return []
    const tokens = await connection.mget(...ids.map((id) => `${worker.toKey(id)}:lock`))
    return ids.flatMap((id, i) => {
      const token = tokens[i]
      return token?.startsWith(mine) && !known(id, token) ? [{ id, token }] : []
    })
  }

  async function sweep(): Promise<number> {
    const active = await connection.lrange(worker.toKey('active'), 0, -1)
    // Jobs that left active (delayed, or finished while we were away) need no record.
    const inActive = new Set(active)
    for (const id of heard.keys()) if (!inActive.has(id)) heard.delete(id)
    const first = await lockedByUs(active)
    if (!first.length) return 0
    await sleep(settleMs, undefined, { ref: false })
    if (stopped) return 0
    const again = new Set((await lockedByUs(first.map((c) => c.id))).map((c) => `${c.id} ${c.token}`))
    let handedBack = 0
    for (const { id, token } of first) {
      if (stopped || !again.has(`${id} ${token}`)) continue
      const job = await Job.fromId(worker, id)
      if (!job) continue
      try {
        await job.moveToWait(token)
      } catch (err) {
        // The lock lapsed or changed hands meanwhile: the job is someone else's now.
        if (!/lock|not in the active|missing key/i.test((err as Error).message)) log.warn({ queue: worker.name, jobId: id, err: { message: (err as Error).message } }, 'could not hand a job back')
        continue
      }
      handedBack++
      log.warn({ queue: worker.name, jobId: id }, 'a job Redis handed this worker without it hearing of it: back to its queue')
    }
    return handedBack
  }

  const onReady = () => {
    if (stopped) return
    sweep().catch((err: Error) => log.warn({ queue: worker.name, err: { message: err.message } }, 'could not look for jobs lost in a hand-over')) // the next reconnect looks again
  }
  connection.on('ready', onReady)
  return {
    sweep,
    stop() {
      stopped = true
      connection.off('ready', onReady)
    },
  }
}
