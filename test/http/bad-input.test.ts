/**
 * Input Postgres would refuse — NUL, unpaired surrogates, year 0, versions past its integer,
 * events from the far future — is a 400 problem naming the field, never a 500, and stores nothing.
 * Problems name fields as the service does everywhere (`call.description`, `params.callId`,
 * `querystring.from`); a callId as long as POST accepts reads back.
 */
import fc from 'fast-check'
import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { sql } from 'kysely'
import { isStorableText, unstorableTextFields } from '../../src/http/storable.js'
import { eidoFixture } from '../eido/fixtures/index.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'
import { defaultDocument } from '../routing/fixtures/helpers.js'

// The service's clock, a day after the helper's events: the far-future check must use it, not the machine's.
const NOW = new Date('2026-11-24T12:00:00Z')
const world = await createWorld(t, { now: () => NOW })
const { app, db } = world

const HOUR = 3600_000
const INT_MAX = 2_147_483_647
const UNSTORABLE = 'must not contain NUL characters or unpaired surrogates'

type Problem = { code: string; invalidParams?: { name: string; reason: string }[] }

/** A 400 validation problem (problem+json) naming `field`; returns the reason it gives. */
function refused(t: Test, res: LightMyRequestResponse, field: string, label: string): string | undefined {
  t.equal(res.statusCode, 400, `${label}: 400 (got ${res.statusCode} ${res.body.slice(0, 200)})`)
  t.match(String(res.headers['content-type']), /^application\/problem\+json/, `${label}: problem+json`)
  const problem = res.json<Problem>()
  t.equal(problem.code, 'validation-failed', `${label}: validation-failed`)
  const names = (problem.invalidParams ?? []).map((p) => p.name)
  t.ok(names.includes(field), `${label}: names ${field} (got ${names.join(', ')})`)
  return problem.invalidParams?.find((p) => p.name === field)?.reason
}

