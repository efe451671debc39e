/**
 * An event's body hash (what tells a repeat from a conflicting re-use of its eventId) is taken of
 * canonicalJson's text, and hashes already stored must keep matching: the text must stay what it
 * was when it was JSON.stringify with a replacer that sorted every object's keys.
 */
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import t from 'tap'
import { callEventSchema } from '../../src/calls/schemas.js'
import { canonicalJson, sha256 } from '../../src/lib/canonical-json.js'

/** The implementation the stored hashes were made with. */
const before = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const obj = v as Record<string, unknown>
      return Object.fromEntries(Object.keys(obj).sort().map((k) => [k, obj[k]]))
    }
    return v
  })

// JSON.stringify enumerates keys that read as array indexes first, in numeric order, whatever the
// replacer does: the two differ there, and no schema that reaches the hash accepts such a key.
const INDEX_LIKE = /^(0|[1-9]\d*)$/
const key = fc.string({ unit: 'binary' }).filter((k) => !INDEX_LIKE.test(k))
const { json } = fc.letrec((tie) => ({
  json: fc.oneof(
    { depthSize: 'small' },
    fc.string({ unit: 'binary' }),
    fc.double(),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('json')),
    fc.dictionary(key, tie('json')),
  ),
}))

t.test('the same text as before for any JSON value', async (t) => {
  fc.assert(fc.property(json, (v) => canonicalJson(v) === before(v)), { numRuns: 20_000 })
  t.pass('20,000 values')
})

const STORED = {
  eventId: 'evt-0001',
  type: 'call.closed',
  occurredAt: '2026-11-23T15:00:01.000Z',
  call: {
    callId: 'DC26-0001',
    agency: 'hastings-pd',
    natureCode: 'EDP',
    priority: 2,
    location: { address: '1200 Vermillion St', city: 'Hastings', lat: 44.73, lon: -92.85 },
    caller: { phone: '651-555-0142', name: 'Marta Lindqvist' },
    subject: { personId: 'P-1', name: 'Jonas Ekdahl', birthDate: '1987-04-12' },
    description: 'Émile’s “brother” — pacing 🙂\n\ttab',
    flags: { weapons: false, threatToOthers: true },
    disposition: 'resolved_by_phone',
  },
}

t.test('the same hash as before for an event', async (t) => {
  // Worked out with the implementation above when this test was written.
  t.equal(sha256(canonicalJson(STORED)), '76895782df41481f715cb659735026178026c9b0005e62df4bcfb8bb8e458638')
  const event = callEventSchema.parse(STORED)
  t.equal(canonicalJson(event), before(event), 'as the schema gives it (flags filled in)')
  t.equal(sha256(canonicalJson(event)), createHash('sha256').update(before(event)).digest('hex'))
})

t.test('a call event cannot carry an index-like key', async (t) => {
  const base = { eventId: 'e', type: 'call.created', occurredAt: '2026-11-23T15:00:01.000Z', call: { callId: 'c', agency: 'a', natureCode: 'EDP', priority: 2 } }
  t.notOk(callEventSchema.safeParse({ ...base, 0: 'x' }).success, 'on the event')
  t.notOk(callEventSchema.safeParse({ ...base, call: { ...base.call, 1: true } }).success, 'on the call')
  t.notOk(callEventSchema.safeParse({ ...base, call: { ...base.call, flags: { 2: true } } }).success, 'in the flags')
  t.notOk(callEventSchema.safeParse({ ...base, call: { ...base.call, location: { 3: 'x' } } }).success, 'in the location')
})
