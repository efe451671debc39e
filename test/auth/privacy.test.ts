import { readFile } from 'node:fs/promises'
import net from 'node:net'
import t from 'tap'
import { LOGGED_QUERY_PARAMETERS, serializeError } from '../../src/logger.js'
import { documentedOperations } from '../helpers/operations.js'
import { eidoFixture } from '../eido/fixtures/index.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

// Logging at trace, every route called, good and bad requests carrying personal data: none of the
// personal values may appear anywhere in the log output.
const world = await createWorld(t, { env: { LOG_LEVEL: 'trace' } })
const { app } = world

const PERSONAL = ['Marta Lindqvist', '651-555-0142', 'Jonas Ekdahl', '1987-04-12', '1200 Vermillion', 'not wanting to live']

t.test('no personal value reaches a log line, whatever the route and whatever the outcome', async (t) => {
  const ev = callEvent({ natureCode: 'EDP' })
  const created = await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })
  t.equal(created.statusCode, 201)
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: { ...ev, call: { ...ev.call, priority: 1 } } })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: { ...ev, call: { ...ev.call, priority: 'Marta Lindqvist', flags: { 'not wanting to live': true } } } })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: JSON.stringify(ev).slice(0, 200), headers: { 'content-type': 'application/json' } })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: JSON.stringify(ev), headers: { 'content-type': 'text/plain' } })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev, headers: { authorization: 'Bearer Marta-Lindqvist' } })
  const id = created.json().decision.assignments[0].id
  for (const action of ['acknowledge', 'accept', 'complete', 'decline']) {
    await app.inject({ method: 'POST', url: `/v1/assignments/${id}/${action}`, payload: { actor: 'desk-1', reason: 'spoke with Marta Lindqvist' } })
  }
  await app.inject({ method: 'GET', url: `/v1/calls/${ev.call.callId}` })
  await app.inject({ method: 'GET', url: `/v1/calls/${ev.call.callId}/eido` })
  await app.inject({ method: 'GET', url: '/v1/assignments?agency=hastings-pd' })
  const eido = eidoFixture('mental-health-crisis')
  await app.inject({ method: 'POST', url: '/v1/eido', payload: eido })
  await app.inject({ method: 'POST', url: '/v1/eido', payload: { ...eido, incidentComponent: { ...eido.incidentComponent, incidentTypeCommonRegistryText: 7 } } })
  await app.inject({ method: 'POST', url: '/v1/keys', payload: { name: 'desk', role: 'console', agencies: null } })
  await app.inject({ method: 'GET', url: '/v1/keys' })
  await app.inject({ method: 'GET', url: '/v1/audit' })
  await app.inject({ method: 'GET', url: '/readyz' })
  // Call ids are logged (a CAD's incident number, not personal data); a query value of no known
  // parameter is not.
  await app.inject({ method: 'GET', url: `/v1/calls/${ev.call.callId}?name=${encodeURIComponent('Jonas Ekdahl')}` })
  // And every other documented route, once, with a body full of personal values.
  for (const { path, method } of await documentedOperations()) {
    const url = path.replace(/\{[^}]+\}/g, ev.call.callId)
    await app.inject({ method, url, ...(method === 'GET' ? {} : { payload: { caller: { name: 'Marta Lindqvist' }, description: 'not wanting to live' } }) })
  }

  const logs = world.logs.join('')
  t.ok(world.logs.length > 50, `a lot was logged (${world.logs.length} lines)`)
  t.ok(logs.includes('"level":10') || logs.includes('"level":20') || logs.includes('"level":30'), 'logging was on')
  // Also as a URL would carry them: percent-encoded.
  const decoded = logs.replace(/(%[0-9a-f]{2})+/gi, (m) => {
    try {
      return decodeURIComponent(m)
    } catch {
      return m
    }
  })
  t.ok(logs.includes(ev.call.callId), 'the call id is logged (the check below sees what the URLs carried)')
  for (const v of [...PERSONAL, ev.call.subject.personId]) t.notOk(decoded.includes(v), `"${v}" never logged`)
  t.notOk(logs.includes(world.adminKey), 'nor an API key')
})

