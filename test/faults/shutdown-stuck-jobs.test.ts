import { performance } from 'node:perf_hooks'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { sql } from 'kysely'
import t from 'tap'
import { LIFECYCLE_QUEUE, ackDeadlineJobId } from '../../src/queue/lifecycle.js'
import { callEvent } from '../helpers/events.js'
import { lockGate, stuckStatementEnv } from '../helpers/lock-gate.js'
import { eventually, say } from '../helpers/world.js'
import { createFaultWorld, inspectQueues, ledger, ledgerLine, postAll, type Posted } from './fixtures/harness.js'

// Fault 7: SIGTERM to a worker process whose jobs are stuck in Postgres (a lock the test holds): a
// responder job's offer and a lifecycle job's escalation both wait on it. The process must pause
// all its workers at once, hand back what did not finish within one WORKER_DRAIN_MS (not one per
// worker, one after another), and not wait for the stuck statements when it closes Postgres: it
// exits 0 within SHUTDOWN_GRACE_MS, leaves no session behind in Postgres (an abandoned statement
// must not commit later), and the next worker does the handed-back work once, nothing lost.
const GRACE_MS = 4000
const DRAIN_MS = 1500
// Longer than the grace period: a shutdown that waits for the stuck statements runs out of time.
const STATEMENT_TIMEOUT_MS = 8000
const HOLD = 7_001_700 // the advisory lock the test holds
const DEADLINE_S = 5

const world = await createFaultWorld(t, {
  env: {
    ...stuckStatementEnv({ graceMs: GRACE_MS, drainMs: DRAIN_MS, statementTimeoutMs: STATEMENT_TIMEOUT_MS }),
    // Only case management escalates (to CRU, which does not): one deadline job, one escalation.
    // 5 s, not 1: the test must shut the gate after seeing A offered and before the deadline job
    // runs; on a loaded machine a 1 s deadline escalated first, and nothing was stuck to test.
    ACK_DEADLINES: `case_management=${DEADLINE_S}`,
  },
})
const queues = inspectQueues(t, world)
const lifecycleConnection = new Redis(world.redis.url, { maxRetriesPerRequest: null, lazyConnect: true })
lifecycleConnection.on('error', () => {})
const lifecycle = new Queue(LIFECYCLE_QUEUE, { connection: lifecycleConnection, prefix: world.prefix })
t.teardown(async () => {
  await lifecycle.close().catch(() => {})
  lifecycleConnection.disconnect()
})

// Every transition a worker writes (an offer, an escalation) waits while the gate is shut.
const gate = await lockGate(t, world.db, { name: world.name, url: world.databaseUrl }, HOLD)
await sql
  .raw(
    `create function hold_worker_writes() returns trigger language plpgsql as $$ begin
       if new.actor like 'worker:%' or new.actor in ('system:ack-deadline', 'system:lifecycle-sweep') then
         ${gate.wait};
       end if;
       return new;
     end $$;
     create trigger hold_worker_writes before insert on assignment_transitions for each row execute function hold_worker_writes();`,
  )
  .execute(world.db)

const [api, workerA] = await Promise.all([world.service('api+relay', 'api,relay'), world.service('worker A', 'worker')])
const post = (event: ReturnType<typeof callEvent>) => postAll([event], { target: () => api.url, adminKey: world.adminKey, concurrency: 1, retryForMs: 10_000 })
// A worker's offers of each assignment of a call. (The escalation re-offers A's CRU support
// assignment, offered → offered by the deadline's actor: the ledger counts that as a second
// delivery, so "offered once" is counted here from the workers' own transitions.)
const offersOf = async (callId: string) =>
  (
    await sql<{ id: string; queue: string; offers: number }>`select a.id, a.queue, (select count(*)::int from assignment_transitions t where t.assignment_id = a.id and t.to_status = 'offered' and t.actor like 'worker:%') as offers
      from assignments a join decisions d on d.id = a.decision_id where d.call_id = ${callId} order by a.created_at, a.queue`.execute(world.db)
  ).rows
