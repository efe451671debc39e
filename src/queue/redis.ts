import { Redis, type RedisOptions } from 'ioredis'

/** How long a command on the API's connection may wait for Redis's answer. */
export const PROBE_COMMAND_TIMEOUT_MS = 1000

/**
 * Producers fail fast: a command issued while Redis is down rejects at once instead of queueing in
 * memory, and the outbox keeps the row for the next attempt. Workers wait: BullMQ needs
 * maxRetriesPerRequest null for its blocking commands. 'probe' is the API's plain command
 * connection (rate limiter, readiness, feed wake-ups), whose commands time out; a duplicate keeps
 * the time-out unless it says otherwise, as the feed's subscriber and the queue dashboard's BullMQ
 * handles do (src/assignments/feed.ts, src/queue/admin-routes.ts).
 */
export function createRedis(url: string, kind: 'producer' | 'worker' | 'probe', log?: { warn: (obj: object, msg: string) => void; info: (obj: object, msg: string) => void }): Redis {
  const opts: RedisOptions =
    kind === 'worker'
      ? { maxRetriesPerRequest: null, enableReadyCheck: true }
      : { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2000 }
  // The API's connection: concurrent requests' rate-limit scripts (and readiness pings, feed
  // wake-ups) go out as one write per event-loop turn. Never on connections BullMQ uses.
  if (kind === 'probe') opts.enableAutoPipelining = true
  // A Redis that hangs (stopped, or behind a network that drops packets) refuses nothing: without a
  // time-out every request waited on the rate limiter for as long as it hung, CAD posts included,
  // though ingest needs only Postgres. A command that times out fails, and the app's breaker
  // (src/queue/redis-breaker.ts) then keeps the requests after it from asking Redis at all for a while.
  if (kind === 'probe') opts.commandTimeout = PROBE_COMMAND_TIMEOUT_MS
  // Reconnect attempts at most 1 s apart: a refused connect costs nothing, and the queues resume
  // within about a second of Redis returning.
  const redis = new Redis(url, { ...opts, lazyConnect: false, retryStrategy: (times) => Math.min(times * 200, 1000) })
  // An unhandled 'error' would crash. Readiness and the metrics tell how long Redis has been away;
  // the log says once that it went, where to (never the URL: it may hold a password), and when it is back.
  const at = redisAddress(url)
  let down = false
  redis.on('error', (err: Error) => {
    if (down || !log) return
    down = true
    log.warn({ redis: at, connection: kind, err: { message: err.message } }, 'Redis unreachable; reconnecting every second')
  })
  redis.on('ready', () => {
    if (down) log?.info({ redis: at, connection: kind }, 'Redis connection back')
    down = false
  })
  return redis
}

function redisAddress(url: string): string {
  try {
    const u = new URL(url)
    return `${u.hostname}:${u.port || '6379'}`
  } catch {
    return 'the address in REDIS_URL'
  }
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

/**
 * Closes a connection for good: QUIT when Redis answers (replies still due arrive first), at once
 * when it does not (a connection without an offline queue refuses QUIT while Redis is down, and
 * would go on reconnecting until the exit; the shutdown logged it as a failed close).
 */
export async function closeRedis(redis: Redis): Promise<void> {
  await redis.quit().catch(() => redis.disconnect())
}