const count = async (table: 'call_events' | 'calls' | 'decisions' | 'rule_sets' | 'rule_set_activations' | 'shadow_rule_set') =>
  Number((await db.selectFrom(table).select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
const stored = async () => ({
  events: await count('call_events'),
  calls: await count('calls'),
  decisions: await count('decisions'),
  ruleSets: await count('rule_sets'),
  activations: await count('rule_set_activations'),
  shadow: await count('shadow_rule_set'),
})

const postEvent = (ev: unknown) => app.inject({ method: 'POST', url: '/v1/call-events', payload: ev as object })
const postEido = (doc: unknown) => app.inject({ method: 'POST', url: '/v1/eido', payload: doc as object })
let n = 0
const eido = () => {
  const doc = eidoFixture('mental-health-crisis')
  doc.$id = `${doc.$id}-bad-input-${++n}`
  return doc
}

t.test('text Postgres cannot store: the check itself', async (t) => {
  for (const s of ['', 'plain', 'Jonas Ekdahl 😀', '\ud83d\ude00', 'é€\uffff']) t.ok(isStorableText(s), JSON.stringify(s))
  for (const s of ['a\u0000b', '\u0000', 'x\ud800', '\ud800x', 'x\udc00', '\ude00\ud83d', '\ud83d\ud83d\ude00\ude00']) t.notOk(isStorableText(s), JSON.stringify(s))
  // Against the platform's own definition, on strings dense in surrogates and NULs.
  const unit = fc.constantFrom(0x00, 0x41, 0xe9, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xffff)
  fc.assert(
    fc.property(fc.array(unit, { maxLength: 12 }), (units) => {
      const s = String.fromCharCode(...units)
      const wellFormed = (s as unknown as { isWellFormed(): boolean }).isWellFormed()
      return isStorableText(s) === (wellFormed && !s.includes('\u0000'))
    }),
  )
  t.same(unstorableTextFields({ a: 'ok', b: ['ok', 'x\u0000'], c: { 'k\ud800': 1, d: { e: '\udfff' } }, f: '\u0000' }), ['b.1', 'c.k\ud800', 'c.d.e', 'f'], 'fields and field names, by path, in document order')
  t.same(unstorableTextFields({ callId: 'A\u0000B' }, 'params'), ['params.callId'])
  t.same(unstorableTextFields('\u0000'), ['(body)'])
  let deep: unknown = 'x\u0000'
  for (let i = 0; i < 100_000; i++) deep = [deep]
  t.equal(unstorableTextFields(deep).length, 1, 'a deeply nested body does not overflow the stack')
})

t.test('1, 2: NUL and unpaired surrogates in any string are a 400 naming the field, and store nothing', async (t) => {
  const before = await stored()
  const ev = () => callEvent()
  const cases: { label: string; body: unknown; field: string }[] = [
    { label: 'NUL in description', body: (() => { const e = ev(); e.call.description = 'pacing\u0000talking'; return e })(), field: 'call.description' },
    { label: 'NUL in callId', body: (() => { const e = ev(); e.call.callId = 'DC26\u00001'; return e })(), field: 'call.callId' },
    { label: 'NUL in eventId', body: { ...ev(), eventId: 'evt-\u0000' }, field: 'eventId' },
    { label: 'NUL in natureCode', body: (() => { const e = ev(); e.call.natureCode = 'EDP\u0000'; return e })(), field: 'call.natureCode' },
    { label: 'NUL in the subject name', body: (() => { const e = ev(); e.call.subject.name = '\u0000'; return e })(), field: 'call.subject.name' },
    { label: 'lone high surrogate in description', body: (() => { const e = ev(); e.call.description = 'broken \ud800 text'; return e })(), field: 'call.description' },
    { label: 'lone low surrogate in the address', body: (() => { const e = ev(); e.call.location.address = '\udc00 Vermillion St'; return e })(), field: 'call.location.address' },
  ]
  for (const c of cases) {
    const reason = refused(t, await postEvent(c.body), c.field, c.label)
    t.equal(reason, UNSTORABLE, `${c.label}: says why`)
  }

  const doc = eido()
  doc.$id = 'urn:emergency:uid:incidentid:\u0000'
  refused(t, await postEido(doc), '$id', 'EIDO: NUL in $id')

  const ruleSet = defaultDocument() as { version: number; name: string }
  ruleSet.version = 2
  ruleSet.name = 'dakota\u0000county'
  refused(t, await app.inject({ method: 'POST', url: '/v1/rule-sets', payload: ruleSet }), 'name', 'rule set: NUL in name')

  refused(t, await app.inject({ method: 'GET', url: '/v1/calls/A%00B' }), 'params.callId', 'GET a call: NUL in the callId')
  refused(t, await app.inject({ method: 'GET', url: '/v1/calls/A%00B/eido' }), 'params.callId', 'GET a call as EIDO: NUL in the callId')
  refused(t, await app.inject({ method: 'GET', url: '/v1/reports/summary?agency=hastings%00-pd' }), 'querystring.agency', 'report: NUL in a query parameter')
  t.same(await stored(), before, 'nothing stored')
})

t.test('3: instants outside years 1900-9999 (UTC) are a 400 naming the field', async (t) => {
  const before = await stored()
  refused(t, await postEvent(callEvent({ occurredAt: '0000-06-01T00:00:00Z' })), 'occurredAt', 'occurredAt in year 0')
  refused(t, await postEvent(callEvent({ occurredAt: '0001-01-01T00:30:00+01:00' })), 'occurredAt', 'occurredAt in year 1 locally, year 0 in UTC')
  const doc = eido()
  doc.lastUpdateTimeStamp = '0000-12-31T23:00:00Z'
  refused(t, await postEido(doc), 'lastUpdateTimeStamp', 'EIDO lastUpdateTimeStamp in year 0')
  refused(t, await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call: callEvent().call, at: '0000-01-01T00:00:00Z' } }), 'at', 'evaluate at in year 0')
  refused(t, await app.inject({ method: 'GET', url: '/v1/reports/summary?from=0000-01-01T00:00:00Z&to=0000-02-01T00:00:00Z' }), 'querystring.from', 'report range in year 0')
  refused(t, await app.inject({ method: 'GET', url: '/v1/audit?from=0000-01-01T00:00:00Z' }), 'querystring.from', 'audit range in year 0')
  refused(t, await app.inject({ method: 'POST', url: '/v1/keys', payload: { name: 'desk', role: 'console', agencies: null, expiresAt: '0000-01-01T00:00:00Z' } }), 'expiresAt', 'key expiry in year 0')
  // Year 1 is storable, but the history lookup reaches 30 days before `at`, into year 0.
  refused(t, await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call: callEvent().call, at: '0001-01-10T00:00:00Z' } }), 'at', 'evaluate at whose history window starts in year 0')
  t.same(await stored(), before, 'nothing stored')
  // The first and last instants accepted.
  for (const at of ['1900-01-01T00:00:00Z', '9999-12-31T23:59:59.999Z']) {
    t.equal((await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call: callEvent().call, at } })).statusCode, 200, `evaluate at ${at}`)
  }
})

