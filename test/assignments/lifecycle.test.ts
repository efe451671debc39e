import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { app } = world

async function newAssignment(natureCode = 'EDP', agency = 'hastings-pd') {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode, agency }) })
  t.equal(res.statusCode, 201)
  return res.json().decision.assignments[0] as { id: string; queue: string }
}

const move = (id: string, action: string, body?: object) =>
  app.inject({ method: 'POST', url: `/v1/assignments/${id}/${action}`, ...(body ? { payload: body } : {}) })

t.test('acknowledge → accept → complete, each move recorded with who and why', async (t) => {
  const a = await newAssignment('EDP')
  t.equal((await move(a.id, 'acknowledge', { actor: 'cru-desk-2' })).json().status, 'acknowledged')
  t.equal((await move(a.id, 'accept', { actor: 'cru-desk-2', reason: 'calling back' })).json().status, 'accepted')
  const bare = await move(a.id, 'complete', { actor: 'cru-desk-2' })
  t.equal(bare.statusCode, 400, 'no completion without a disposition')
  t.equal(bare.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.same(bare.json().invalidParams, [{ name: 'disposition', reason: 'required with complete' }])
  const done = await move(a.id, 'complete', { actor: 'cru-desk-2', disposition: 'resolved_by_phone' })
  t.equal(done.statusCode, 200, 'still accepted, and completed with one')
  t.equal(done.json().status, 'completed')
  t.equal(done.json().disposition, 'resolved_by_phone')

  const call = (await app.inject({ method: 'GET', url: `/v1/calls/${done.json().callId}` })).json()
  const moves = call.assignments[0].transitions.map((x: { from: string | null; to: string; actor: string }) => `${x.from}>${x.to}@${x.actor}`)
  t.same(moves, ['null>queued@router', 'queued>acknowledged@test-admin/cru-desk-2', 'acknowledged>accepted@test-admin/cru-desk-2', 'accepted>completed@test-admin/cru-desk-2'])
})

t.test('illegal moves are refused with 409 and the current status', async (t) => {
  const a = await newAssignment('NOISE')
  const early = await move(a.id, 'complete', { disposition: 'advised' })
  t.equal(early.statusCode, 409)
  t.equal(early.json().code, 'illegal-transition')
  t.equal(early.json().currentStatus, 'queued')
  t.equal((await move(a.id, 'decline', { reason: 'no unit free' })).statusCode, 200)
  const after = await move(a.id, 'accept')
  t.equal(after.statusCode, 409)
  t.equal(after.json().currentStatus, 'declined')
})

t.test('a disposition only goes with complete, and must be a known one', async (t) => {
  const a = await newAssignment('EDP')
  const res = await move(a.id, 'acknowledge', { disposition: 'no_contact' })
  t.equal(res.statusCode, 400)
  t.equal(res.json().invalidParams[0].name, 'disposition')
  // With complete, on an accepted assignment: refused for its value, not for the action.
  t.equal((await move(a.id, 'accept')).statusCode, 200)
  const unknown = await move(a.id, 'complete', { disposition: 'vanished' })
  t.equal(unknown.statusCode, 400, 'an unknown disposition is refused')
  t.same(unknown.json().invalidParams?.map((p: { name: string }) => p.name), ['disposition'], 'naming the disposition')
  t.equal((await move(a.id, 'complete', { disposition: 'no_contact' })).statusCode, 200, 'a known one completes it')
})

t.test('unknown and malformed assignment ids', async (t) => {
  t.equal((await move('6f1c1d2e-0000-4000-8000-000000000000', 'accept')).statusCode, 404)
  const bad = await move('not-a-uuid', 'accept')
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().invalidParams[0].name, 'params.id')
})

t.test('listing: filters, stable order and cursor pagination without gaps or repeats', async (t) => {
  for (let i = 0; i < 7; i++) await newAssignment('EDP', 'rosemount-pd')
  await newAssignment('NOISE', 'rosemount-pd')
  const seen: string[] = []
  let cursor: string | null = null
  do {
    const url: string = `/v1/assignments?queue=cru&agency=rosemount-pd&limit=3${cursor ? `&cursor=${cursor}` : ''}`
    const res = await app.inject({ method: 'GET', url })
    t.equal(res.statusCode, 200)
    const page = res.json() as { items: { id: string; queue: string; agency: string; createdAt: string }[]; nextCursor: string | null }
    t.ok(page.items.every((a) => a.queue === 'cru' && a.agency === 'rosemount-pd'))
    seen.push(...page.items.map((a) => a.id))
    cursor = page.nextCursor
  } while (cursor)
  t.equal(seen.length, 7)
  t.equal(new Set(seen).size, 7)

  const police = (await app.inject({ method: 'GET', url: '/v1/assignments?queue=police&agency=rosemount-pd&status=queued,offered' })).json()
  t.equal(police.items.length, 1)

  const badStatus = await app.inject({ method: 'GET', url: '/v1/assignments?status=lost' })
  t.equal(badStatus.statusCode, 400)
  t.equal(badStatus.json().invalidParams[0].name, 'querystring.status')
  const badCursor = await app.inject({ method: 'GET', url: '/v1/assignments?cursor=abc' })
  t.equal(badCursor.statusCode, 400)
  const badQueue = await app.inject({ method: 'GET', url: '/v1/assignments?queue=fire' })
  t.equal(badQueue.statusCode, 400)
})
