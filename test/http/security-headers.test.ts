/**
 * The security headers worked out once at start-up are exactly those helmet's middleware sets when
 * it runs on each response (as @fastify/helmet did), on answers, errors and unknown routes alike.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import helmet, { type HelmetOptions } from 'helmet'
import t from 'tap'
import { registerSecurityHeaders, securityHeaders } from '../../src/http/security-headers.js'

const OPTIONS: HelmetOptions = {
  contentSecurityPolicy: { directives: { 'script-src': ["'self'"], 'style-src': ["'self'", "'unsafe-inline'"], 'img-src': ["'self'", 'data:'], 'upgrade-insecure-requests': null } },
}

function withRoutes(setUp: (app: FastifyInstance) => void): FastifyInstance {
  const app = Fastify()
  setUp(app)
  app.get('/ok', async () => ({ ok: true }))
  app.get('/fails', async () => {
    throw Object.assign(new Error('no'), { statusCode: 409 })
  })
  return app
}

const perRequest = withRoutes((app) => {
  const middleware = helmet(OPTIONS)
  app.addHook('onRequest', (req, reply, done) => middleware(req.raw, reply.raw, (err?: unknown) => done(err as Error | undefined)))
})
const once = withRoutes((app) => registerSecurityHeaders(app, securityHeaders(OPTIONS)))
t.teardown(() => Promise.all([perRequest.close(), once.close()]))

const helmetNames = Object.keys(securityHeaders(OPTIONS))

t.test('the same headers as helmet on each request', async (t) => {
  t.ok(helmetNames.includes('content-security-policy') && helmetNames.includes('strict-transport-security'), `helmet's headers (${helmetNames.join(', ')})`)
  for (const url of ['/ok', '/fails', '/no-such-route']) {
    const [a, b] = await Promise.all([perRequest.inject({ url }), once.inject({ url })])
    t.equal(b.statusCode, a.statusCode, `${url}: status`)
    const pick = (h: Record<string, unknown>) => Object.fromEntries(Object.entries(h).filter(([k]) => k !== 'date'))
    t.same(pick(b.headers), pick(a.headers), `${url}: headers`)
    for (const name of helmetNames) t.ok(b.headers[name] !== undefined, `${url}: ${name}`)
  }
})

t.test('options that need the request are refused at start-up, not served wrong', async (t) => {
  t.throws(() => securityHeaders({ contentSecurityPolicy: { directives: { 'script-src': [(req) => String((req as { nonce?: string }).nonce)] } } }))
})
