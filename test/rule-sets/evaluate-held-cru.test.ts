/**
 * Evaluate answers as ingest would for a call CRU already holds: its hours and capacity are about
 * new calls (DESIGN rule 7), so an update evaluated after hours keeps CRU, as the update then does.
 * example-city-pd has CRU Mon–Fri 08:00–18:00 America/Chicago in the default rule set.
 */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const IN_HOURS = '2026-11-23T23:55:00Z' // Mon 17:55 in Chicago
const AFTER_HOURS = '2026-11-24T00:05:00Z' // Mon 18:05

let clock = new Date(IN_HOURS)
const world = await createWorld(t, { now: () => clock })
const { app } = world

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })

t.test('an update of a call CRU holds, evaluated after hours, keeps CRU as ingest does', async (t) => {
  clock = new Date(IN_HOURS)
  const created = callEvent({ natureCode: 'EDP', agency: 'example-city-pd', occurredAt: IN_HOURS })
  const first = await app.inject({ method: 'POST', url: '/v1/call-events', payload: created })
  t.equal(first.json().decision.route, 'cru', 'CRU takes the call at 17:55')

  clock = new Date(AFTER_HOURS)
  const update = callEvent({ type: 'call.updated', callId: created.call.callId, natureCode: 'EDP', agency: 'example-city-pd', occurredAt: AFTER_HOURS })
  const evaluated = await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call: update.call, type: 'call.updated' } })
  t.equal(evaluated.statusCode, 200)

  const ingested = await app.inject({ method: 'POST', url: '/v1/call-events', payload: update })
  t.equal(ingested.json().decision.route, 'cru', 'ingest keeps CRU on the call it holds')
  t.equal(evaluated.json().decision.route, ingested.json().decision.route, 'evaluate answers the route ingest gave')
  t.equal(evaluated.json().decision.fallback, null, 'no CRU fallback')
  t.match(evaluated.json().facts.cru, { available: true, unavailableForNewCalls: /outside CRU hours for example-city-pd/ })

  // A key of another agency learns nothing of a call CRU holds: its call id is evaluated as a new
  // call of its own. Asked after example-city's CRU hours about a Hastings call CRU holds (Hastings'
  // CRU never closes), a look into that call would keep CRU; a new call goes to police.
  const hastings = callEvent({ natureCode: 'EDP', agency: 'hastings-pd', occurredAt: AFTER_HOURS })
  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: hastings })).json().decision.route, 'cru', 'CRU holds the Hastings call')
  const exampleCity = await world.key('supervisor', { agencies: ['example-city-pd'] })
  // (Without its subject and address, whose history such a key may not look up: evaluate.test.ts.)
  const { subject: _subject, location: _location, ...anonymous } = hastings.call
  const other = await app.inject({
    method: 'POST',
    url: '/v1/routing/evaluate',
    payload: { call: { ...anonymous, agency: 'example-city-pd' }, type: 'call.updated' },
    headers: bearer(exampleCity),
  })
  t.equal(other.statusCode, 200)
  t.equal(other.json().decision.route, 'police', "another agency's call is not looked into: a new call after hours goes to police")
  t.notOk('unavailableForNewCalls' in other.json().facts.cru, 'and nothing says CRU holds a call')

  // Given CRU facts are a what-if and stay as given.
  const given = await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call: update.call, type: 'call.updated', cru: { available: false, reason: 'what if' } } })
  t.equal(given.json().decision.route, 'police')
})
