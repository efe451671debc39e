import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { app, db } = world

const post = (body: unknown, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/v1/call-events', payload: body as object, headers })

interface Result {
  eventId: string
  callId: string
  applied: boolean
  decision: {
    id: string
    route: string
    assignments: { id: string; queue: string; role: string; status: string }[]
    ruleSetVersion: number
    ruleId: string
    explanation: string
    fallback: { fromRoute: string; reason: string } | null
    override: { route: string; overriddenRuleId: string } | null
    review: string[]
    followUp: { queue: string; dueWithinHours: number } | null
  }
}

const roles = (r: Result) => r.decision.assignments.map((a) => `${a.queue}:${a.role}`).sort()

t.test('each routing principle, end to end through the API', async (t) => {
  const cases: { name: string; event: ReturnType<typeof callEvent>; route: string; assignments: string[] }[] = [
    { name: '1 weapons + mental health → co-response', event: callEvent({ natureCode: 'EDP', flags: { weapons: true } }), route: 'co_response', assignments: ['cru:support', 'police:primary'] },
    { name: '1 assault without MH → police', event: callEvent({ natureCode: 'ASSAULT', flags: { violence: true } }), route: 'police', assignments: ['police:primary'] },
    { name: '2 overdose → EMS', event: callEvent({ natureCode: 'OD', flags: { medicalEmergency: true } }), route: 'ems', assignments: ['ems:primary'] },
    { name: '1+2 stabbing with injury → police primary, EMS beside', event: callEvent({ natureCode: 'STABBING', flags: { weapons: true, injury: true } }), route: 'police', assignments: ['ems:support', 'police:primary'] },
    { name: '3 EDP → CRU', event: callEvent({ natureCode: 'EDP' }), route: 'cru', assignments: ['cru:primary'] },
    { name: '3 welfare check with MH flag → CRU', event: callEvent({ natureCode: 'WELFARE', flags: { mentalHealth: true } }), route: 'cru', assignments: ['cru:primary'] },
    { name: '4 suicidal with means → co-response', event: callEvent({ natureCode: 'SUICTHRT', flags: { suicidalIdeation: true, meansAtHand: true } }), route: 'co_response', assignments: ['cru:support', 'police:primary'] },
    { name: '5 co-response requested → co-response', event: callEvent({ natureCode: 'WELFARE', flags: { coResponseRequested: true, mentalHealth: true } }), route: 'co_response', assignments: ['cru:support', 'police:primary'] },
    { name: '9 noise → police', event: callEvent({ natureCode: 'NOISE' }), route: 'police', assignments: ['police:primary'] },
    { name: '10 override wins', event: callEvent({ natureCode: 'NOISE', dispatcherOverride: 'cru' }), route: 'cru', assignments: ['cru:primary'] },
  ]
  for (const c of cases) {
    const res = await post(c.event)
    t.equal(res.statusCode, 201, c.name)
    const body = res.json<Result>()
    t.equal(body.decision.route, c.route, c.name)
    t.same(roles(body), c.assignments, c.name)
    t.equal(body.decision.ruleSetVersion, 1)
    t.ok(body.decision.explanation.length > 20, `${c.name}: explained`)
    t.ok(body.decision.assignments.every((a) => a.status === 'queued'))
  }
})

t.test("the OpenAPI document's example event is accepted as it stands", async (t) => {
  type Doc = { paths: Record<string, { post: { requestBody: { content: Record<string, { schema: { $ref: string } }> } } }>; components: { schemas: Record<string, { examples?: unknown[] }> } }
  const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json<Doc>()
  // The schema the operation's request body names, as a generated client follows it.
  const ref = doc.paths['/v1/call-events']!.post.requestBody.content['application/json']!.schema.$ref
  const [example] = doc.components.schemas[ref.replace('#/components/schemas/', '')]?.examples ?? []
  t.ok(example, `${ref} has an example`)
  const res = await post(example)
  t.equal(res.statusCode, 201, res.body)
  t.equal(res.json<Result>().decision.route, 'cru', 'a welfare check with mental-health indicators and nothing of rule 1 goes to CRU')
})

t.test('an unknown nature code goes to police and is marked for review', async (t) => {
  const res = await post(callEvent({ natureCode: 'ZZ-WHAT' }))
  const body = res.json<Result>()
  t.equal(body.decision.route, 'police')
  t.ok(body.decision.review.includes('unknown-nature-code'))
})

t.test('6 repeat caller with an active case manager goes to the case manager', async (t) => {
  const personId = 'P-REPEAT-1'
  await db.insertInto('case_links').values({ person_id: personId, case_manager: 'cm-17', active: true }).execute()
  const first = await post(callEvent({ natureCode: 'EDP', personId }))
  t.equal(first.json<Result>().decision.route, 'cru', 'a first call is not a repeat call')
  const second = (await post(callEvent({ natureCode: 'EDP', personId }))).json<Result>()
  t.equal(second.decision.route, 'case_manager')
  t.same(roles(second), ['case_management:primary', 'cru:support'])
  // Safety facts still win over the case manager (rule 1).
  const third = (await post(callEvent({ natureCode: 'EDP', personId, flags: { threatToOthers: true } }))).json<Result>()
  t.equal(third.decision.route, 'co_response')
})

t.test('idempotency: the same event twice gives 201 then 200 with the same decision, and writes nothing new', async (t) => {
  const ev = callEvent({ natureCode: 'EDP' })
  const a = await post(ev)
  t.equal(a.statusCode, 201)
  const counts = async () => ({
    events: (await db.selectFrom('call_events').select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n,
    decisions: (await db.selectFrom('decisions').select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n,
    assignments: (await db.selectFrom('assignments').select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n,
    outbox: (await db.selectFrom('outbox').select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n,
  })
  const before = await counts()
  // Same content, keys in another order: still the same event.
  const reordered = { call: ev.call, occurredAt: ev.occurredAt, type: ev.type, eventId: ev.eventId }
  const b = await post(reordered)
  t.equal(b.statusCode, 200)
  t.same(b.json<Result>().decision, a.json<Result>().decision)
  t.same(await counts(), before)

  // The same instant written another way is the same event; another instant is not.
  const at = new Date(ev.occurredAt)
  const central = new Date(at.getTime() - 6 * 3600_000).toISOString().replace(/\.(\d{3})Z$/, '.$1000-06:00')
  for (const occurredAt of [ev.occurredAt.replace('.000Z', 'Z'), central, ev.occurredAt.replace('Z', '+00:00')]) {
    t.not(occurredAt, ev.occurredAt)
    const r = await post({ ...ev, occurredAt })
    t.equal(r.statusCode, 200, `occurredAt ${occurredAt} is a repeat`)
    t.same(r.json<Result>().decision, a.json<Result>().decision)
  }
  t.same(await counts(), before)
  const later = await post({ ...ev, occurredAt: new Date(at.getTime() + 1).toISOString() })
  t.equal(later.statusCode, 409, 'a millisecond later is another body')
  const laterStill = await post({ ...ev, occurredAt: central.replace('.000000-06:00', '.000001-06:00') })
  t.equal(laterStill.statusCode, 409, 'so is a microsecond')

  const changed = { ...ev, call: { ...ev.call, priority: 1 } }
  const c = await post(changed)
  t.equal(c.statusCode, 409)
  t.equal(c.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.equal(c.json().code, 'event-conflict')
  t.same(await counts(), before)
})

t.test('a retry across a deploy that added a flag is still the same event; a flag that differs is not', async (t) => {
  const ev = callEvent({ natureCode: 'EDP', flags: { mentalHealth: true } })
  const first = await post(ev)
  t.equal(first.statusCode, 201)
  // As an earlier release, one without `weapons`, left it: the stored body lacks the flag,
  // and its hash is of that body (any other value than this release's hash does as well here).
  const stored = await db.selectFrom('call_events').select(['body', 'body_hash']).where('event_id', '=', ev.eventId).executeTakeFirstOrThrow()
  const { weapons, ...olderFlags } = (stored.body as { call: { flags: Record<string, boolean> } }).call.flags
  t.equal(weapons, false, 'this release stored the flag, false')
  t.equal(olderFlags.mentalHealth, true)
  await db
    .updateTable('call_events')
    .set({ body: JSON.stringify({ ...(stored.body as object), call: { ...(stored.body as { call: object }).call, flags: olderFlags } }), body_hash: 'f'.repeat(64) })
    .where('event_id', '=', ev.eventId)
    .execute()
  const events = async () => Number((await db.selectFrom('call_events').select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
  const before = await events()

  // The retry as sent, and also with its instant written another way: both differences at once.
  for (const occurredAt of [ev.occurredAt, ev.occurredAt.replace('.000Z', '+00:00')]) {
    const again = await post({ ...ev, occurredAt })
    t.equal(again.statusCode, 200, `the CAD's retry (occurredAt ${occurredAt}) is a repeat`)
    t.same(again.json<Result>().decision, first.json<Result>().decision, 'answered with the stored decision')
  }
  for (const flags of [{ mentalHealth: true, weapons: true }, {}]) {
    const other = await post({ ...ev, call: { ...ev.call, flags } })
    t.equal(other.statusCode, 409, `flags ${JSON.stringify(flags)} are another body`)
    t.equal(other.json().code, 'event-conflict')
  }
  t.equal(await events(), before, 'nothing stored by the retries')
})

t.test('concurrent posts of one event store one decision', async (t) => {
  const ev = callEvent({ natureCode: 'EDP' })
  const answers = await Promise.all(Array.from({ length: 8 }, () => post(ev)))
  t.same(answers.map((a) => a.statusCode).sort(), [200, 200, 200, 200, 200, 200, 200, 201])
  const ids = new Set(answers.map((a) => a.json<Result>().decision.id))
  t.equal(ids.size, 1)
  const n = await db.selectFrom('decisions').where('call_id', '=', ev.call.callId).select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()
  t.equal(Number(n.n), 1)
})

t.test('validation errors name each bad field and write nothing', async (t) => {
  const ev = callEvent()
  const bad = { ...ev, type: 'call.exploded', call: { ...ev.call, priority: 9, flags: { weapon: true }, agency: '' } }
  const res = await post(bad)
  t.equal(res.statusCode, 400)
  const problem = res.json()
  t.equal(problem.code, 'validation-failed')
  t.equal(problem.type, 'https://cad-router.dev/problems/validation-failed')
  const names = problem.invalidParams.map((p: { name: string }) => p.name)
  for (const n of ["type", "call.priority", "call.agency", "call.flags.weapon"]) t.ok(names.includes(n), `names ${n} (got ${names.join(', ')})`)
  t.notOk(await db.selectFrom('call_events').where('event_id', '=', ev.eventId).selectAll().executeTakeFirst())

  const unknownTop = await post({ ...callEvent(), extra: 1 })
  t.equal(unknownTop.statusCode, 400)
  t.match(JSON.stringify(unknownTop.json().invalidParams), /extra/)

  // A field left out is named as required, not as one of the wrong type.
  const { priority: _priority, ...withoutPriority } = callEvent().call
  const missing = await post({ ...callEvent(), call: withoutPriority })
  t.equal(missing.statusCode, 400)
  t.same(missing.json().invalidParams, [{ name: 'call.priority', reason: 'required (number)' }])
  // The same for a field that takes one of a list; a wrong value keeps zod's own words.
  const { type: _type, ...withoutType } = callEvent()
  const noType = await post(withoutType)
  t.same(noType.json().invalidParams, [{ name: 'type', reason: 'required (one of "call.created", "call.updated", "call.closed")' }])
  const wrongType = await post({ ...callEvent(), type: 'call.exploded' })
  t.match(wrongType.json().invalidParams, [{ name: 'type', reason: /^Invalid option/ }])
  // In a query too: a parameter given twice is there, not missing.
  const twice = await app.inject({ method: 'GET', url: '/v1/admin/failed-jobs?queue=cru&queue=police' })
  t.equal(twice.statusCode, 400)
  t.notMatch(twice.json().invalidParams[0].reason, /required/)

  const dispositionOnCreate = await post(callEvent({ disposition: 'no_contact' }))
  t.equal(dispositionOnCreate.statusCode, 400)
  t.same(dispositionOnCreate.json().invalidParams.map((p: { name: string }) => p.name), ['call.disposition'])
})

t.test('body limit, wrong content type and broken JSON are problem+json', async (t) => {
  const big = callEvent()
  big.call.description = 'x'.repeat(70 * 1024)
  const tooBig = await post(big)
  t.equal(tooBig.statusCode, 413)
  t.equal(tooBig.json().code, 'payload-too-large')

  const text = await app.inject({ method: 'POST', url: '/v1/call-events', payload: 'hello', headers: { 'content-type': 'text/plain' } })
  t.equal(text.statusCode, 415)
  t.equal(text.json().code, 'unsupported-media-type')

  const broken = await app.inject({ method: 'POST', url: '/v1/call-events', payload: '{"eventId":', headers: { 'content-type': 'application/json' } })
  t.equal(broken.statusCode, 400)
  t.equal(broken.json().code, 'validation-failed')

  const nowhere = await app.inject({ method: 'GET', url: '/v1/nowhere' })
  t.equal(nowhere.statusCode, 404)
  t.equal(nowhere.headers['content-type'], 'application/problem+json; charset=utf-8')
})

t.test('call.updated with a weapon adds police at once and withdraws nothing', async (t) => {
  const created = callEvent({ natureCode: 'EDP', occurredAt: '2026-11-23T15:00:00Z' })
  const first = (await post(created)).json<Result>()
  t.equal(first.decision.route, 'cru')
  const cruId = first.decision.assignments[0]!.id

  const update = callEvent({ type: 'call.updated', callId: created.call.callId, natureCode: 'EDP', flags: { weapons: true }, occurredAt: '2026-11-23T15:05:00Z' })
  const res = await post(update)
  t.equal(res.statusCode, 201)
  const second = res.json<Result>()
  t.equal(second.decision.route, 'co_response')
  t.same(roles(second), ['cru:support', 'police:primary'])
  t.equal(second.decision.assignments.find((a) => a.queue === 'cru')!.id, cruId, 'the CRU assignment is the same one')

  const call = (await app.inject({ method: 'GET', url: `/v1/calls/${created.call.callId}` })).json()
  t.equal(call.assignments.length, 2)
  t.equal(call.decisions.length, 2)
  const cru = call.assignments.find((a: { queue: string }) => a.queue === 'cru')
  t.equal(cru.role, 'support')
  t.match(cru.transitions[1].reason, /primary → support/)

  // A late event, older than the update, is stored but changes nothing.
  const late = callEvent({ type: 'call.updated', callId: created.call.callId, natureCode: 'NOISE', occurredAt: '2026-11-23T15:01:00Z' })
  const lateRes = await post(late)
  t.equal(lateRes.statusCode, 201)
  t.equal(lateRes.json<Result>().applied, false)
  t.equal(lateRes.json<Result>().decision.id, second.decision.id)
})

t.test('call.closed records the disposition, cancels what is open and creates the 72 h follow-up', async (t) => {
  const created = callEvent({ natureCode: 'SUICTHRT', flags: { suicidalIdeation: true }, occurredAt: '2026-11-23T16:00:00Z' })
  const first = (await post(created)).json<Result>()
  t.equal(first.decision.route, 'cru')
  const close = callEvent({ type: 'call.closed', callId: created.call.callId, natureCode: 'SUICTHRT', flags: { suicidalIdeation: true }, disposition: 'resolved_by_phone', occurredAt: '2026-11-23T16:30:00Z' })
  const res = await post(close)
  t.equal(res.statusCode, 201)
  const closed = res.json<Result>()
  t.same(roles(closed), ['follow_up:primary'])
  t.match(closed.decision.explanation, /Follow-up/)

  const call = (await app.inject({ method: 'GET', url: `/v1/calls/${created.call.callId}` })).json()
  t.equal(call.status, 'closed')
  t.equal(call.disposition, 'resolved_by_phone')
  const cru = call.assignments.find((a: { queue: string }) => a.queue === 'cru')
  t.equal(cru.status, 'cancelled')
  const fu = call.assignments.find((a: { queue: string }) => a.queue === 'follow_up')
  t.equal(new Date(fu.dueAt).getTime() - new Date(call.closedAt).getTime(), 72 * 3600_000)

  // After close, a newer update is refused; a repeated close is a no-op.
  const after = await post(callEvent({ type: 'call.updated', callId: created.call.callId, occurredAt: '2026-11-23T17:00:00Z' }))
  t.equal(after.statusCode, 409)
  t.equal(after.json().code, 'call-closed')
  const secondClose = callEvent({ type: 'call.closed', callId: created.call.callId, occurredAt: '2026-11-23T17:00:00Z' })
  const again = await post(secondClose)
  t.equal(again.statusCode, 201)
  t.equal(again.json<Result>().applied, false)

  // Repeats of stored events are answered from the record, even now that the call is closed.
  const closeAgain = await post(close)
  t.equal(closeAgain.statusCode, 200)
  t.same(closeAgain.json<Result>().decision, closed.decision)
  const createdAgain = await post(created)
  t.equal(createdAgain.statusCode, 200)
  t.equal(createdAgain.json<Result>().decision.id, first.decision.id)
  const noOpAgain = await post(secondClose)
  t.equal(noOpAgain.statusCode, 200)
  t.equal(noOpAgain.json<Result>().applied, false)
})

t.test("an update that keeps police in charge keeps the call's route theirs, and a close keeps it too", async (t) => {
  const created = callEvent({ natureCode: 'WELFARE', flags: { mentalHealth: true, weapons: true }, occurredAt: '2026-11-23T18:00:00Z' })
  const first = (await post(created)).json<Result>()
  t.equal(first.decision.route, 'co_response')
  // The weapon is no longer reported: alone, these facts would make it a CRU call.
  const update = callEvent({ type: 'call.updated', callId: created.call.callId, natureCode: 'WELFARE', flags: { mentalHealth: true }, occurredAt: '2026-11-23T18:05:00Z' })
  const updated = (await post(update)).json<Result>()
  t.equal(updated.decision.ruleId, 'mental-health-cru')
  t.same(roles(updated), ['cru:support', 'police:primary'])
  t.equal(updated.decision.route, 'co_response', 'police lead it, with CRU beside')
  t.match(updated.decision.explanation, /Police stays primary.*route is co_response, not cru/)

  const close = callEvent({ type: 'call.closed', callId: created.call.callId, natureCode: 'WELFARE', flags: { mentalHealth: true }, disposition: 'field_response', occurredAt: '2026-11-23T18:30:00Z' })
  const closed = (await post(close)).json<Result>()
  t.equal(closed.decision.route, 'co_response')
  t.equal(closed.decision.ruleId, 'mental-health-cru')
  t.match(closed.decision.explanation, /^Call closed under route co_response, which it keeps; of its closing facts alone rule mental-health-cru would make it cru:/)

  const call = (await app.inject({ method: 'GET', url: `/v1/calls/${created.call.callId}` })).json()
  t.equal(call.route, 'co_response', 'the call is stored, and reported, under the route its responders amount to')
  // Reproducible: the rule set gives the stored rule route from the stored facts; the plan did the rest.
  const stored = await db.selectFrom('decisions').select(['id', 'route', 'facts', 'outcome', 'rule_set_version']).where('call_id', '=', created.call.callId).orderBy('created_at').execute()
  t.same(stored.map((d) => d.route), ['co_response', 'co_response', 'co_response'])
  for (const d of stored) {
    const ruleSet = await world.ruleSets.version(d.rule_set_version)
    const again = ruleSet!.decide(d.facts as Parameters<NonNullable<typeof ruleSet>['decide']>[0])
    t.equal(again.route, (d.outcome as { ruleRoute: string }).ruleRoute, `decision ${d.id}: the rule route is the stored one`)
  }
  t.same(stored.map((d) => (d.outcome as { ruleRoute: string }).ruleRoute), ['co_response', 'cru', 'cru'])
})

t.test('a closed call without mental-health indicator gets no follow-up', async (t) => {
  const created = callEvent({ natureCode: 'NOISE', occurredAt: '2026-11-23T16:00:00Z' })
  await post(created)
  const res = await post(callEvent({ type: 'call.closed', callId: created.call.callId, natureCode: 'NOISE', occurredAt: '2026-11-23T16:20:00Z' }))
  t.same(res.json<Result>().decision.assignments, [])
})

t.test('a stored decision is reproducible from its facts and its rule-set version', async (t) => {
  const ev = callEvent({ natureCode: 'WELFARE', flags: { mentalHealth: true, weapons: true } })
  const posted = (await post(ev)).json<Result>()
  const call = (await app.inject({ method: 'GET', url: `/v1/calls/${ev.call.callId}` })).json()
  const stored = call.decisions[0]
  const ruleSet = await world.ruleSets.version(stored.ruleSetVersion)
  const again = ruleSet!.decide(stored.facts)
  t.equal(again.route, posted.decision.route)
  t.equal(again.ruleId, posted.decision.ruleId)
  t.same(again.trace, stored.trace)
  t.ok(stored.trace.length >= 1)
})

t.test('GET /v1/calls/{id} for an unknown call is a 404 problem', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/v1/calls/nope' })
  t.equal(res.statusCode, 404)
  t.equal(res.json().code, 'not-found')
})

t.test('no personal data reached the logs', async (t) => {
  const all = world.logs.join('\n')
  t.ok(all.length > 0, 'something was logged')
  for (const secret of ['Marta Lindqvist', '651-555-0142', 'Jonas Ekdahl', '1987-04-12', '1200 Vermillion', 'not wanting to live']) {
    t.notOk(all.includes(secret), `"${secret}" is not in the logs`)
  }
})
