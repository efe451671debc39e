import { Redis, type RedisOptions } from 'ioredis'

/**
 * Producers fail fast: a command issued while Redis is down rejects at once instead of queueing in
 * memory, and the outbox keeps the row for the next attempt. Workers wait: BullMQ needs
 * maxRetriesPerRequest null for its blocking commands.
 */
export function createRedis(url: string, kind: 'producer' | 'worker' | 'probe'): Redis {
  const opts: RedisOptions =
    kind === 'worker'
      ? { maxRetriesPerRequest: null, enableReadyCheck: true }
      : { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2000 }
  // Reconnect attempts at most 1 s apart: a refused connect costs nothing, and the queues resume
  // within about a second of Redis returning.
  const redis = new Redis(url, { ...opts, lazyConnect: false, retryStrategy: (times) => Math.min(times * 200, 1000) })
  // Connection errors are reported through readiness and the relay; an unhandled 'error' would crash.
  redis.on('error', () => {})
  return redis
}