t.test('3b: an instant Postgres cannot read (a long fraction, an offset past 15:59) is a 400 naming the field', async (t) => {
  const before = await stored()
  const long = `2026-11-23T15:04:05.${'1'.repeat(130)}Z`
  const cases: [occurredAt: string, reason: string][] = [
    [long, 'must have at most 9 fractional digits'],
    ['2026-11-23T15:04:05.1234567890Z', 'must have at most 9 fractional digits'],
    ['2026-11-23T15:04:05+20:00', 'must have an offset between -15:59 and +15:59'],
  ]
  for (const [occurredAt, reason] of cases) {
    t.equal(refused(t, await postEvent(callEvent({ occurredAt })), 'occurredAt', `occurredAt ${occurredAt.slice(0, 40)}`), reason)
  }
  const doc = eido()
  doc.lastUpdateTimeStamp = long
  refused(t, await postEido(doc), 'lastUpdateTimeStamp', 'EIDO lastUpdateTimeStamp with a long fraction')
  refused(t, await app.inject({ method: 'GET', url: `/v1/reports/summary?to=${long}` }), 'querystring.to', 'report to with a long fraction')
  t.same(await stored(), before, 'nothing stored')
  // Nanoseconds, and the widest offsets in use, are accepted.
  for (const occurredAt of ['2026-11-23T15:04:05.123456789Z', '2026-11-24T05:04:05+14:00', '2026-11-23T03:04:05-12:00']) {
    t.equal((await postEvent(callEvent({ occurredAt }))).statusCode, 201, `occurredAt ${occurredAt}`)
  }
})

t.test('4: rule-set versions past a Postgres integer are a 400 naming the field', async (t) => {
  const before = await stored()
  const big = INT_MAX + 1
  const range = { from: '2026-11-01T00:00:00Z', to: '2026-11-24T00:00:00Z' }
  refused(t, await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call: callEvent().call, version: big } }), 'version', 'evaluate version')
  refused(t, await app.inject({ method: 'POST', url: `/v1/rule-sets/${big}/replay`, payload: range }), 'params.version', 'replay path version')
  refused(t, await app.inject({ method: 'POST', url: '/v1/rule-sets/1/replay', payload: { ...range, against: big } }), 'against', 'replay against')
  refused(t, await app.inject({ method: 'PUT', url: `/v1/rule-sets/${big}/shadow`, payload: {} }), 'params.version', 'PUT shadow')
  refused(t, await app.inject({ method: 'DELETE', url: `/v1/rule-sets/${big}/shadow` }), 'params.version', 'DELETE shadow')
  refused(t, await app.inject({ method: 'GET', url: `/v1/rule-sets/shadow/report?version=${big}` }), 'querystring.version', 'shadow report version')
  refused(t, await app.inject({ method: 'POST', url: '/v1/rule-sets/rollback', payload: { reason: 'back to the old one', toVersion: big } }), 'toVersion', 'rollback toVersion')
  t.same(await stored(), before, 'nothing stored')
  // The largest integer is a version like any other: not there.
  t.equal((await app.inject({ method: 'PUT', url: `/v1/rule-sets/${INT_MAX}/shadow`, payload: {} })).statusCode, 404)
  t.equal((await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call: callEvent().call, version: INT_MAX } })).statusCode, 404)
})

