import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import pLimit from 'p-limit'
import { AppError } from '../http/errors.js'
import type { KeyCache, UnknownKeyGate } from './key-cache.js'
import type { ApiRole, Principal } from './principal.js'

/** Who may call a route: 'public', or the roles allowed (admin may always). */
export type RouteAccess = 'public' | readonly ApiRole[]

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: RouteAccess
  }
  interface FastifyRequest {
    principal: Principal | null
  }
}

// The scheme name is case-insensitive and may be followed by more than one space (RFC 9110 §11.1,
// §11.4); the key is ours, so its alphabet is narrower than token68.
const BEARER = /^Bearer +([A-Za-z0-9_-]{1,128})$/i

/** The caller, for handlers of routes that require a key (the hook guarantees one). */
export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw new AppError('unauthorized')
  return req.principal
}

/**
 * Who may call a route. The OpenAPI document, Swagger UI and the dashboard's static files (registered
 * by plugins) stay open: they hold no data; the dashboard asks for a supervisor key to read the
 * reports. Every other route needs a key unless it says `config.access: 'public'`; a route that says
 * nothing is admin-only, so a route added without thought is closed, not open.
 */
export function routeAccess(url: string, config: { access?: RouteAccess } | undefined): RouteAccess {
  return url.startsWith('/docs') || url.startsWith('/dashboard') ? 'public' : (config?.access ?? ['admin'])
}

/** Admin keys may call every route. */
export const rolesOf = (access: readonly ApiRole[]): ApiRole[] => [...new Set<ApiRole>([...access, 'admin'])]

/**
 * Keys this process does not know (never found valid, no answer held) cost a Postgres lookup each,
 * on the pool ingest needs: a client presenting one unknown key after another (guessing, or a
 * misconfigured one in a loop) must not be able to fill it. At most UNKNOWN_KEY_LOOKUPS such lookups
 * run at once; the next ones wait, and with UNKNOWN_KEYS_HELD running or waiting the rest answer 429
 * with Retry-After at once. Keys the process knows never wait here: those valid when it started
 * or reconnected its listener, those found valid since, and one being looked up right now. (Not
 * per client address: behind a load balancer every client shares one.)
 */
const UNKNOWN_KEY_LOOKUPS = 2
const UNKNOWN_KEYS_HELD = 100

export const authPlugin = fp<{ keys: KeyCache }>(async (app: FastifyInstance, { keys }) => {
  const unknownLookups = pLimit(UNKNOWN_KEY_LOOKUPS)
  const whenUnknown: UnknownKeyGate = (lookup) => {
    // 429, not 503: the service is fine, the clients are sending keys it does not know (and a
    // flood of them must not write a warning per request, as a 5xx does).
    if (unknownLookups.activeCount + unknownLookups.pendingCount >= UNKNOWN_KEYS_HELD) throw new AppError('rate-limited', 'too many unknown API keys are waiting to be checked; retry')
    return unknownLookups(lookup)
  }
  app.decorateRequest('principal', null)
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    // Unmatched routes answer 404 through the not-found handler; nothing to protect there.
    if (req.is404) return
    const access = routeAccess(req.routeOptions.url ?? '', req.routeOptions.config)
    if (access === 'public') return
    // What a key reads (callers, subjects, addresses; figures) is kept by no browser or proxy cache.
    // A route that revalidates (the listing's ETag) sets its own.
    reply.header('cache-control', 'no-store')
    const header = req.headers.authorization
    const key = typeof header === 'string' ? BEARER.exec(header)?.[1] : undefined
    const principal = key ? await keys.authenticate(key, whenUnknown) : undefined
    if (!principal) {
      reply.header('www-authenticate', 'Bearer realm="cad-router"')
      throw new AppError('unauthorized', key ? 'the API key is unknown, expired or revoked' : 'send an API key as Authorization: Bearer <key>')
    }
    req.principal = principal
    if (principal.role !== 'admin' && !access.includes(principal.role)) {
      throw new AppError('forbidden', `the ${principal.role} role may not do this`)
    }
  })
})
