import t from 'tap'
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
  await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent('Jonas Ekdahl')}` })
  // And every other documented route, once, with a body full of personal values.
  for (const { path, method } of await documentedOperations()) {
    const url = path.replace(/\{[^}]+\}/g, ev.call.callId)
    await app.inject({ method, url, ...(method === 'GET' ? {} : { payload: { caller: { name: 'Marta Lindqvist' }, description: 'not wanting to live' } }) })
  }

  const logs = world.logs.join('')
  t.ok(world.logs.length > 50, `a lot was logged (${world.logs.length} lines)`)
  t.ok(logs.includes('"level":10') || logs.includes('"level":20') || logs.includes('"level":30'), 'logging was on')
  for (const v of PERSONAL) t.notOk(logs.includes(v), `"${v}" never logged`)
  t.notOk(logs.includes(world.adminKey), 'nor an API key')
})