t.test('5: an event more than a day ahead of the service clock is refused; a fast CAD clock is not', async (t) => {
  const before = await stored()
  refused(t, await postEvent(callEvent({ occurredAt: '9999-12-31T23:59:59Z' })), 'occurredAt', 'occurredAt in year 9999')
  refused(t, await postEvent(callEvent({ occurredAt: new Date(NOW.getTime() + 25 * HOUR).toISOString() })), 'occurredAt', 'occurredAt 25 hours ahead')
  const doc = eido()
  doc.lastUpdateTimeStamp = '9999-12-31T00:00:00Z'
  refused(t, await postEido(doc), 'lastUpdateTimeStamp', 'EIDO lastUpdateTimeStamp in year 9999')
  t.same(await stored(), before, 'nothing stored')

  // 23 hours fast (a CAD sending local time as UTC, say): accepted, and the call still closes.
  const fast = callEvent({ occurredAt: new Date(NOW.getTime() + 23 * HOUR).toISOString() })
  t.equal((await postEvent(fast)).statusCode, 201, '23 hours ahead is accepted')
  const close = callEvent({ callId: fast.call.callId, type: 'call.closed', disposition: 'resolved_by_phone', occurredAt: new Date(NOW.getTime() + 23 * HOUR + 60_000).toISOString() })
  const closed = await postEvent(close)
  t.equal(closed.statusCode, 201)
  t.equal(closed.json<{ applied: boolean }>().applied, true, 'a later event still applies')
})

t.test('6: range and version problems name the parameter as it was given', async (t) => {
  const backwards = 'from=2026-11-20T00:00:00Z&to=2026-11-10T00:00:00Z'
  refused(t, await app.inject({ method: 'GET', url: `/v1/reports/summary?${backwards}` }), 'querystring.from', 'report: from after to')
  refused(t, await app.inject({ method: 'GET', url: '/v1/reports/summary?from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z' }), 'querystring.from', 'report: range too long')
  refused(t, await app.inject({ method: 'GET', url: `/v1/rule-sets/shadow/report?${backwards}` }), 'querystring.from', 'shadow report: from after to')
  // The replay's range is in its body: named without a prefix, as the body's fields are.
  refused(t, await app.inject({ method: 'POST', url: '/v1/rule-sets/1/replay', payload: { from: '2026-11-20T00:00:00Z', to: '2026-11-10T00:00:00Z' } }), 'from', 'replay: from after to')
  const before = await stored()
  refused(t, await app.inject({ method: 'PUT', url: '/v1/rule-sets/1/shadow', payload: {} }), 'params.version', 'shadow the active version')
  t.same(await stored(), before, 'nothing stored')
})

t.test('7: every callId POST accepts reads back, however it is percent-encoded', async (t) => {
  const ids = ['C'.repeat(128), 'DC26/é?%#&+ 😀.'.repeat(9).slice(0, 127) + 'x']
  for (const id of ids) {
    t.equal(id.length, 128)
    const ev = callEvent({ callId: id })
    t.equal((await postEvent(ev)).statusCode, 201, `${JSON.stringify(id.slice(0, 20))}…: stored`)
    const got = await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(id)}` })
    t.equal(got.statusCode, 200, `GET ${JSON.stringify(id.slice(0, 20))}…`)
    t.equal(got.json<{ callId: string }>().callId, id)
    const asEido = await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(id)}/eido` })
    t.equal(asEido.statusCode, 200, `GET …/eido ${JSON.stringify(id.slice(0, 20))}…`)
    t.equal(asEido.json<{ $id: string }>().$id, id)
  }
  refused(t, await postEvent(callEvent({ callId: 'C'.repeat(129) })), 'call.callId', 'a callId of 129')
  // A dot segment: URL parsers drop it (`new URL('/v1/calls/..', base)` is `/v1/`), %2E%2E too.
  for (const id of ['.', '..']) refused(t, await postEvent(callEvent({ callId: id })), 'call.callId', `a callId of ${id}`)
  t.equal((await postEvent(callEvent({ callId: '...' }))).statusCode, 201, 'three dots are a name')
})

