import { performance } from 'node:perf_hooks'
import t from 'tap'
import { escalateAssignment } from '../../src/assignments/escalation.js'
import { loadDefaultRuleSet } from '../../src/routing/index.js'
import { parseRuleSet } from '../../src/routing/rule-set.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { sweep } from '../../src/workers/lifecycle-worker.js'
import { createWorld, eventually, openTransaction } from '../helpers/world.js'
import { helpers, startPipeline, type CallAssignment } from './fixtures/pipeline.js'

// Short deadlines so escalations happen within the test; the sweep is far away, so what escalates
// here is the delayed deadline job (the sweep has its own test below).
const DEADLINE_S = 1
const world = await createWorld(t, { env: { ACK_DEADLINES: `police=${DEADLINE_S},cru=${DEADLINE_S},ems=${DEADLINE_S},case_management=${DEADLINE_S}`, LIFECYCLE_SWEEP_MS: '600000' } })
const { lifecycleQueue } = await startPipeline(t, world)
const { post, move, call, until } = helpers(world)
// The decline tests' world: the shipped deadlines (30 s and more), so that what a test asserts of a
// decline is the decline's doing. With 1 s deadlines, a deadline job (the lifecycle worker, 1 s after
// the worker's offer) races each decline and the reads after it: on a loaded machine a second's
// pause between the post and the decline lets it escalate first (the decline then answers 409, or
// the history has the deadline's steps as well).
const calmWorld = await createWorld(t, { env: { LIFECYCLE_SWEEP_MS: '600000' } })
const { lifecycleQueue: calmLifecycleQueue } = await startPipeline(t, calmWorld)
const calm = helpers(calmWorld)

const byId = (list: CallAssignment[], id: string) => list.find((a) => a.id === id)!
const moves = (a: CallAssignment) => a.transitions.map((x) => `${x.from}>${x.to}`)

t.test('deadline: CRU → co-response → police, each step recorded in the call’s history', async (t) => {
  const created = await post({ natureCode: 'EDP', agency: 'esc-chain' })
  t.equal(created.decision.route, 'cru')
  const cru = created.decision.assignments[0]!
  const offered = await until(cru.id, 'offered')
  const escalated = await until(cru.id, 'escalated')
  t.ok(escalated.updated_at.getTime() >= offered.ack_deadline_at!.getTime(), 'not before its deadline')

  // Step 1: CRU not acknowledged → co-response: police primary and CRU support, both new.
  let history = (await call(created.callId)).assignments
  // Told apart by their lineage: under load the next deadline may already have added more.
  const step1 = history.filter((a) => a.transitions[0]?.reason?.includes(`escalated from cru assignment ${cru.id}`))
  t.same(step1.map((a) => `${a.queue}:${a.role}`).sort(), ['cru:support', 'police:primary'])
  const esc = byId(history, cru.id).transitions.at(-1)!
  t.equal(esc.actor, 'system:ack-deadline')
  t.match(esc.reason, /not acknowledged by .*; escalated to co_response; new: police primary, cru support/)
  for (const a of step1) t.match(a.transitions[0]!.reason, new RegExp(`escalated from cru assignment ${cru.id}`))
  const police = step1.find((a) => a.queue === 'police')!
  const support = step1.find((a) => a.queue === 'cru')!

  // Step 2: the CRU support is not acknowledged either → dropped, police carries the call.
  await until(support.id, 'escalated')
  history = (await call(created.callId)).assignments
  t.match(byId(history, support.id).transitions.at(-1)!.reason, /cru support dropped: the primary carries the call/)
  t.equal(history.filter((a) => a.queue === 'cru').length, 2, 'nothing new for a dropped support')

  // Step 3: police, the end of the chain, not acknowledged → expired and offered again to police.
  await until(police.id, 'expired')
  history = (await call(created.callId)).assignments
  const again = history.find((a) => a.queue === 'police' && a.id !== police.id)!
  t.ok(again, 'police offered again')
  t.match(byId(history, police.id).transitions.at(-1)!.reason, /offered again to police \(no fallback beyond police\)/)
  await until(again.id, 'offered')
  t.equal((await move(again.id, 'acknowledge')).statusCode, 200)

  // Acknowledged in time: its deadline job runs and changes nothing.
  await eventually(async () => (await lifecycleQueue.getJobState(`ack-${again.id}`)) === 'completed')
  t.equal((await lifecycleQueue.getJob(`ack-${again.id}`))?.returnvalue, 'moved-on')
  t.equal((await call(created.callId)).assignments.length, 4)
})

