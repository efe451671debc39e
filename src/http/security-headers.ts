import type { FastifyInstance } from 'fastify'
import helmet, { type HelmetOptions } from 'helmet'

/**
 * Helmet's headers, worked out once. @fastify/helmet calls `helmet(options)` on every request,
 * parsing the CSP directives and building a dozen middlewares each time, then sets each header on
 * the raw response; at 200 events/s that was about 4 % of the API's CPU. Our options hold no
 * per-request values (no nonces, no directive functions), so every response gets the same headers:
 * helmet computes them here, once, and each reply takes them as Fastify headers.
 */
export function securityHeaders(options: HelmetOptions): Record<string, string> {
  const csp = options.contentSecurityPolicy
  const directives = typeof csp === 'object' ? Object.values(csp.directives ?? {}) : []
  if (directives.some((v) => typeof v === 'function' || (Array.isArray(v) && v.some((x) => typeof x === 'function')))) {
    throw new Error('security headers: a CSP directive computed per request (a nonce) cannot be worked out once')
  }
  const headers: Record<string, string> = {}
  let failure: unknown
  helmet(options)(
    // Static options read nothing from the request: a request that throws when read proves it.
    new Proxy(
      {},
      {
        get: () => {
          throw new Error('security headers: helmet read the request')
        },
      },
    ) as never,
    {
      setHeader: (name: string, value: string) => void (headers[name.toLowerCase()] = value),
      removeHeader: (name: string) => void delete headers[name.toLowerCase()],
    } as never,
    (err?: unknown) => void (failure = err),
  )
  if (failure) throw failure
  return headers
}

/** Sets helmet's headers (from securityHeaders) on every response that reaches the hooks, as @fastify/helmet did. */
export function registerSecurityHeaders(app: FastifyInstance, headers: Readonly<Record<string, string>>): void {
  app.addHook('onRequest', (_req, reply, done) => {
    reply.headers(headers)
    done()
  })
}
