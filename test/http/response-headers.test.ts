import http from 'node:http'
import t, { type Test } from 'tap'
import { MOVES } from '../../src/assignments/state-machine.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

// A small limit, so a 429 is a few requests away; each case below uses keys of its own.
const world = await createWorld(t, { env: { RATE_LIMIT_PER_MINUTE: '6' } })

interface Doc {
  paths: Record<string, Record<string, { responses: Record<string, { headers?: Record<string, { $ref?: string }>; content?: Record<string, { schema: { $ref?: string } }> }> }>>
  components: { headers: Record<string, unknown>; schemas: Record<string, { properties?: Record<string, unknown>; required?: string[] }> }
}
await world.app.ready()
const doc = world.app.swagger() as unknown as Doc

/** The headers the document lists for one answer, by their names (a $ref'd one must exist under components). */
function documented(method: string, path: string, status: number): string[] {
  const headers = doc.paths[path]?.[method]?.responses[String(status)]?.headers ?? {}
  for (const h of Object.values(headers)) if (h.$ref) t.ok(doc.components.headers[h.$ref.split('/').pop()!], `${h.$ref} is defined`)
  return Object.keys(headers)
}

/** Every header the document lists for the answer is on the answer. */
function carries(t: Test, method: string, path: string, res: { statusCode: number; headers: Record<string, unknown> }, expected: string[]) {
  const names = documented(method, path, res.statusCode)
  t.same(expected.filter((h) => !names.includes(h)), [], `${method.toUpperCase()} ${path} ${res.statusCode} documents ${expected.join(', ')}`)
  t.same(names.filter((h) => res.headers[h.toLowerCase()] === undefined), [], `${method.toUpperCase()} ${path} ${res.statusCode} carries every header it documents`)
}

t.test('the listing: ETag, Feed-Position and Cache-Control on 200 and 304, with the common ones', async (t) => {
  const headers = { authorization: `Bearer ${await world.key('console', { agencies: ['hdr-list'] })}` }
  const page = await world.app.inject({ method: 'GET', url: '/v1/assignments', headers })
  t.equal(page.statusCode, 200)
  carries(t, 'get', '/v1/assignments', page, ['ETag', 'Feed-Position', 'Cache-Control', 'X-Request-Id', 'X-RateLimit-Remaining'])
  const same = await world.app.inject({ method: 'GET', url: '/v1/assignments', headers: { ...headers, 'if-none-match': String(page.headers.etag) } })
  t.equal(same.statusCode, 304)
  carries(t, 'get', '/v1/assignments', same, ['ETag', 'Feed-Position', 'X-Request-Id'])
  t.notOk(doc.paths['/v1/assignments']!.get!.responses['304']!.content, 'a 304 documents no body')
})

t.test('a refused move: 409 with currentStatus and allowedFrom, as its schema says', async (t) => {
  const created = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'NOISE', agency: 'hdr-move' }) })
  t.equal(created.statusCode, 201)
  carries(t, 'post', '/v1/call-events', created, ['X-Request-Id'])
  const id = (created.json() as { decision: { assignments: { id: string }[] } }).decision.assignments[0]!.id
  const headers = { authorization: `Bearer ${await world.key('console', { agencies: ['hdr-move'] })}` }
  const move = (action: string) => world.app.inject({ method: 'POST', url: `/v1/assignments/${id}/${action}`, headers })
  t.equal((await move('accept')).statusCode, 200)

  const schema = doc.components.schemas.IllegalTransitionProblem!
  t.ok(['currentStatus', 'allowedFrom'].every((f) => schema.required?.includes(f)), 'the schema requires currentStatus and allowedFrom')
  for (const action of ['acknowledge', 'decline'] as const) {
    const refused = await move(action)
    t.equal(refused.statusCode, 409)
    const ref = doc.paths['/v1/assignments/{id}/' + action]!.post!.responses['409']!.content!['application/problem+json']!.schema.$ref
    t.equal(ref, '#/components/schemas/IllegalTransitionProblem', `${action}: the 409 names its schema`)
    const body = refused.json() as Record<string, unknown>
    t.same(Object.keys(body).filter((k) => !(k in schema.properties!)), [], `${action}: every field of the answer is in the schema`)
    t.equal(body.currentStatus, 'accepted')
    t.same(body.allowedFrom, MOVES[action].from)
    carries(t, 'post', `/v1/assignments/{id}/${action}`, refused, ['X-Request-Id'])
  }
})

t.test('401 says how to authenticate; 429 says when to come back', async (t) => {
  const anonymous = await world.app.inject({ method: 'GET', url: '/v1/assignments', headers: { authorization: '' } })
  t.equal(anonymous.statusCode, 401)
  carries(t, 'get', '/v1/assignments', anonymous, ['WWW-Authenticate', 'X-Request-Id'])

  const headers = { authorization: `Bearer ${await world.key('supervisor')}` }
  let limited
  for (let i = 0; i < 10 && limited?.statusCode !== 429; i++) limited = await world.app.inject({ method: 'GET', url: '/v1/reports/queues', headers })
  t.equal(limited?.statusCode, 429)
  carries(t, 'get', '/v1/reports/queues', limited!, ['Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset', 'X-Request-Id'])
})