t.test('decline: escalates at once, without waiting for a deadline', async (t) => {
  const created = await calm.post({ natureCode: 'EDP', agency: 'esc-decline' })
  const cru = created.decision.assignments[0]!
  const res = await calm.move(cru.id, 'decline', { actor: 'cru-desk-3', reason: 'no clinician free' })
  t.equal(res.statusCode, 200)
  t.equal(res.json().status, 'declined')
  const history = (await calm.call(created.callId)).assignments
  const last = byId(history, cru.id).transitions.at(-1)!
  t.equal(last.actor, 'test-admin/cru-desk-3')
  t.match(last.reason, /declined: no clinician free; escalated to co_response/)
  t.same(history.filter((a) => a.id !== cru.id).map((a) => `${a.queue}:${a.role}:${moves(a)[0]}`).sort(), ['cru:support:null>queued', 'police:primary:null>queued'])
  const policeHistory = history.find((a) => a.queue === 'police')!.transitions
  t.match(policeHistory[0]!.reason, `escalated from cru assignment ${cru.id} (declined)`)
  t.notMatch(JSON.stringify(policeHistory), /clinician/, "the CRU desk's own words stay on the CRU assignment")
  const again = await calm.move(cru.id, 'decline')
  t.equal(again.statusCode, 409, 'a second decline is refused')
  t.equal(again.json().currentStatus, 'declined')
})

t.test('decline of police: offered again to police; of a case manager: CRU takes over as primary', async (t) => {
  const noise = await calm.post({ natureCode: 'NOISE', agency: 'esc-police' })
  await calm.move(noise.decision.assignments[0]!.id, 'decline', { reason: 'unit busy' })
  const police = (await calm.call(noise.callId)).assignments
  t.same(police.map((a) => `${a.queue}:${a.status}`), ['police:declined', `police:${police[1]!.status}`])
  t.ok(['queued', 'offered'].includes(police[1]!.status))

  const cm = await calm.post({ natureCode: 'EDP', agency: 'esc-cm', dispatcherOverride: 'case_manager' })
  const primary = cm.decision.assignments.find((a) => a.queue === 'case_management')!
  const cruSupport = cm.decision.assignments.find((a) => a.queue === 'cru')!
  await calm.move(primary.id, 'decline')
  const after = (await calm.call(cm.callId)).assignments
  t.equal(after.length, 2, 'the CRU support is reused, not duplicated')
  const cru = byId(after, cruSupport.id)
  t.equal(cru.role, 'primary')
  t.ok(cru.transitions.some((x) => /role support → primary: case_management declined/.test(x.reason ?? '')))
})

t.test("a move refused because the assignment was replaced names what took over, as far as the key may see", async (t) => {
  const noise = await calm.post({ natureCode: 'NOISE', agency: 'esc-replaced' })
  const first = noise.decision.assignments[0]!.id
  t.equal((await calm.move(first, 'decline', { reason: 'unit busy' })).statusCode, 200)
  const second = (await calm.call(noise.callId)).assignments.find((a) => a.id !== first)!.id
  const stale = await calm.move(first, 'acknowledge')
  t.equal(stale.statusCode, 409)
  t.match(stale.json(), { code: 'illegal-transition', currentStatus: 'declined' })
  t.same(stale.json().replacedBy, [second], 'replaced by the one assignment open now')
  // Declined again: the chain is followed to what is open now.
  t.equal((await calm.move(second, 'decline')).statusCode, 200)
  const third = (await calm.call(noise.callId)).assignments.find((a) => a.id !== first && a.id !== second)!.id
  t.same((await calm.move(first, 'acknowledge')).json().replacedBy, [third], 'the open end of the chain, not the declined middle')
  // A CRU decline hands the call to co-response: police primary and a new CRU support.
  const edp = await calm.post({ natureCode: 'EDP', agency: 'esc-replaced' })
  const cruFirst = edp.decision.assignments[0]!.id
  t.equal((await calm.move(cruFirst, 'decline')).statusCode, 200)
  const took = (await calm.call(edp.callId)).assignments.filter((a) => a.id !== cruFirst)
  const cruDesk = `Bearer ${await calmWorld.key('console', { agencies: ['esc-replaced'], queues: ['cru'] })}`
  const seenByCru = await calm.move(cruFirst, 'acknowledge', undefined, { authorization: cruDesk })
  t.equal(seenByCru.statusCode, 409)
  t.same(seenByCru.json().replacedBy, took.filter((a) => a.queue === 'cru').map((a) => a.id), 'a CRU desk is named the CRU support, not the police assignment')
  t.same((await calm.move(cruFirst, 'acknowledge')).json().replacedBy.length, 2, 'a county-wide key both')
  const untouched = await calm.post({ natureCode: 'NOISE', agency: 'esc-replaced' })
  const done = untouched.decision.assignments[0]!.id
  await calm.move(done, 'accept')
  const twice = await calm.move(done, 'accept')
  t.equal(twice.statusCode, 409)
  t.notOk('replacedBy' in twice.json(), 'absent when nothing took over')
})

