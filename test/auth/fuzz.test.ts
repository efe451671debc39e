import fc from 'fast-check'
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { documentedOperations } from '../helpers/operations.js'
import { createWorld, say } from '../helpers/world.js'

// Twenty thousand requests take a minute or two on a busy two-core machine.
t.setTimeout(280_000)
const world = await createWorld(t, { env: { LOG_LEVEL: 'silent' } })
const { app, db } = world

// Every route of the published contract, so routes added later are fuzzed too.
const operations = await documentedOperations()

const valid = callEvent()
const jsonValue = fc.jsonValue({ maxDepth: 4 })
const mutatedEvent = fc.record({ path: fc.constantFrom('eventId', 'type', 'occurredAt', 'call', 'call.callId', 'call.agency', 'call.priority', 'call.flags', 'call.flags.weapons', 'call.location', 'call.subject.birthDate', 'call.description', 'call.dispatcherOverride', 'extra'), value: jsonValue }).map(({ path, value }) => {
  const copy = structuredClone(valid) as Record<string, unknown>
  const keys = path.split('.')
  let at = copy
  for (const k of keys.slice(0, -1)) at = (at[k] ??= {}) as Record<string, unknown>
  at[keys[keys.length - 1]!] = value
  return copy
})
const body = fc.oneof(jsonValue, mutatedEvent, fc.string({ maxLength: 300 }), fc.constant(undefined))
const segment = fc.oneof(fc.uuid(), fc.string({ maxLength: 40 }), fc.constantFrom('..', '%00', 'x'.repeat(300), '1e999', 'null'))
const query = fc.dictionary(fc.constantFrom('queue', 'agency', 'status', 'cursor', 'limit', 'wait', 'from', 'to', 'action', 'before', 'version', 'x'), fc.string({ maxLength: 60 }), { maxKeys: 4 })
const auth = fc.oneof(
  { weight: 6, arbitrary: fc.constant(`Bearer ${world.adminKey}`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 80 }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 60 }).map((s) => `Bearer ${s}`) },
  { weight: 1, arbitrary: fc.constant('') },
)
const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/problem+json', '')

const RUNS = Number(process.env.FUZZ_RUNS ?? 20_000)

t.test(`${RUNS} random and malformed requests against every route: no 5xx, no crash, nothing written by a rejection`, async (t) => {
  const eventsBefore = await db.selectFrom('call_events').select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()
  let accepted = 0
  const statuses = new Map<number, number>()
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...operations), segment, segment, query, body, auth, contentType, async (op, s1, s2, q, b, a, ct) => {
      let n = 0
      const url = op.path.replace(/\{[^}]+\}/g, () => encodeURIComponent(n++ === 0 ? s1 : s2))
      const headers: Record<string, string> = { authorization: a }
      if (ct) headers['content-type'] = ct
      const payload = b === undefined ? undefined : typeof b === 'string' ? b : JSON.stringify(b)
      const res = await app.inject({ method: op.method, url, query: q, headers, ...(payload !== undefined && op.method !== 'GET' ? { payload } : {}) })
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
      if (op.path === '/v1/call-events' && res.statusCode === 201) accepted++
      if (res.statusCode >= 500) throw new Error(`${op.method} ${url} → ${res.statusCode} ${res.body}`)
      if (res.statusCode >= 400 && !String(res.headers['content-type']).startsWith('application/problem+json')) throw new Error(`${op.method} ${url} → ${res.statusCode} without problem+json`)
    }),
    { numRuns: RUNS },
  )
  const eventsAfter = await db.selectFrom('call_events').select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()
  t.equal(Number(eventsAfter.n) - Number(eventsBefore.n), accepted, 'one stored event per 201, none for any rejection')
  say(`answers: ${[...statuses].sort(([a], [b]) => a - b).map(([s, c]) => `${s}×${c}`).join(' ')}`)
  t.ok((statuses.get(400) ?? 0) > 0 && (statuses.get(401) ?? 0) > 0, 'the fuzz reached validation and authentication')
})
