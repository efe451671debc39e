import { performance } from 'node:perf_hooks'
import { sql } from 'kysely'
import t from 'tap'
import { callEvent } from '../helpers/events.js'
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
