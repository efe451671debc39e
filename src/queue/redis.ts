import { Redis, type RedisOptions } from 'ioredis'

/**
 * Producers fail fast: a command issued while Redis is down rejects at once instead of queueing in
 * memory, and the outbox keeps the row for the next attempt. Workers wait: BullMQ needs
 * maxRetriesPerRequest null for its blocking commands. 'probe' is the API's plain command
 * connection (rate limiter, readiness, feed wake-ups); the queue dashboard's BullMQ handles use a
 * duplicate of it without auto-pipelining (src/queue/admin-routes.ts).
 */
export function createRedis(url: string, kind: 'producer' | 'worker' | 'probe'): Redis {
  const opts: RedisOptions =
    kind === 'worker'
      ? { maxRetriesPerRequest: null, enableReadyCheck: true }
      : { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2000 }
  // The API's connection: concurrent requests' rate-limit scripts (and readiness pings, feed
  // wake-ups) go out as one write per event-loop turn. Never on connections BullMQ uses.
  if (kind === 'probe') opts.enableAutoPipelining = true
  // Reconnect attempts at most 1 s apart: a refused connect costs nothing, and the queues resume
  // within about a second of Redis returning.
  const redis = new Redis(url, { ...opts, lazyConnect: false, retryStrategy: (times) => Math.min(times * 200, 1000) })
  // Connection errors are reported through readiness and the relay; an unhandled 'error' would crash.
  redis.on('error', () => {})
  return redis
}

/**
 * Resolves true once the connection is ready, or false after `ms` (Redis down: callers go on, and
 * their first commands fail as they would later). A producer without an offline queue refuses
 * commands while it is still connecting, so a caller that sends at once waits for this first.
 */
export function whenReady(redis: Redis, ms: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true)
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer)
      redis.off('ready', onReady)
      resolve(ok)
    }
    const onReady = () => done(true)
    const timer = setTimeout(() => done(false), ms)
    redis.on('ready', onReady)
  })
}
