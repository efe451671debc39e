/**
 * Posts of one incident that overlap on two API instances: a document's first post still in flight
 * while a later document of the incident, or a retry of the same one, commits on another instance.
 * Each instance here is an app of its own on a pool of its own whose ingest transaction can be held
 * at its `begin`: the post has been received and read what it reads before ingest, but nothing it
 * writes has started. No sleeps: the test waits for the hold to be reached, then releases it.
 */
import t from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import type pg from 'pg'
import { buildApp } from '../../src/app.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { createWorld, quietLog } from '../helpers/world.js'
import { eidoFixture, type FixtureDoc } from './fixtures/index.js'

const world = await createWorld(t)
const { db } = world

interface Held {
  /** Resolves once the post is held at its transaction's `begin`. */
  reached: Promise<void>
  release(): void
}

/** Another API instance on the same database, whose next ingest transaction can be held. */
async function instance(): Promise<{ post(doc: unknown): Promise<LightMyRequestResponse>; holdNextTransaction(): Held }> {
  const pool = createPool({ connectionString: world.databaseUrl, max: 4, statementTimeoutMs: 10_000 })
  let armed: { reached(): void; released: Promise<void> } | undefined
  pool.on('connect', (client: pg.PoolClient) => {
    const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>
    ;(client as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = async (...args: unknown[]) => {
      if (args[0] === 'begin' && armed) {
        const hold = armed
        armed = undefined
        hold.reached()
        await hold.released
      }
      return query(...args)
    }
  })
  const idb = createDb(pool)
  const app = await buildApp({ config: world.config, db: idb, redis: world.redis, ruleSets: world.ruleSets, logger: quietLog })
  t.teardown(async () => {
    await app.close()
    await idb.destroy()
  })
  return {
    post: (doc) => app.inject({ method: 'POST', url: '/v1/eido', payload: JSON.stringify(doc), headers: { 'content-type': 'application/json', authorization: `Bearer ${world.adminKey}` } }),
    holdNextTransaction() {
      let reached!: () => void
      let release!: () => void
      const r = new Promise<void>((res) => (reached = res))
      armed = { reached, released: new Promise<void>((res) => (release = res)) }
      return { reached: r, release }
    },
  }
}

const one = await instance()
const two = await instance()
const postHere = (doc: unknown) => world.app.inject({ method: 'POST', url: '/v1/eido', payload: JSON.stringify(doc), headers: { 'content-type': 'application/json' } })

let n = 0
/** The first document of a fresh incident, and a later one of the same incident. */
function incident(): { first: FixtureDoc; later: FixtureDoc } {
  const first = eidoFixture('mental-health-crisis')
  first.$id = `${first.$id}-race${++n}`
  const later = structuredClone(first)
  later.lastUpdateTimeStamp = '2026-11-23T09:20:00-06:00'
  later.incidentComponent.incidentCommonPriorityNumber = 1
  return { first, later }
}

const typesOf = async (callId: string) =>
  (await db.selectFrom('call_events').select(['type', 'occurred_at']).where('call_id', '=', callId).orderBy('occurred_at').execute()).map((e) => e.type)

t.test('a retry of the first document while its first post is in flight: the same answer to both, never a 409', async (t) => {
  const { first, later } = incident()
  const held = one.holdNextTransaction()
  const firstPost = one.post(first)
  await held.reached
  t.equal((await postHere(later)).statusCode, 201, 'the later document commits first')
  const retry = await postHere(first)
  t.equal(retry.statusCode, 201, 'the retry stores the first document (older than the later one: for the record)')
  held.release()
  const res = await firstPost
  t.equal(res.statusCode, 200, `the first post answers as a repeat (got ${res.statusCode}: ${res.body})`)
  t.equal(res.json().decision?.id, retry.json().decision.id, 'with the same decision')
  t.same(await typesOf(first.$id), ['call.updated', 'call.created'], 'the later document created the call; the first one came after it')

  const again = await postHere(first)
  t.equal(again.statusCode, 200)
  t.equal(again.json().decision.id, retry.json().decision.id)
  // A real conflict still is one.
  const other = structuredClone(first)
  other.incidentComponent.incidentCommonPriorityNumber = 5
  t.equal((await postHere(other)).statusCode, 409)
})

t.test('the first post commits before a retry that was read after a later document: the same answer to both', async (t) => {
  const { first, later } = incident()
  const heldFirst = one.holdNextTransaction()
  const firstPost = one.post(first)
  await heldFirst.reached
  t.equal((await postHere(later)).statusCode, 201)
  const heldRetry = two.holdNextTransaction()
  const retryPost = two.post(first)
  await heldRetry.reached
  heldFirst.release()
  const a = await firstPost
  heldRetry.release()
  const b = await retryPost
  t.same([a.statusCode, b.statusCode], [201, 200], `the first post stores it, the retry is a repeat (got ${b.statusCode}: ${b.body})`)
  t.equal(b.json().decision?.id, a.json().decision.id)
})

t.test('a later document read before the first one committed is an update of the call the first one created', async (t) => {
  const { first, later } = incident()
  const held = one.holdNextTransaction()
  const laterPost = one.post(later)
  await held.reached
  const created = await postHere(first)
  t.equal(created.statusCode, 201)
  held.release()
  const updated = await laterPost
  t.equal(updated.statusCode, 201)
  t.same(await typesOf(first.$id), ['call.created', 'call.updated'])
  const facts = await db.selectFrom('decisions').select(['event_id', 'facts']).where('call_id', '=', first.$id).execute()
  t.same(facts.map((d) => (d.facts as { eventType: string }).eventType).sort(), ['call.created', 'call.updated'], 'and is routed as one')

  const again = await postHere(later)
  t.equal(again.statusCode, 200)
  t.equal(again.json().decision.id, updated.json().decision.id)
})

t.test('concurrent first posts of one document on two instances: one stores it, the other is a repeat', async (t) => {
  const { first } = incident()
  const heldOne = one.holdNextTransaction()
  const heldTwo = two.holdNextTransaction()
  const a = one.post(first)
  const b = two.post(first)
  await Promise.all([heldOne.reached, heldTwo.reached])
  heldOne.release()
  heldTwo.release()
  const answers = await Promise.all([a, b])
  t.same(answers.map((r) => r.statusCode).sort(), [200, 201])
  t.equal(answers[0].json().decision.id, answers[1].json().decision.id)
  t.same(await typesOf(first.$id), ['call.created'])
})
