import { performance } from 'node:perf_hooks'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { sql } from 'kysely'
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { lockGate, stuckStatementEnv } from '../helpers/lock-gate.js'
import { startService } from '../helpers/service-process.js'
import { createWorld, eventually } from '../helpers/world.js'

// SIGTERM to a worker process while the retention scrub works through a backlog (its first run, or
// a shorter RETENTION_DAYS): the scrub is closed first of the worker role's resources, and it ran to
// the end of the backlog before the responder workers were even paused, so the process outlived
// SHUTDOWN_GRACE_MS and was killed (exit 1) with its jobs never handed back. It must stop between
// batches: what is left is scrubbed at the next run.
const GRACE_MS = 4000
const CALLS = 3000 // six batches of 500

const world = await createWorld(t)
const { app, db } = world

t.test('SIGTERM during a long retention scrub: the scrub stops after its batch and the process exits 0 within the grace period', async (t) => {
  const created = callEvent({ natureCode: 'EDP', occurredAt: '2026-01-01T10:00:00Z' })
  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: created })).statusCode, 201)
  // A backlog of old open calls holding personal data, copies of the one stored.
  await sql`insert into calls (call_id, agency, status, nature_code, priority, flags, location, caller, subject, description, route, last_occurred_at, created_at, updated_at)
    select 'OLD-' || g, agency, status, nature_code, priority, flags, location, caller, subject, description, route, last_occurred_at, now() - interval '200 days', now() - interval '200 days'
    from calls, generate_series(1, ${CALLS}) g where call_id = ${created.call.callId}`.execute(db)
  // Each batch's update of the call rows takes a second.
  await sql`create function slow_scrub() returns trigger language plpgsql as $$ begin perform pg_sleep(1); return null; end $$`.execute(db)
  await sql`create trigger slow_scrub after update on calls for each statement execute function slow_scrub()`.execute(db)

  const worker = await startService(t, {
    name: 'worker',
    roles: 'worker',
    env: {
      DATABASE_URL: world.databaseUrl,
      REDIS_URL: world.config.REDIS_URL,
      BULLMQ_PREFIX: world.prefix,
      SHUTDOWN_GRACE_MS: String(GRACE_MS),
      DATABASE_STATEMENT_TIMEOUT_MS: '30000',
    },
  })
  const scrubbed = async () => Number((await sql<{ n: number }>`select count(*)::int as n from calls where call_id like 'OLD-%' and caller is null`.execute(db)).rows[0]!.n)
  // The first batch has committed: the scrub is under way, with most of the backlog ahead of it.
  await eventually(async () => (await scrubbed()) > 0, 20_000)
  const signalled = performance.now()
  const exit = await worker.kill('SIGTERM')
  const ms = Math.round(performance.now() - signalled)
  t.same(exit, { code: 0, signal: null }, `exit 0 (after ${ms} ms)\n${worker.output()}`)
  t.ok(ms < GRACE_MS, `within SHUTDOWN_GRACE_MS (${ms} ms)`)
  const done = await scrubbed()
  t.ok(done < CALLS, `the scrub stopped part way (${done} of ${CALLS}); the next run does the rest`)
})

// A batch statement stuck in Postgres (here on a lock the test holds; a slow disk, a lock held by a
// session left open), with a statement timeout longer than the grace period: the scrub never reaches
// the end of its batch, so stopping after it is not enough. Its run gets the workers' drain deadline
// like any job: handed back to the maintenance queue (the next run redoes it), and the Postgres close
// ends the stuck session, so no abandoned batch commits later. Without that, the worker role's drain
// waited for the run, the Postgres close never started and the grace timer killed the process (exit 1).
t.test('SIGTERM with a scrub batch stuck in Postgres: exit 0 within the grace period, the run handed back, no session left', async (t) => {
  const DRAIN_MS = 1500
  const HOLD = 7_001_800 // the advisory lock the test holds
  const OLD = 5
  const own = await createWorld(t)
  const created = callEvent({ natureCode: 'EDP', occurredAt: '2026-01-01T10:00:00Z' })
  t.equal((await own.app.inject({ method: 'POST', url: '/v1/call-events', payload: created })).statusCode, 201)
  await sql`insert into calls (call_id, agency, status, nature_code, priority, flags, location, caller, subject, description, route, last_occurred_at, created_at, updated_at)
    select 'OLD-' || g, agency, status, nature_code, priority, flags, location, caller, subject, description, route, last_occurred_at, now() - interval '200 days', now() - interval '200 days'
    from calls, generate_series(1, ${OLD}) g where call_id = ${created.call.callId}`.execute(own.db)
  // Every update of the call rows (the scrub's batches) waits while the gate is shut.
  const gate = await lockGate(t, own.db, { name: own.name, url: own.databaseUrl }, HOLD)
  await sql
    .raw(
      `create function hold_scrub() returns trigger language plpgsql as $$ begin ${gate.wait}; return null; end $$;
       create trigger hold_scrub before update on calls for each statement execute function hold_scrub();`,
    )
    .execute(own.db)
  await gate.shut()

  const inspect = new Redis(own.config.REDIS_URL, { maxRetriesPerRequest: null, lazyConnect: true })
  inspect.on('error', () => {})
  const maintenance = new Queue('maintenance', { connection: inspect, prefix: own.prefix })
  t.teardown(async () => {
    await maintenance.close().catch(() => {})
    inspect.disconnect()
  })
  const scrubbed = async () => Number((await sql<{ n: number }>`select count(*)::int as n from calls where call_id like 'OLD-%' and caller is null`.execute(own.db)).rows[0]!.n)

  const env = {
    DATABASE_URL: own.databaseUrl,
    REDIS_URL: own.config.REDIS_URL,
    BULLMQ_PREFIX: own.prefix,
    ...stuckStatementEnv({ graceMs: GRACE_MS, drainMs: DRAIN_MS, statementTimeoutMs: 60_000 }),
  }
  const workerA = await startService(t, { name: 'worker A', roles: 'worker', env })
  // The first run of the schedule is active, its first batch waiting on the lock.
  const run = await eventually(async () => {
    const active = (await maintenance.getActive()).map((j) => j.id)
    return active.length === 1 && (await gate.waiting()).length >= 1 && active[0]
  }, 20_000)
  const stuck = await gate.waiting()

  const signalled = performance.now()
  const exit = await workerA.kill('SIGTERM')
  const ms = Math.round(performance.now() - signalled)
  const left = await gate.left(stuck)
  const state = await maintenance.getJobState(run!)

  t.same(exit, { code: 0, signal: null }, `exit 0, not by the grace timer (after ${ms} ms)\n${workerA.output()}`)
  t.ok(ms < GRACE_MS, `within SHUTDOWN_GRACE_MS (${ms} ms)`)
  t.equal(left, 0, `no session of the worker is left in Postgres (${left} of ${stuck.length}), so the abandoned batch cannot commit later`)
  t.equal(state, 'waiting', 'the run was handed back to the maintenance queue, not left active')
  t.equal(await scrubbed(), 0, 'nothing of the stuck batch committed')

  // The lock released, the next worker takes the handed-back run and does the scrub.
  await gate.open()
  const workerB = await startService(t, { name: 'worker B', roles: 'worker', env })
  await eventually(async () => (await scrubbed()) === OLD && (await maintenance.getJobState(run!)) === 'completed', 20_000)
  t.pass(`the next worker ran the handed-back run (${run}) to the end`)
  t.ok(workerB.alive(), 'worker B is up')
})
