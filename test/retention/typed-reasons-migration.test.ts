/**
 * Migration 0016 on transitions written before it: the words consoles typed get their span (so the
 * retention scrub finds them), and the words a CRU decline quoted on police assignments before
 * 13d5b3d are removed at once.
 */
import { Migrator } from 'kysely'
import t from 'tap'
import { migrations } from '../../migrations/index.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { app, db } = world

const WORDS = 'her sister Åsa 🙂 says she is safe'

t.test('rows from before the migration: spans worked out, quoted decline words removed', async (t) => {
  const created = callEvent({ natureCode: 'EDP' })
  const cru = (await app.inject({ method: 'POST', url: '/v1/call-events', payload: created })).json().decision.assignments[0].id as string
  t.equal((await app.inject({ method: 'POST', url: `/v1/assignments/${cru}/decline`, payload: { reason: WORDS } })).statusCode, 200)
  const rows = () =>
    db
      .selectFrom('assignment_transitions as t')
      .innerJoin('assignments as a', 'a.id', 't.assignment_id')
      .select(['t.id', 'a.queue', 't.from_status', 't.to_status', 't.reason', 't.typed_from', 't.typed_length'])
      .where('a.call_id', '=', created.call.callId)
      .orderBy('t.id')
      .execute()
  const police = (await rows()).find((r) => r.queue === 'police' && r.from_status === null)!
  const ackId = (await db.selectFrom('assignments').select('id').where('call_id', '=', created.call.callId).where('queue', '=', 'police').executeTakeFirstOrThrow()).id
  t.equal((await app.inject({ method: 'POST', url: `/v1/assignments/${ackId}/acknowledge`, payload: { reason: `on scene, ${WORDS}` } })).statusCode, 200)
  // As the service wrote them before 13d5b3d: the police assignment quoted the desk's words.
  await db.updateTable('assignment_transitions').set({ reason: `escalated from cru assignment ${cru} (declined: ${WORDS}); police added as primary` }).where('id', '=', police.id).execute()
  // Service rows in the same status: one that must keep its reason, one from before 13d5b3d.
  const roleRow = (reason: string) => ({ assignment_id: ackId, from_status: 'acknowledged', to_status: 'acknowledged', role: 'primary', actor: 'system', reason })
  await db.insertInto('assignment_transitions').values([roleRow('role support → primary: cru declined'), roleRow(`role support → primary: cru declined: ${WORDS} (DESIGN rule 1: weapons)`)]).execute()

  // A decline before migration 0008 stored the console's words alone.
  await db.insertInto('assignment_transitions').values({ assignment_id: cru, from_status: 'offered', to_status: 'declined', role: 'primary', actor: 'desk', reason: WORDS }).execute()

  const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } })
  t.notOk((await migrator.migrateTo('0015_personal_data_indexes')).error, 'down to 0015: the spans are gone with their columns')
  t.equal((await migrateToLatest(db))[0], '0016_typed_reasons')

  const after = await rows()
  const declined = after.find((r) => r.to_status === 'declined' && r.reason !== WORDS)!
  t.match(after.find((r) => r.to_status === 'declined' && r.reason === WORDS), { typed_from: 1, typed_length: [...WORDS].length }, 'a decline from before 0008: all of it')
  t.match(declined, { typed_from: 11 }, 'the decline: from after "declined: "')
  t.equal(declined.typed_length, [...declined.reason!].length - 10, '…to the end, since where the words end cannot be told')
  const ack = after.find((r) => r.to_status === 'acknowledged' && r.from_status !== 'acknowledged')!
  t.match(ack, { reason: `on scene, ${WORDS}`, typed_from: 1, typed_length: [...`on scene, ${WORDS}`].length }, 'a console move: all of its reason')
  const roles = after.filter((r) => r.from_status === 'acknowledged' && r.to_status === 'acknowledged')
  t.same(
    roles.map((r) => [r.reason, r.typed_from]),
    [
      ['role support → primary: cru declined', null],
      ['role support → primary: cru declined (the rest was removed: it quoted the reason given)', null],
    ],
    'a service row keeps its reason and has no span; one that quoted the desk loses the quote',
  )
  t.equal(after.find((r) => r.id === police.id)!.reason, `escalated from cru assignment ${cru} (declined; the rest was removed: it quoted the reason given)`, 'the quoted words are gone from the police assignment')
  const spanned = after.filter((r) => r.typed_from !== null).map((r) => [...r.reason!].slice(r.typed_from! - 1, r.typed_from! - 1 + r.typed_length!).join(''))
  t.ok(spanned.every((s) => s.includes(WORDS)), 'every span covers the words')
})

t.test('a writer that does not know the span columns (a release before 0016 during a deploy) gets them', async (t) => {
  const created = callEvent({ natureCode: 'EDP' })
  const cru = (await app.inject({ method: 'POST', url: '/v1/call-events', payload: created })).json().decision.assignments[0].id as string
  const insert = (from: string | null, to: string, reason: string | null) =>
    world.pool.query<{ typed_from: number | null; typed_length: number | null }>(
      'insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason) values ($1, $2, $3, $4, $5, $6) returning typed_from, typed_length',
      [cru, from, to, 'primary', 'old-release', reason],
    )
  const spanOf = async (from: string | null, to: string, reason: string | null) => (await insert(from, to, reason)).rows[0]
  t.same(await spanOf('offered', 'acknowledged', WORDS), { typed_from: 1, typed_length: [...WORDS].length }, 'a console move')
  t.same(await spanOf('acknowledged', 'declined', `declined: ${WORDS}; escalated to co_response`), { typed_from: 11, typed_length: [...`${WORDS}; escalated to co_response`].length }, 'a decline, to the end')
  for (const [from, to, reason] of [
    ['offered', 'acknowledged', null],
    ['acknowledged', 'acknowledged', 'role support → primary: cru declined'],
    ['acknowledged', 'declined', 'declined; escalated to co_response'],
    [null, 'queued', 'routed by rule edp'],
    ['queued', 'offered', 'offered by worker'],
    ['offered', 'escalated', 'not acknowledged by 2026-12-03T10:00:00.000Z; escalated to co_response'],
  ] as const) {
    t.same(await spanOf(from, to, reason), { typed_from: null, typed_length: null }, `the service's ${from}>${to} has no span`)
  }
  const given = await world.pool.query('insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason, typed_from, typed_length) values ($1, $2, $3, $4, $5, $6, 11, 3) returning typed_from, typed_length', [cru, 'acknowledged', 'declined', 'primary', 'new-release', 'declined: abc; escalated to police'])
  t.same(given.rows[0], { typed_from: 11, typed_length: 3 }, 'a span the writer gives is kept')
})
