import { createRequire } from 'node:module'
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { Redis } from 'ioredis'
import type { RedisBreaker } from '../queue/redis-breaker.js'

type Counted = { current: number; ttl: number }
type Done = (error: Error | null, result?: Counted) => void

// The plugin's own two stores (published in the package, not in its types): Redis's Lua counter
// and the in-memory fixed window it uses without Redis, so both count exactly as the plugin does.
const require = createRequire(import.meta.url)
const RedisStore = require('@fastify/rate-limit/store/RedisStore') as new (continueExceeding: boolean, exponentialBackoff: boolean, redis: Redis, key: string) => FastifyRateLimitStore
const LocalStore = require('@fastify/rate-limit/store/LocalStore') as new (continueExceeding: boolean, exponentialBackoff: boolean, cache: number) => FastifyRateLimitStore

/** Keys (API key ids, addresses) a process counts on its own while Redis is away; least recently used go first. */
const LOCAL_KEYS = 10_000

/**
 * The limiter's store: Redis's count, shared by every API instance, while the breaker is closed;
 * this process's own count while it is open, and for a request whose Redis command failed.
 *
 * Why a count of our own rather than skipOnError (which the limiter had alone before): a 911 center
 * must never have a CAD post refused because Redis is sick, and must not let a flood through
 * unlimited either. Each process counts with the same limit per key; a process sees only its share
 * of a key's requests, so it never refuses what the shared count would have let through, while one
 * key or address sending too much is still cut off (at worst at the limit times the number of API
 * instances). Counts are not carried across: the process starts afresh when the breaker opens, and
 * Redis's count, which never saw those requests, takes over again when it closes — both on the
 * side of letting requests through.
 */
export function breakerStore(redis: Redis, breaker: RedisBreaker, nameSpace: string): FastifyRateLimitStoreCtor {
  function make(shared: FastifyRateLimitStore, local: FastifyRateLimitStore): FastifyRateLimitStore {
    return {
      incr(key: string, done: Done, timeWindow: number, max: number): void {
        if (!breaker.closed) return local.incr(key, done, timeWindow, max)
        breaker
          .run(() => new Promise<Counted>((resolve, reject) => shared.incr(key, (err, res) => (err || !res ? reject(err ?? new Error('no count')) : resolve(res)), timeWindow, max)))
          .then(
            (res) => done(null, res),
            () => local.incr(key, done, timeWindow, max),
          )
      },
      child(routeOptions) {
        return make(shared.child(routeOptions), local.child(routeOptions))
      },
    }
  }
  return class {
    constructor(params: { continueExceeding?: boolean; exponentialBackoff?: boolean }) {
      const continueExceeding = params.continueExceeding ?? false
      const exponentialBackoff = params.exponentialBackoff ?? false
      return make(new RedisStore(continueExceeding, exponentialBackoff, redis, nameSpace), new LocalStore(continueExceeding, exponentialBackoff, LOCAL_KEYS))
    }
  } as unknown as FastifyRateLimitStoreCtor
}