t.test('SIGTERM with a responder job and a lifecycle job stuck in Postgres: exit 0 within the grace period, both handed back, done once by the next worker', async (t) => {
  const start = Date.now()
  // A: a case-management assignment (and its CRU support), offered with a DEADLINE_S deadline.
  const eventA = callEvent({ dispatcherOverride: 'case_manager' })
  const postedA = await post(eventA)
  const a = await eventually(async () => {
    const rows = await offersOf(eventA.call.callId)
    return rows.length > 0 && rows.every((r) => r.offers === 1) && rows
  }, 15_000)
  const caseManagement = a.find((r) => r.queue === 'case_management')!
  t.ok(caseManagement, `A has a case-management assignment (${a.map((r) => r.queue).join(', ')})`)

  // Now hold every worker write. A's escalation waits when its deadline comes; then B's offer. (B
  // after the deadline: its statement then waits seconds less of its STATEMENT_TIMEOUT_MS.)
  await gate.shut()
  const deadlineJob = ackDeadlineJobId(caseManagement.id)
  await eventually(async () => (await lifecycle.getActive()).some((j) => j.id === deadlineJob) && (await gate.waiting()).length >= 1, 15_000)
  const eventB = callEvent({ dispatcherOverride: 'cru' })
  const postedB = await post(eventB)
  const responderJobs = await eventually(async () => {
    const active = await queues.activeIds()
    const lifecycleActive = (await lifecycle.getActive()).map((j) => j.id)
    return active.length > 0 && lifecycleActive.includes(deadlineJob) && (await gate.waiting()).length >= 2 && active
  }, 15_000)
  const stuck = await gate.waiting()

  const signalled = performance.now()
  const exit = await workerA.kill('SIGTERM')
  const ms = Math.round(performance.now() - signalled)
  // What the process left behind: its stuck statements' sessions, and where its jobs are now.
  const left = await gate.left(stuck)
  const responderStates = await Promise.all(responderJobs.map((id) => queues.stateOf(id)))
  const deadlineState = await lifecycle.getJobState(deadlineJob)
  const stalledHere = await queues.stalledIds()

  // Release the lock; the next worker takes what was handed back.
  await gate.open()
  const workerB = await world.service('worker B', 'worker')
  const posted: Posted[] = [...postedA, ...postedB]
  const done = async () => {
    const l = await ledger(world.db, posted)
    const escalations = await sql<{ n: number }>`select count(*)::int as n from assignment_transitions where assignment_id = ${caseManagement.id} and to_status = 'escalated'`.execute(world.db)
    return l.delivered === l.assignments && escalations.rows[0]!.n >= 1 && (await lifecycle.getJobState(deadlineJob)) === 'completed' && l
  }
  const l = await eventually(done, 15_000, 100).catch(() => ledger(world.db, posted))
  const offers = [...(await offersOf(eventA.call.callId)), ...(await offersOf(eventB.call.callId))]
  const offeredTwice = offers.filter((o) => o.offers !== 1)
  const escalations = (
    await sql<{ assignment_id: string; n: number }>`select assignment_id, count(*)::int as n from assignment_transitions where to_status = 'escalated' group by 1`.execute(world.db)
  ).rows
  say(
    ledgerLine(
      'faults/shutdown-stuck-jobs',
      { ...l, duplicated: offeredTwice.length },
      `worker A exited ${exit.code} ${ms} ms after SIGTERM (grace ${GRACE_MS}, drain ${DRAIN_MS}) with ${responderJobs.length} responder and 1 lifecycle job stuck; ${left} of ${stuck.length} stuck sessions left; jobs then ${responderStates.join(',')} / ${deadlineState}; ${Date.now() - start} ms`,
    ),
  )

  t.same(exit, { code: 0, signal: null }, `worker A exited 0, not by the grace timer (${ms} ms)\n${workerA.output()}`)
  t.ok(ms < GRACE_MS, `within SHUTDOWN_GRACE_MS (${ms} ms)`)
  t.ok(stuck.length >= 2, `the signal came with statements stuck in Postgres (${stuck.length})`)
  t.equal(left, 0, 'no session of worker A is left in Postgres, so no abandoned statement commits later')
  t.same(
    responderStates.filter((s) => s !== 'waiting'),
    [],
    'the stuck responder jobs were handed back to their queue (waiting), not left active under a lock',
  )
  t.equal(deadlineState, 'waiting', 'the stuck deadline job was handed back to the lifecycle queue')
  t.same(stalledHere, [], 'no job had to be recovered as stalled')
  t.equal(l.delivered, l.assignments, `worker B delivered everything (${l.delivered} of ${l.assignments})`)
  t.equal(l.lost, 0, `nothing lost ${JSON.stringify(l.details.undelivered)}`)
  t.same(offeredTwice, [], 'each assignment offered once by a worker')
  t.same(escalations, [{ assignment_id: caseManagement.id, n: 1 }], 'the deadline escalated once')
  t.equal((await queues.counts()).failed, 0, 'no job failed')
  t.ok(workerB.alive() && api.alive(), 'the other processes are up')
})
