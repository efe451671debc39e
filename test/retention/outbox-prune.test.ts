import { sql } from 'kysely'
import t from 'tap'
import { OUTBOX_KEEP_DAYS, pruneSentOutbox } from '../../src/retention/outbox-prune.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { app, db } = world
const DAY = 86_400_000

/** A call with one police assignment; its outbox row as `row` says, its assignment in `status`. */
async function assignment(row: { createdDaysAgo: number; sentDaysAgo: number | null }, status: 'queued' | 'offered' | 'completed' | 'cancelled' | 'expired') {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'NOISE' }) })
  t.equal(res.statusCode, 201)
  const id: string = res.json().decision.assignments[0].id
  const at = (days: number) => new Date(Date.now() - days * DAY)
  // created_at is never written by the service (the schema says so); the test ages the row by hand.
  await sql`update outbox set created_at = ${at(row.createdDaysAgo)}, sent_at = ${row.sentDaysAgo === null ? null : at(row.sentDaysAgo)} where assignment_id = ${id}`.execute(db)
  await db.updateTable('assignments').set({ status }).where('id', '=', id).execute()
  return id
}

const outboxOf = async (ids: string[]) => (await db.selectFrom('outbox').select('assignment_id').where('assignment_id', 'in', ids).execute()).map((r) => r.assignment_id).sort()

t.test('sent rows of finished assignments older than the cut go; everything anything still reads stays', async (t) => {
  // Written in this order, so the walk meets kept rows before and between the ones it deletes.
  const openQueued = await assignment({ createdDaysAgo: 30, sentDaysAgo: 30 }, 'queued')
  const done = [await assignment({ createdDaysAgo: 20, sentDaysAgo: 20 }, 'completed')]
  const unsent = await assignment({ createdDaysAgo: 20, sentDaysAgo: null }, 'cancelled')
  const offered = await assignment({ createdDaysAgo: 15, sentDaysAgo: 15 }, 'offered')
  done.push(await assignment({ createdDaysAgo: 12, sentDaysAgo: 12 }, 'cancelled'))
  done.push(await assignment({ createdDaysAgo: 10, sentDaysAgo: 10 }, 'expired'))
  done.push(await assignment({ createdDaysAgo: 9, sentDaysAgo: 9 }, 'completed'))
  done.push(await assignment({ createdDaysAgo: 8, sentDaysAgo: 8 }, 'completed'))
  const recent = await assignment({ createdDaysAgo: 1, sentDaysAgo: 1 }, 'completed')
  const kept = [openQueued, unsent, offered, recent]

  const deleted = await pruneSentOutbox(db, new Date(Date.now() - OUTBOX_KEEP_DAYS * DAY), { batchSize: 2 })
  t.equal(deleted, done.length, 'every due row, over several batches')
  t.same(await outboxOf(done), [], 'the sent rows of finished assignments are gone')
  t.same(await outboxOf(kept), [...kept].sort(), 'a queued or offered assignment keeps its row, and so does an unsent or recent one')
  t.equal(await pruneSentOutbox(db, new Date(Date.now() - OUTBOX_KEEP_DAYS * DAY)), 0, 'a second run finds nothing')
  const assignments = await db.selectFrom('assignments').select('id').where('id', 'in', done).execute()
  t.equal(assignments.length, done.length, 'the assignments themselves stay')
})

t.test('the walk stops at the first row written after the cut', async (t) => {
  // A row written after the cut, then one that would be due (rows are numbered as written; one
  // out of that order waits for a later run).
  const newer = await assignment({ createdDaysAgo: 2, sentDaysAgo: 2 }, 'completed')
  const outOfOrder = await assignment({ createdDaysAgo: 11, sentDaysAgo: 11 }, 'completed')
  t.equal(await pruneSentOutbox(db, new Date(Date.now() - OUTBOX_KEEP_DAYS * DAY)), 0)
  t.same(await outboxOf([newer, outOfOrder]), [newer, outOfOrder].sort())
  // Once every row before them is past the cut too, they go with the rest.
  t.equal(await pruneSentOutbox(db, new Date()), 3, 'these two, and the first test\'s recent row')
  t.same(await outboxOf([newer, outOfOrder]), [])
})