t.test('8: a path parameter past 128 characters is a 414 problem naming it, on every route that has one', async (t) => {
  const long = 'C'.repeat(129)
  const cases: [method: 'GET' | 'HEAD' | 'POST' | 'DELETE', url: string, name: string][] = [
    ['GET', `/v1/calls/${long}`, 'params.callId'],
    ['GET', `/v1/calls/${long}/eido`, 'params.callId'],
    ['POST', `/v1/assignments/${long}/acknowledge`, 'params.id'],
    ['POST', `/v1/keys/${long}/revoke`, 'params.id'],
    ['GET', `/v1/rule-sets/${'9'.repeat(129)}`, 'params.version'],
    ['DELETE', `/v1/case-links/${long}?x=1`, 'params.personId'],
    // Percent-encoding does not count: 129 characters once decoded.
    ['HEAD', `/v1/calls/${encodeURIComponent('é'.repeat(129))}`, 'params.callId'],
  ]
  for (const [method, url, name] of cases) {
    const res = await app.inject({ method, url })
    const segment = /[^/?]{129,}/.exec(url)![0]
    const label = `${method} ${url.replace(segment, '…')}`
    t.equal(res.statusCode, 414, `${label}: 414`)
    t.match(String(res.headers['content-type']), /^application\/problem\+json/, `${label}: problem+json`)
    // Answered by the router before any hook: the security headers are set there too.
    t.match(res.headers, { 'content-security-policy': /default-src 'self'/, 'x-content-type-options': 'nosniff' }, `${label}: security headers`)
    if (method === 'HEAD') continue
    const problem = res.json<Problem & { type: string; status: number; title: string; instance: string }>()
    t.match(problem, { type: 'https://cad-router.dev/problems/uri-too-long', status: 414, code: 'uri-too-long', title: String }, `${label}: RFC 9457 fields`)
    t.same(problem.invalidParams, [{ name, reason: 'must be at most 128 characters' }], `${label}: names ${name}`)
    t.notOk(res.body.includes(segment) || res.body.includes(decodeURIComponent(segment)), `${label}: the value is not echoed`)
  }
  const malformed = await app.inject({ url: '/v1/calls/%E0%A4%A' })
  t.match({ status: malformed.statusCode, ...malformed.headers }, { status: 400, 'content-type': /^application\/problem\+json/, 'content-security-policy': /default-src 'self'/ }, 'a malformed URL: a problem, with the security headers')
})