t.test('a console acknowledging before the offer keeps the call from escalating', async (t) => {
  const created = await post({ natureCode: 'EDP', agency: 'esc-early' })
  const cru = created.decision.assignments[0]!
  await move(cru.id, 'acknowledge')
  await new Promise((r) => setTimeout(r, (DEADLINE_S + 1) * 1000)) // nothing to wait on: the absence of an escalation
  t.equal((await call(created.callId)).assignments.length, 1)
})

// The next two act on an offer before its deadline (the calm world's, not 1 s: a loaded machine's
// pause between the offer and the acknowledgement or the job's removal would let the deadline job
// escalate it first).
t.test('a deadline that finds its offer acknowledged settles without waiting for the call, which ingest may hold', async (t) => {
  const created = await calm.post({ natureCode: 'NOISE', agency: 'esc-settled' })
  const a = created.decision.assignments[0]!
  await calm.until(a.id, 'offered')
  t.equal((await calm.move(a.id, 'acknowledge')).statusCode, 200)
  // A transaction holds the call's row, as an ingest of the call's next event would.
  const holder = await openTransaction(t, calmWorld.pool)
  await holder.query('select 1 from calls where call_id = $1 for update', [created.callId])
  // (The calm world's deadlines: moved on, whenever it is due.)
  const later = new Date(Date.now() + (calmWorld.config.ACK_DEADLINES.police! + 5) * 1000)
  const started = performance.now()
  const r = await escalateAssignment(calmWorld.db, a.id, { kind: 'deadline', actor: 'test' }, { now: later })
  const took = Math.round(performance.now() - started)
  await holder.query('rollback')
  t.equal(r.skipped, 'moved-on')
  t.equal(r.changed, false)
  // Had it waited for the call's row, it would wait until the holder's rollback below (or its
  // statement timeout, 10 s): 5 s tells the two apart with room for a loaded machine.
  t.ok(took < 5000, `answered in ${took} ms while the call's row was held`)
})

t.test('the Postgres sweep escalates what Redis lost', async (t) => {
  const created = await calm.post({ natureCode: 'EDP', agency: 'esc-sweep' })
  const cru = created.decision.assignments[0]!
  await calm.until(cru.id, 'offered')
  // Redis lost the deadline job (a flush, a restore from an old snapshot).
  await (await calmLifecycleQueue.getJob(`ack-${cru.id}`))?.remove()
  const before = await sweep(calmWorld.db, calmLifecycleQueue, calmWorld.config.ACK_DEADLINES, new Date())
  t.equal(before.escalated, 0, 'nothing before the deadline')
  const later = new Date(Date.now() + (calmWorld.config.ACK_DEADLINES.cru! + 5) * 1000)
  const r = await sweep(calmWorld.db, calmLifecycleQueue, calmWorld.config.ACK_DEADLINES, later)
  t.ok(r.escalated >= 1)
  const history = (await calm.call(created.callId)).assignments
  t.equal(byId(history, cru.id).status, 'escalated')
  t.equal(byId(history, cru.id).transitions.at(-1)!.actor, 'system:lifecycle-sweep')
})

