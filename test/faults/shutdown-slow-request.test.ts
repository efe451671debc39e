import { performance } from 'node:perf_hooks'
import { sql } from 'kysely'
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { keepAliveClient } from '../helpers/keep-alive-client.js'
import { lockGate, stuckStatementEnv } from '../helpers/lock-gate.js'
import { eventually, say } from '../helpers/world.js'
import { createFaultWorld, inspectQueues, ledger, ledgerLine, postAll, slowDown, type Posted } from './fixtures/harness.js'

// Fault 8: SIGTERM to a process that serves the API and runs workers, while a CAD's request is in
// flight on a keep-alive connection (it takes 2.5 s in Postgres) and a responder job is stuck in
// Postgres (a lock the test holds). The HTTP server closes first, and takes most of the grace
// period: the workers' drain must end early enough for the hand-back and the Postgres close to fit
// in what is left (counted from the signal, not from when the workers' turn came), and the HTTP
// close must end with the request, not wait for its connection's keep-alive time (65 s).
const GRACE_MS = 4000
const DRAIN_MS = 1500
const SLOW_S = 2.5
const STATEMENT_TIMEOUT_MS = 8000
const HOLD = 7_001_701 // the advisory lock the test holds

const world = await createFaultWorld(t, { env: stuckStatementEnv({ graceMs: GRACE_MS, drainMs: DRAIN_MS, statementTimeoutMs: STATEMENT_TIMEOUT_MS }) })
const queues = inspectQueues(t, world)
await slowDown(world.db, 'slow_ingest', 'call_events', SLOW_S, `new.call_id like 'SLOW-%'`)
// Every offer a worker writes waits while the gate is shut.
const gate = await lockGate(t, world.db, { name: world.name, url: world.databaseUrl }, HOLD)
await sql
  .raw(
    `create function hold_offers() returns trigger language plpgsql as $$ begin
       if new.actor like 'worker:%' then ${gate.wait}; end if;
       return new;
     end $$;
     create trigger hold_offers before insert on assignment_transitions for each row execute function hold_offers();`,
  )
  .execute(world.db)

const [relay, a] = await Promise.all([world.service('relay', 'relay'), world.service('A (api, worker)', 'api,worker')])
const client = keepAliveClient(a.url, world.adminKey)
t.teardown(() => client.destroy())

t.test('SIGTERM with a slow request in flight and a job stuck: the request is answered, the job handed back, exit 0 within the grace period', async (t) => {
  const start = Date.now()
  await gate.shut()
  // A responder job, stuck on its offer.
  const stuckEvent = callEvent({ dispatcherOverride: 'cru' })
  const posted: Posted[] = await postAll([stuckEvent], { target: () => a.url, adminKey: world.adminKey, concurrency: 1, retryForMs: 10_000 })
  const stuckJobs = await eventually(async () => {
    const active = await queues.activeIds()
    return active.length > 0 && (await gate.waiting()).length > 0 && active
  }, 15_000)

  // The CAD's request, on a connection it keeps: its insert sleeps in Postgres.
  const slowEvent = callEvent({ callId: `SLOW-${Date.now()}`, dispatcherOverride: 'police' })
  const answer = client.send('/v1/call-events', { method: 'POST', body: slowEvent }).then((r) => ({ ...r, at: performance.now() }))
  await eventually(async () => {
    const r = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = ${world.name} and wait_event = 'PgSleep'`.execute(world.db)
    return r.rows[0]!.n > 0
  }, 15_000)

  const signalled = performance.now()
  const [exit, res] = await Promise.all([a.kill('SIGTERM'), answer])
  const ms = Math.round(performance.now() - signalled)
  const answeredMs = Math.round(res.at - signalled)
  const jobStates = await Promise.all(stuckJobs.map((id) => queues.stateOf(id)))
  const left = (await gate.waiting()).length

  // The next worker takes what was handed back.
  await gate.open()
  const b = await world.service('worker B', 'worker')
  posted.push({ event: slowEvent, attempts: [], decisionIds: new Set() })
  const l = await eventually(async () => {
    const l = await ledger(world.db, posted)
    return l.delivered === l.assignments && l
  }, 15_000, 100).catch(() => ledger(world.db, posted))
  say(
    ledgerLine(
      'faults/shutdown-slow-request',
      l,
      `A exited ${exit.code} ${ms} ms after SIGTERM (grace ${GRACE_MS}, drain ${DRAIN_MS}); the slow request answered ${res.status} at ${answeredMs} ms; ${stuckJobs.length} stuck jobs then ${jobStates.join(',')}; ${Date.now() - start} ms`,
    ),
  )

  t.equal(res.status, 201, `the request in flight at the signal is answered (${answeredMs} ms)`)
  t.equal(res.connection, 'close', 'and told that its connection ends')
  t.same(exit, { code: 0, signal: null }, `A exited 0, not by the grace timer (${ms} ms)\n${a.output()}`)
  t.ok(ms < GRACE_MS, `within SHUTDOWN_GRACE_MS (${ms} ms)`)
  t.same(
    jobStates.filter((s) => s !== 'waiting'),
    [],
    'the stuck job was handed back (waiting), not left active under its lock',
  )
  t.equal(left, 0, 'no statement of A is left waiting in Postgres')
  t.equal(l.stored, 2, 'both events stored')
  t.equal(l.delivered, l.assignments, `worker B delivered everything (${l.delivered} of ${l.assignments})`)
  t.equal(l.lost, 0, `nothing lost ${JSON.stringify(l.details.undelivered)}`)
  t.equal(l.duplicated, 0, 'nothing delivered twice')
  t.ok(b.alive() && relay.alive(), 'the other processes are up')
})