t.test("the router's own answers (a path parameter too long, a malformed URL) carry the request id too", async (t) => {
  const long = await world.app.inject({ method: 'GET', url: `/v1/calls/${'x'.repeat(300)}` })
  t.equal(long.statusCode, 414)
  carries(t, 'get', '/v1/calls/{callId}', long, ['X-Request-Id'])
  const malformed = await world.app.inject({ method: 'GET', url: '/v1/calls/%E0%A4%A' })
  t.equal(malformed.statusCode, 400)
  carries(t, 'get', '/v1/calls/{callId}', malformed, ['X-Request-Id'])
  t.equal(malformed.headers['x-request-id'], (malformed.json() as { instance: string }).instance.replace('urn:request:', ''), 'the id the problem names')
})

t.test('answers whose type follows Accept say Vary: accept, and document each type', async (t) => {
  const headers = { authorization: `Bearer ${await world.key('supervisor')}` }
  const cases = [
    { path: '/v1/rule-sets/{version}/verification', url: '/v1/rule-sets/1/verification', other: 'text/plain' },
    { path: '/v1/reports/summary', url: '/v1/reports/summary', other: 'text/csv' },
  ]
  for (const { path, url, other } of cases) {
    const content = doc.paths[path]!.get!.responses['200']!.content!
    t.same(Object.keys(content).sort(), ['application/json', other], `${path}: both types documented`)
    for (const accept of ['application/json', other]) {
      const res = await world.app.inject({ method: 'GET', url, headers: { ...headers, accept } })
      t.equal(res.statusCode, 200)
      t.match(res.headers['content-type'], accept, `${url} answers ${accept}`)
      t.equal(res.headers.vary, 'accept')
      carries(t, 'get', path, res, ['Vary', 'X-Request-Id'])
    }
  }
})

t.test('the stream documents the headers that keep proxies from holding it', async (t) => {
  const base = await world.app.listen({ port: 0, host: '127.0.0.1' })
  const authorization = `Bearer ${await world.key('console', { agencies: ['hdr-stream'] })}`
  // The head of the stream, then the connection is dropped (a kept-alive one would hold up close).
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.get(`${base}/v1/assignments/stream`, { headers: { authorization } }, (r) => {
      req.destroy()
      resolve(r)
    })
    req.on('error', reject)
  })
  t.equal(res.statusCode, 200)
  const received = res.headers
  carries(t, 'get', '/v1/assignments/stream', { statusCode: res.statusCode!, headers: received }, ['Cache-Control', 'X-Accel-Buffering', 'X-Request-Id', 'X-RateLimit-Remaining'])
  t.equal(received['x-accel-buffering'], 'no')
})

t.test("a move's body may be left out, as the document says; an event's may not", async (t) => {
  const body = (path: string) => (doc.paths[path]!.post as unknown as { requestBody: { required: boolean } }).requestBody.required
  t.equal(body('/v1/assignments/{id}/acknowledge'), false)
  t.equal(body('/v1/call-events'), true)
  const created = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'NOISE', agency: 'hdr-bodiless' }) })
  const id = (created.json() as { decision: { assignments: { id: string }[] } }).decision.assignments[0]!.id
  const headers = { authorization: `Bearer ${await world.key('console', { agencies: ['hdr-bodiless'] })}` }
  const moved = await world.app.inject({ method: 'POST', url: `/v1/assignments/${id}/acknowledge`, headers })
  t.equal(moved.statusCode, 200, 'no body, no content type: the move is made')
})

t.test('what a key reads is stored by no cache; the listing revalidates; public routes say nothing', async (t) => {
  const ev = callEvent({ natureCode: 'EDP' })
  const created = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: ev, headers: { authorization: `Bearer ${await world.key('admin')}` } })
  t.equal(created.statusCode, 201)
  const reader = `Bearer ${await world.key('admin')}`
  for (const url of [`/v1/calls/${ev.call.callId}`, `/v1/calls/${ev.call.callId}/eido`, '/v1/reports/summary']) {
    const res = await world.app.inject({ url, headers: { authorization: reader } })
    t.equal(res.statusCode, 200, url)
    t.equal(res.headers['cache-control'], 'no-store', `${url}: no-store (it carries personal data or figures)`)
  }
  const refused = await world.app.inject({ url: `/v1/calls/${ev.call.callId}`, headers: { authorization: '' } })
  t.equal(refused.headers['cache-control'], 'no-store', 'a refusal too')
  for (const [method, url] of [['GET', `/v1/call/${ev.call.callId}`], ['DELETE', '/v1/call-events'], ['GET', '/v1/calls/%E0%A4%A']] as const) {
    const res = await world.app.inject({ method, url })
    t.ok(res.statusCode === 404 || res.statusCode === 400, `${method} ${url}: the router's own ${res.statusCode}`)
    t.equal(res.headers['cache-control'], 'no-store', `${method} ${url}: no-store`)
  }
  const listing = await world.app.inject({ url: '/v1/assignments', headers: { authorization: `Bearer ${await world.key('admin')}` } })
  t.equal(listing.headers['cache-control'], 'private, no-cache', 'the listing keeps its own, for its ETag')
  t.equal((await world.app.inject({ url: '/healthz' })).headers['cache-control'], undefined, 'a public route says nothing')
})