t.test('a call whose row is held elsewhere does not stop the sweep escalating the others', async (t) => {
  // Two offers whose deadline jobs Redis lost; the first (the earlier deadline, the first the sweep
  // takes) is on a call a session left open holds.
  const held = await calm.post({ natureCode: 'EDP', agency: 'esc-sweep-held' })
  const heldCru = held.decision.assignments[0]!
  await calm.until(heldCru.id, 'offered')
  const free = await calm.post({ natureCode: 'EDP', agency: 'esc-sweep-free' })
  const freeCru = free.decision.assignments[0]!
  await calm.until(freeCru.id, 'offered')
  for (const id of [heldCru.id, freeCru.id]) await (await calmLifecycleQueue.getJob(`ack-${id}`))?.remove()
  const holder = await openTransaction(t, calmWorld.pool)
  await holder.query('select 1 from calls where call_id = $1 for update', [held.callId])
  const later = new Date(Date.now() + (calmWorld.config.ACK_DEADLINES.cru! + 5) * 1000)
  // With a lock timeout, as the service has (the world's pool has none: it waited out the 10 s
  // statement timeout on the held row).
  const sweepDb = createDb(createPool({ connectionString: calmWorld.databaseUrl, max: 2, statementTimeoutMs: 10_000, lockTimeoutMs: 500 }))
  t.teardown(() => sweepDb.destroy())
  const started = performance.now()
  const r = await sweep(sweepDb, calmLifecycleQueue, calmWorld.config.ACK_DEADLINES, later)
  const took = Math.round(performance.now() - started)
  await holder.query('rollback')
  t.ok(took < 8_000, `the sweep gave up on the held row at its lock timeout, not the statement's (${took} ms)`)
  t.ok(r.escalated >= 1, 'the others escalated')
  t.ok(r.failed >= 1, 'the held one counted as not done')
  t.equal(byId((await calm.call(free.callId)).assignments, freeCru.id).status, 'escalated')
  t.equal(byId((await calm.call(held.callId)).assignments, heldCru.id).status, 'offered', 'left for the next sweep')
  // Once the row is free, the next sweep does it.
  await sweep(calmWorld.db, calmLifecycleQueue, calmWorld.config.ACK_DEADLINES, later)
  t.equal(byId((await calm.call(held.callId)).assignments, heldCru.id).status, 'escalated')
})

t.test('the rule set’s escalation map is checked', async (t) => {
  const doc = structuredClone(loadDefaultRuleSet())
  t.same(doc.escalation, { cru: 'co_response', case_management: 'cru' }, 'the default: CRU → co-response → police')
  t.throws(() => parseRuleSet({ ...doc, escalation: { cru: 'cru' } }), /escalation of cru leads back to cru/)
  t.throws(() => parseRuleSet({ ...doc, escalation: { cru: 'nowhere' } }), /escalation/)
  const { escalation: _e, ...without } = doc
  t.equal(parseRuleSet(without).escalation, undefined, 'optional: older rule sets have none (their decisions escalate by the default chain: the last test)')
})

t.test('an escalation that needs CRU, while CRU is at capacity, goes to police and says why (DESIGN rule 7)', async (t) => {
  const doc = structuredClone(loadDefaultRuleSet()) as Omit<ReturnType<typeof loadDefaultRuleSet>, 'cru'> & { cru: Record<string, unknown> }
  doc.version = 2
  doc.cru = { ...doc.cru, 'esc-full': { schedule: 'always', maxOpenAssignments: 1 } }
  t.equal((await calmWorld.app.inject({ method: 'POST', url: '/v1/rule-sets', payload: doc })).statusCode, 201)
  t.equal((await calmWorld.app.inject({ method: 'POST', url: '/v1/rule-sets/2/activate', payload: { reason: 'a CRU team with one place' } })).statusCode, 200)
  t.teardown(async () => void (await calmWorld.app.inject({ method: 'POST', url: '/v1/rule-sets/1/activate', payload: { reason: 'back' } })))

  // The case manager's call, and another call that then takes the team's only place.
  const cm = await calm.post({ natureCode: 'EDP', agency: 'esc-full', dispatcherOverride: 'case_manager' })
  const primary = cm.decision.assignments.find((a) => a.queue === 'case_management')!
  const cruSupport = cm.decision.assignments.find((a) => a.queue === 'cru')!
  await calm.move(cruSupport.id, 'decline') // the support leaves; the team's place is free again
  const other = await calm.post({ natureCode: 'EDP', agency: 'esc-full' })
  t.equal(other.decision.route, 'cru', 'the other call takes the last place')

  await calm.move(primary.id, 'decline')
  const after = (await calm.call(cm.callId)).assignments
  const fresh = after.filter((a) => a.transitions[0]?.reason?.includes(`escalated from case_management assignment ${primary.id}`))
  t.same(fresh.map((a) => `${a.queue}:${a.role}`), ['police:primary'], 'police, not an unstaffed CRU queue')
  t.match(
    byId(after, primary.id).transitions.at(-1)!.reason,
    /escalated to police \(cru needs CRU, which is not available: CRU at capacity for esc-full \(1 open CRU assignments, limit 1\)\)/,
  )
})

