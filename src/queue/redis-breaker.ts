import type { Redis } from 'ioredis'
import { withTimeout } from '../lib/timeout.js'

export type RedisBreakerState = 'closed' | 'open' | 'half-open'

/** What a request gets instead of waiting on Redis while the breaker is open. */
export class RedisUnavailable extends Error {
  override name = 'RedisUnavailable'
}

export interface RedisBreakerDeps {
  /** The API's connection (createRedis 'probe'). */
  redis: Redis
  /** How long a request's command may wait for an answer; the probe's PING too. */
  timeoutMs: number
  /** How long requests skip Redis after it failed them, before a PING asks whether it is back. */
  openMs: number
  log: { warn: (obj: object, msg: string) => void; info: (obj: object, msg: string) => void }
  /** Told of every change of state (the metrics). */
  onChange?: (state: RedisBreakerState, opened: boolean) => void
}

/**
 * Redis failed to answer (no reply in time, no connection): not an error Redis itself sent back
 * (ReplyError: WRONGTYPE, NOSCRIPT, OOM…), which came quickly and says nothing of whether the next
 * command would wait.
 */
function saysUnavailable(err: unknown): boolean {
  return !(err instanceof Error && err.name === 'ReplyError')
}

/**
 * The circuit breaker in front of Redis on the request path (the rate limiter, readiness, the
 * queue admin). Closed: requests send their commands, each bounded by `timeoutMs`. The first that
 * Redis fails to answer opens it, and so do the others still waiting at that moment, at once: a
 * hung Redis costs the requests of that one time-out, not one time-out each. Open: `run` refuses at
 * once with RedisUnavailable and the caller does without (the limiter counts in this process).
 * After `openMs`, or as soon as the connection reports ready again, one PING of the breaker's own
 * (half-open) asks whether Redis answers; no request ever waits on that probe. A PONG closes it; no
 * answer opens it for another `openMs`. The opening and the closing are logged once each.
 *
 * Only the API's connection goes through it: BullMQ's connections (relay, workers, the queue
 * admin's handles) and the feed's subscriber keep their own waiting, as src/queue/redis.ts sets it.
 */
export function createRedisBreaker(deps: RedisBreakerDeps) {
  const { redis, timeoutMs, openMs, log } = deps
  let state: RedisBreakerState = 'closed'
  let reason = ''
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  // The commands still waiting, each told when the breaker opens so it stops waiting. A set that
  // each leaves as it settles, not a race against one long-lived promise: that promise would keep a
  // reaction for every command sent while the breaker stays closed (days), one per request.
  const waiting = new Set<(err: Error) => void>()

  const change = (next: RedisBreakerState, opened = false) => {
    state = next
    deps.onChange?.(next, opened)
  }

  const schedule = () => {
    clearTimeout(timer)
    if (!stopped) timer = setTimeout(probe, openMs)
  }

  function open(err: unknown): void {
    if (state !== 'closed' || stopped) return
    reason = err instanceof Error ? err.message : 'no answer'
    change('open', true)
    // Never the key or address of the request that met it: personal data stays out of the log.
    log.warn({ err: { message: reason }, retryMs: openMs }, `Redis not answering on the request path; rate limits are counted per process, Redis asked again every ${openMs} ms`)
    const refusal = new RedisUnavailable(`Redis is not answering (${reason})`)
    for (const stop of [...waiting]) stop(refusal)
    schedule()
  }

  function probe(): void {
    if (state !== 'open' || stopped) return
    clearTimeout(timer)
    change('half-open')
    withTimeout(redis.ping(), timeoutMs).then(
      () => {
        if (state !== 'half-open' || stopped) return
        change('closed')
        log.info({}, 'Redis answering again on the request path; rate limits are shared again')
      },
      () => {
        if (state !== 'half-open' || stopped) return
        change('open')
        schedule()
      },
    )
  }

  // A Redis that was down (not hung) is back: ask now rather than at the end of the spell.
  const onReady = () => probe()
  redis.on('ready', onReady)

  return {
    get state(): RedisBreakerState {
      return state
    },
    /** Whether requests should ask Redis at all right now. */
    get closed(): boolean {
      return state === 'closed'
    },
    /**
     * Runs a command for a request: its result, or a rejection within `timeoutMs` at most, at once
     * while the breaker is open (RedisUnavailable).
     */
    run<T>(command: () => Promise<T>): Promise<T> {
      if (state !== 'closed') return Promise.reject(new RedisUnavailable(`Redis is not answering (${reason})`))
      const answer = withTimeout(command(), timeoutMs, `no answer from Redis within ${timeoutMs} ms`)
      let stop!: (err: Error) => void
      const released = new Promise<never>((_, reject) => (stop = reject))
      waiting.add(stop)
      return Promise.race([answer, released])
        .catch((err: unknown) => {
          if (saysUnavailable(err)) open(err)
          throw err
        })
        .finally(() => waiting.delete(stop))
    },
    /** Stops probing (the app closes). */
    stop(): void {
      stopped = true
      clearTimeout(timer)
      redis.off('ready', onReady)
    },
  }
}

export type RedisBreaker = ReturnType<typeof createRedisBreaker>
