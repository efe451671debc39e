import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../http/errors.js'
import type { GuessLimiter } from './guesses.js'
import type { KeyCache } from './key-cache.js'
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

export const authPlugin = fp<{ keys: KeyCache; guesses?: GuessLimiter }>(async (app: FastifyInstance, { keys, guesses }) => {
  app.decorateRequest('principal', null)
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    // Unmatched routes answer 404 through the not-found handler; nothing to protect there.
    if (req.is404) return
    const access = routeAccess(req.routeOptions.url ?? '', req.routeOptions.config)
    if (access === 'public') return
    const header = req.headers.authorization
    const key = typeof header === 'string' ? BEARER.exec(header)?.[1] : undefined
    const blocked = key && guesses && !keys.knows(key) ? guesses.blockedFor(req.ip) : 0
    if (blocked) {
      reply.header('retry-after', String(Math.ceil(blocked / 1000)))
      throw new AppError('rate-limited', 'too many unknown API keys from this address; keys are not looked up again until the Retry-After has passed')
    }
    const principal = key ? await keys.authenticate(key) : undefined
    if (key && !principal) guesses?.refused(req.ip)
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