// README: a call handed to another agency keeps the assignments it has with the agency that took
// them; what comes after, escalation's included, is the new agency's.
t.test('after CAD hands a call to another agency, escalation adds assignments for the new agency', async (t) => {
  const created = await calm.post({ natureCode: 'EDP', agency: 'esc-handed-from' })
  const cru = created.decision.assignments[0]!
  await calm.post({ type: 'call.updated', callId: created.callId, natureCode: 'EDP', agency: 'esc-handed-to' })
  t.equal((await calm.move(cru.id, 'decline')).statusCode, 200)
  const after = (await calm.call(created.callId)).assignments
  t.equal(byId(after, cru.id).agency, 'esc-handed-from', 'the declined one stays where it was')
  const fresh = after.filter((a) => a.id !== cru.id)
  t.same(fresh.map((a) => `${a.queue}:${a.role}:${a.agency}`).sort(), ['cru:support:esc-handed-to', 'police:primary:esc-handed-to'])

  // Offered again in the same queue: a new assignment too, so the new agency's.
  const noise = await calm.post({ natureCode: 'NOISE', agency: 'esc-handed-from' })
  const police = noise.decision.assignments[0]!
  await calm.post({ type: 'call.updated', callId: noise.callId, natureCode: 'NOISE', agency: 'esc-handed-to' })
  t.equal((await calm.move(police.id, 'decline')).statusCode, 200)
  const again = (await calm.call(noise.callId)).assignments
  t.same(again.map((a) => `${a.queue}:${a.status === 'declined' ? 'declined' : 'open'}:${a.agency}`), ['police:declined:esc-handed-from', 'police:open:esc-handed-to'])
})

t.test("after a hand-over, whether CRU can take an escalation is the new agency's team's to say (DESIGN rule 7)", async (t) => {
  const doc = structuredClone(loadDefaultRuleSet()) as Omit<ReturnType<typeof loadDefaultRuleSet>, 'cru'> & { cru: Record<string, unknown> }
  doc.version = 3
  doc.cru = { ...doc.cru, 'esc-handed-full': { schedule: 'always', maxOpenAssignments: 0 } }
  t.equal((await calmWorld.app.inject({ method: 'POST', url: '/v1/rule-sets', payload: doc })).statusCode, 201)
  t.equal((await calmWorld.app.inject({ method: 'POST', url: '/v1/rule-sets/3/activate', payload: { reason: 'a CRU team with no place' } })).statusCode, 200)
  t.teardown(async () => void (await calmWorld.app.inject({ method: 'POST', url: '/v1/rule-sets/1/activate', payload: { reason: 'back' } })))

  // Taken by the county line's CRU, then handed to an agency whose team has no place.
  const created = await calm.post({ natureCode: 'EDP', agency: 'esc-handed-open' })
  const cru = created.decision.assignments[0]!
  t.equal(created.decision.route, 'cru')
  await calm.post({ type: 'call.updated', callId: created.callId, natureCode: 'EDP', agency: 'esc-handed-full' })
  t.equal((await calm.move(cru.id, 'decline')).statusCode, 200)
  const after = (await calm.call(created.callId)).assignments
  const fresh = after.filter((a) => a.id !== cru.id)
  t.same(fresh.map((a) => `${a.queue}:${a.role}:${a.agency}`), ['police:primary:esc-handed-full'])
  t.match(byId(after, cru.id).transitions.at(-1)!.reason, /escalated to police \(co_response needs CRU, which is not available: CRU at capacity for esc-handed-full \(0 open CRU assignments, limit 0\)\)/)
})

