import type { Queue } from 'bullmq'

/**
 * A BullMQ job scheduler kept in Redis: written now, then checked every `checkEveryMs` and written
 * again only when missing. A Redis that comes back empty (no AOF, a failover) has lost it, and every
 * run after it with it; upserting only when missing means a check never moves the next run.
 * Returns the function that stops the checks.
 */
export async function keepScheduled(
  queue: Pick<Queue, 'getJobScheduler'>,
  schedulerId: string,
  upsert: () => Promise<unknown>,
  opts: { checkEveryMs: number; onRestored: () => void },
): Promise<() => void> {
  await upsert()
  const timer = setInterval(() => {
    queue
      .getJobScheduler(schedulerId)
      .then(async (found) => {
        if (found) return
        await upsert()
        opts.onRestored()
      })
      .catch(() => {}) // Redis down: the next check retries
  }, opts.checkEveryMs)
  timer.unref()
  return () => clearInterval(timer)
}