t.test('9: RFC 3339 lets the T and Z be lower case: accepted on every route, stored raised, every other check kept', async (t) => {
  const lower = (iso: string) => iso.replace('T', 't').replace(/Z$/, 'z')
  // An event: accepted, stored and hashed as the upper-case spelling, so the same event sent either way is one event.
  const at = '2026-11-24T08:30:00.000Z'
  const ev = callEvent({ occurredAt: lower(at) })
  const first = await postEvent(ev)
  t.equal(first.statusCode, 201, `occurredAt ${lower(at)}: accepted`)
  const row = await db.selectFrom('call_events').select(['occurred_at', sql<string>`body->>'occurredAt'`.as('given')]).where('event_id', '=', ev.eventId).executeTakeFirstOrThrow()
  t.equal(row.occurred_at.toISOString(), at)
  t.equal(row.given, at, 'stored raised')
  t.equal((await postEvent({ ...ev, occurredAt: at })).statusCode, 200, 'the same event with T and Z is a repeat, not a conflict')
  t.equal((await postEvent(callEvent({ occurredAt: '2026-11-24t09:30:00+01:00' }))).statusCode, 201, 'a lower-case t with an offset')

  // Query and body instants on the other routes.
  const ok = async (res: LightMyRequestResponse, label: string) => t.equal(res.statusCode, 200, `${label}: 200 (got ${res.statusCode} ${res.body.slice(0, 200)})`)
  await ok(await app.inject({ method: 'GET', url: '/v1/reports/summary?from=2026-11-01t00:00:00z&to=2026-11-24t00:00:00Z' }), 'report range')
  await ok(await app.inject({ method: 'GET', url: '/v1/audit?from=2026-11-01t00:00:00z&to=2026-11-25t00:00:00%2B00:00' }), 'audit range')
  await ok(await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow/report?from=2026-11-01t00:00:00z&to=2026-11-24t00:00:00z' }), 'shadow report range')
  await ok(await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call: callEvent().call, at: '2026-11-24t03:00:00z' } }), 'evaluate at')
  await ok(await app.inject({ method: 'POST', url: '/v1/rule-sets/1/replay', payload: { from: '2026-11-01t00:00:00z', to: '2026-11-24t00:00:00z' } }), 'replay range')
  const key = await app.inject({ method: 'POST', url: '/v1/keys', payload: { name: 'lower-case expiry', role: 'console', agencies: null, expiresAt: '2027-01-01t00:00:00z' } })
  t.equal(key.statusCode, 201, 'key expiry')
  t.equal(key.json<{ expiresAt: string }>().expiresAt, '2027-01-01T00:00:00.000Z')
  // The report reads the range as given: its answer names the same instants.
  const report = await app.inject({ method: 'GET', url: '/v1/reports/summary?from=2026-11-01t00:00:00z&to=2026-11-24t00:00:00z' })
  t.same([report.json<{ from: string }>().from, report.json<{ to: string }>().to], ['2026-11-01T00:00:00.000Z', '2026-11-24T00:00:00.000Z'])

  // Every other check still holds in lower case.
  const before = await stored()
  refused(t, await postEvent(callEvent({ occurredAt: '0000-06-01t00:00:00z' })), 'occurredAt', 'lower case in year 0')
  refused(t, await postEvent(callEvent({ occurredAt: lower(new Date(NOW.getTime() + 25 * HOUR).toISOString()) })), 'occurredAt', 'lower case 25 hours ahead')
  refused(t, await postEvent(callEvent({ occurredAt: '2026-11-24x08:30:00z' })), 'occurredAt', 'another separator')
  refused(t, await postEvent(callEvent({ occurredAt: '2026-11-24t08:30:00' })), 'occurredAt', 'no zone')
  refused(t, await postEvent(callEvent({ occurredAt: '2026-02-30t08:30:00z' })), 'occurredAt', 'no such day')
  refused(t, await app.inject({ method: 'GET', url: '/v1/reports/summary?from=1899-12-31t23:59:59z' }), 'querystring.from', 'report from before 1900')
  t.same(await stored(), before, 'nothing stored')
})

t.test('a query parameter a route does not take is refused, not ignored, and nothing happens', async (t) => {
  const ev = callEvent({ natureCode: 'EDP' })
  const posted = await app.inject({ method: 'POST', url: '/v1/call-events?dryRun=true', payload: ev })
  refused(t, posted, 'querystring.dryRun', 'POST /v1/call-events?dryRun=true')
  t.notOk(await db.selectFrom('call_events').select('event_id').where('event_id', '=', ev.eventId).executeTakeFirst(), 'the event is not stored')

  const stored = (await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'EDP' }) })).json()
  const assignment = stored.decision.assignments[0].id
  const declined = await app.inject({ method: 'POST', url: `/v1/assignments/${assignment}/decline?dryRun=true`, payload: {} })
  refused(t, declined, 'querystring.dryRun', 'a move with ?dryRun=true')
  t.not((await db.selectFrom('assignments').select('status').where('id', '=', assignment).executeTakeFirstOrThrow()).status, 'declined', 'the assignment did not move')

  // Reads and other writes alike.
  for (const [method, url] of [
    ['GET', `/v1/calls/${stored.callId}?includePII=false`],
    ['GET', `/v1/calls/${stored.callId}/eido?x=1`],
    ['GET', '/v1/keys?role=console'],
    ['POST', `/v1/keys/00000000-0000-4000-8000-000000000000/revoke?force=1`],
  ] as const) {
    refused(t, await app.inject({ method, url }), `querystring.${url.split('?')[1]!.split('=')[0]}`, `${method} ${url}`)
  }
})