// DESIGN rule 1: a dispatcher may send a call with weapons to a case manager or CRU (rule 10, a human
// decision), but no automated step that follows may leave it with one of them alone.
t.test('a call with weapons whose case manager declines escalates to police as primary, not to CRU alone (DESIGN rule 1)', async (t) => {
  const cm = await calm.post({ natureCode: 'WEAPON', flags: { weapons: true }, agency: 'esc-armed', dispatcherOverride: 'case_manager' })
  t.same(cm.decision.assignments.map((a) => `${a.queue}:${a.role}`), ['case_management:primary', 'cru:support'], 'the dispatcher’s route')
  const primary = cm.decision.assignments.find((a) => a.queue === 'case_management')!
  const cruSupport = cm.decision.assignments.find((a) => a.queue === 'cru')!
  t.equal((await calm.move(primary.id, 'decline', { reason: 'not my client' })).statusCode, 200)

  const after = (await calm.call(cm.callId)).assignments
  const fresh = after.filter((a) => a.transitions[0]?.reason?.includes(`escalated from case_management assignment ${primary.id}`))
  t.same(fresh.map((a) => `${a.queue}:${a.role}`), ['police:primary'], 'police lead')
  t.equal(byId(after, cruSupport.id).role, 'support', 'CRU stays beside police, not promoted to primary')
  t.notOk(after.some((a) => a.queue === 'cru' && a.role === 'primary'), 'never CRU as primary')
  t.match(byId(after, primary.id).transitions.at(-1)!.reason, /^declined: not my client; escalated to co_response \(not cru, which has no police as primary — DESIGN rule 1: the call has weapons, nature code WEAPON\); new: police primary$/)
})