t.test('a request the HTTP parser refuses is logged without its bytes, and the service stays up', async (t) => {
  const base = new URL(await app.listen({ port: 0, host: '127.0.0.1' }))
  const body = JSON.stringify({ caller: { name: 'Marta Lindqvist', phone: '651-555-0142' } })
  const raw = [
    'HELLO\r\n\r\n',
    `POST /v1/call-events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${world.adminKey}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${body}\r\n0\r\n\r\n`,
  ]
  const before = world.logs.length
  for (const request of raw) {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(base.port), base.hostname, () => socket.end(request))
      let text = ''
      socket.on('data', (d) => (text += String(d)))
      socket.on('close', () => resolve(text))
      socket.on('error', reject)
    })
    t.match(answer, /^HTTP\/1\.1 400/, 'the parser refuses it')
  }
  const health = await fetch(new URL('/healthz', base))
  t.equal(health.status, 200, 'the service is still up')
  const lines = world.logs.slice(before).join('')
  t.match(lines, /client error/, 'the refusal is logged (at trace)')
  for (const v of [...PERSONAL, world.adminKey, 'rawPacket']) t.notOk(lines.includes(v), `no "${v === world.adminKey ? 'API key' : v}" in the log`)
})

t.test('request URLs are logged with person ids and unknown query values redacted', async (t) => {
  const secret = 'P-URL-SECRET-5'
  const before = world.logs.length
  for (const url of [
    `//v1/case-links/${secret}`,
    `/v1/case%2Dlinks/${secret}`,
    `/v1/%63ase-links/${secret}`,
    `/v1/case-links%2F${secret}`,
    `/v1/case-links/${secret.replace('-', '%2D')}`,
    `/v1/case-links/2024%2F${secret}`,
    `/v1/case%2Dlinks/${secret}%zz`,
    `/v1/audit?targetType=person&targetId[]=${secret}`,
    `/v1/audit?targetType=person&targetid=${secret}`,
    `/v1/audit?targetType=person;targetId=${secret}`,
    `/v1/audit?${secret}`,
    `/v1/assignments?agency=${secret}%20x`,
  ]) {
    await app.inject({ method: 'GET', url })
  }
  const res = await app.inject({ method: 'GET', url: '/v1/assignments?agency=hastings-pd&queue=cru&limit=5' })
  t.equal(res.statusCode, 200)
  const lines = world.logs.slice(before).join('')
  t.notOk(lines.includes(secret), 'no person id in any request log line')
  t.ok(lines.includes('/v1/assignments?agency=hastings-pd&queue=cru&limit=5'), 'our own parameters are logged as sent')

  // Every query parameter the API documents is logged, except targetId: a parameter added later
  // must be added to the list (or is redacted, which is safe but hides it from operators).
  const doc = JSON.parse(await readFile(new URL('../../openapi/openapi.json', import.meta.url), 'utf8')) as {
    paths: Record<string, Record<string, { parameters?: { in: string; name: string }[] }>>
  }
  const documented = new Set(Object.values(doc.paths).flatMap((m) => Object.values(m).flatMap((op) => (op.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name))))
  t.same([...documented].filter((n) => n !== 'targetId' && !LOGGED_QUERY_PARAMETERS.has(n)), [], 'every documented parameter but targetId is logged')
  t.same([...LOGGED_QUERY_PARAMETERS].filter((n) => !documented.has(n)), [], 'and the list names nothing else')
})

t.test('an error is logged with its code, names and cause, never the values Postgres quotes', async (t) => {
  const pgError = Object.assign(new Error('duplicate key value violates unique constraint "case_links_pkey"'), {
    code: '23505',
    constraint: 'case_links_pkey',
    table: 'case_links',
    detail: 'Key (person_id)=(P-DETAIL-1) already exists.',
    where: 'SQL statement "insert … P-DETAIL-1"',
  })
  const wrapped = new Error('migration 0019 failed', { cause: pgError })
  const out = serializeError(wrapped) as Record<string, unknown>
  t.match(out, { type: 'Error', message: 'migration 0019 failed', cause: { code: '23505', constraint: 'case_links_pkey', table: 'case_links' } })
  t.notOk(JSON.stringify(out).includes('P-DETAIL-1'), 'neither detail nor where')
  const loop = new Error('a') as Error & { cause?: unknown }
  loop.cause = loop
  t.ok(JSON.stringify(serializeError(loop)).length < 10_000, 'a cause that loops ends')
})
