import { setTimeout as sleep } from 'node:timers/promises'
import { Job, type QueueBase } from 'bullmq'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'

export interface OrphanWatch {
  /** Runs one search now (tests); resolves with the jobs handed back. */
  sweep(): Promise<number>
  stop(): void
}

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
 * worker's id that the worker does not run, and moves them back to wait with the token from the
 * lock (the script checks it, so a job whose lock changed hands in between is left alone). A job
 * whose answer is merely late starts running within `settleMs`, so candidates are checked twice.
 *
 * It reads two names BullMQ does not document: the lock key (`<job key>:lock`) and the token's
 * form. test/assignments/workers.test.ts fails if either changes.
 */
export function watchForOrphans(
  // What of a Worker this reads, whatever its job types.
  worker: QueueBase & { readonly id: string },
  connection: Redis,
  isRunning: (jobId: string) => boolean,
  log: Pick<FastifyBaseLogger, 'warn'>,
  settleMs = 1000,
): OrphanWatch {
  let stopped = false
  const mine = `${worker.id}:`

  async function sweep(): Promise<number> {
    const client = await worker.client
    const candidates: { id: string; token: string }[] = []
    for (const id of await client.lrange(worker.toKey('active'), 0, -1)) {
      if (isRunning(id)) continue
      const token = await client.get(`${worker.toKey(id)}:lock`)
      if (token?.startsWith(mine)) candidates.push({ id, token })
    }
    if (!candidates.length) return 0
    await sleep(settleMs)
    let handedBack = 0
    for (const { id, token } of candidates) {
      if (stopped || isRunning(id)) continue
      const job = await Job.fromId(worker, id)
      if (!job) continue
      try {
        await job.moveToWait(token)
      } catch {
        continue // the lock lapsed and the job moved on meanwhile
      }
      handedBack++
      log.warn({ queue: worker.name, jobId: id }, 'a job Redis handed this worker without it hearing of it: back to its queue')
    }
    return handedBack
  }

  const onReady = () => {
    if (stopped) return
    sweep().catch(() => {}) // Redis gone again: the next reconnect searches again
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