t.test('the same when the case manager misses the deadline', async (t) => {
  const cm = await post({ natureCode: 'WEAPON', flags: { weapons: true }, agency: 'esc-armed-late', dispatcherOverride: 'case_manager' })
  const primary = cm.decision.assignments.find((a) => a.queue === 'case_management')!
  // The CRU support is taken, so only the case manager's deadline passes.
  t.equal((await move(cm.decision.assignments.find((a) => a.queue === 'cru')!.id, 'acknowledge')).statusCode, 200)
  await until(primary.id, 'escalated')
  const after = (await call(cm.callId)).assignments
  const fresh = after.filter((a) => a.transitions[0]?.reason?.includes(`escalated from case_management assignment ${primary.id}`))
  t.same(fresh.map((a) => `${a.queue}:${a.role}`), ['police:primary'])
  t.match(byId(after, primary.id).transitions.at(-1)!.reason, /not acknowledged by .*; escalated to co_response \(not cru, which has no police as primary — DESIGN rule 1: the call has weapons/)
})

t.test('a nature code that is a safety matter by the rule set alone counts too (a DVNA call)', async (t) => {
  // DVNA is in the default rule set's `safety` definition, with no flag set: the rule the override
  // set aside (safety-police) is principle 1.
  const cm = await calm.post({ natureCode: 'DVNA', agency: 'esc-dvna', dispatcherOverride: 'case_manager' })
  const primary = cm.decision.assignments.find((a) => a.queue === 'case_management')!
  await calm.move(primary.id, 'decline')
  const after = (await calm.call(cm.callId)).assignments
  const fresh = after.filter((a) => a.transitions[0]?.reason?.includes(`escalated from case_management assignment ${primary.id}`))
  t.same(fresh.map((a) => `${a.queue}:${a.role}`), ['police:primary'])
  t.match(byId(after, primary.id).transitions.at(-1)!.reason, /escalated to co_response \(not cru, which has no police as primary — DESIGN rule 1: its rule safety-police is a principle-1 rule\)/)
})

t.test('a call with weapons whose CRU support declines is not left to the case manager alone', async (t) => {
  const cm = await calm.post({ natureCode: 'WEAPON', flags: { weapons: true }, agency: 'esc-armed-support', dispatcherOverride: 'case_manager' })
  const primary = cm.decision.assignments.find((a) => a.queue === 'case_management')!
  const cruSupport = cm.decision.assignments.find((a) => a.queue === 'cru')!
  // The case manager takes the call, so no deadline of theirs adds to its history meanwhile.
  t.equal((await calm.move(primary.id, 'acknowledge')).statusCode, 200)
  await calm.move(cruSupport.id, 'decline')
  const after = (await calm.call(cm.callId)).assignments
  const fresh = after.filter((a) => a.transitions[0]?.reason?.includes(`escalated from cru assignment ${cruSupport.id}`))
  t.same(fresh.map((a) => `${a.queue}:${a.role}`), ['police:primary'], 'police added as primary')
  t.match(fresh[0]!.transitions[0]!.reason, /police added as primary \(DESIGN rule 1: the call has weapons, nature code WEAPON\)/)
  const manager = byId(after, primary.id)
  t.equal(manager.role, 'support', 'the case manager stays, beside police')
  t.match(manager.transitions.at(-1)!.reason, /^role primary → support: cru declined \(DESIGN rule 1: the call has weapons/)
  t.match(byId(after, cruSupport.id).transitions.at(-1)!.reason, /^declined; cru support dropped; police added as primary \(DESIGN rule 1: the call has weapons, nature code WEAPON\); new: police primary; case_management becomes support/)
})

t.test('a declined EMS assignment is offered to EMS again, whatever fallback a rule set stored before names for ems (DESIGN rule 2)', async (t) => {
  // Verification now refuses such a rule set; one stored before may hold it: the call's decision is
  // made to name such a version.
  const doc = structuredClone(loadDefaultRuleSet())
  doc.version = 90
  doc.escalation = { ...doc.escalation, ems: 'police' }
  await calmWorld.db.insertInto('rule_sets').values({ version: 90, name: doc.name, document: JSON.stringify(doc), status: 'retired' }).execute()
  const created = await calm.post({ natureCode: 'OD', agency: 'esc-ems' })
  const ems = created.decision.assignments.find((a) => a.queue === 'ems')!
  t.equal(ems.role, 'primary', 'an overdose: EMS leads')
  const { decision_id } = await calmWorld.db.selectFrom('calls').select('decision_id').where('call_id', '=', created.callId).executeTakeFirstOrThrow()
  await calmWorld.db.updateTable('decisions').set({ rule_set_version: 90 }).where('id', '=', decision_id!).execute()
  t.equal((await calm.move(ems.id, 'decline', { reason: 'no unit' })).statusCode, 200)
  const after = (await calm.call(created.callId)).assignments
  const fresh = after.filter((a) => a.transitions[0]?.reason?.includes(`escalated from ems assignment ${ems.id}`))
  t.same(fresh.map((a) => `${a.queue}:${a.role}`), ['ems:primary'], 'EMS again, not police alone')
})

t.test('a decision made under an older rule set with no escalation map escalates by the default chain: CRU → co-response', async (t) => {
  // Rule sets stored before the map existed have none; their decisions still escalate.
  const { escalation: _e, ...older } = structuredClone(loadDefaultRuleSet())
  older.version = 91
  await calmWorld.db.insertInto('rule_sets').values({ version: 91, name: older.name, document: JSON.stringify(older), status: 'retired' }).execute()
  const created = await calm.post({ natureCode: 'EDP', agency: 'esc-older' })
  const cru = created.decision.assignments[0]!
  t.equal(cru.queue, 'cru')
  const { decision_id } = await calmWorld.db.selectFrom('calls').select('decision_id').where('call_id', '=', created.callId).executeTakeFirstOrThrow()
  await calmWorld.db.updateTable('decisions').set({ rule_set_version: 91 }).where('id', '=', decision_id!).execute()
  t.equal((await calm.move(cru.id, 'decline', { reason: 'no clinician free' })).statusCode, 200)
  const after = (await calm.call(created.callId)).assignments
  const fresh = after.filter((a) => a.transitions[0]?.reason?.includes(`escalated from cru assignment ${cru.id}`))
  t.same(fresh.map((a) => `${a.queue}:${a.role}`).sort(), ['cru:support', 'police:primary'], 'police primary with CRU support, as the default map says')
  t.match(byId(after, cru.id).transitions.at(-1)!.reason, /escalated to co_response/, 'and the decline says so')
})
