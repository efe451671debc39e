import t from 'tap'
import { sql } from 'kysely'
import { backlogClearedAfter, createFaultWorld, inspectQueues, ledger, ledgerLine, makeEvents, postAll, sleep, statusCounts, untilDelivered } from './fixtures/harness.js'

// Fault 1: Redis killed (SIGKILL, no shutdown) in the middle of the load and started again 5 s
// later. Ingest never needs Redis; the outbox keeps what the relay could not send; what Redis had
// already acknowledged survives in its append-only file (appendfsync always).
const EVENTS = 300
const DOWN_MS = 5_000
// A job Redis handed to a worker just before it died, whose answer never reached the worker, is
// active under a lock nobody holds: it runs again as a stalled job, within the service's default
// WORKER_LOCK_DURATION_MS + WORKER_STALLED_INTERVAL_MS (10 s + 5 s).
const STALLED_BOUND_MS = 15_000

const t0 = Date.now()
const world = await createFaultWorld(t)
const t1 = Date.now()
const [api, relayWorker] = await Promise.all([world.service('api', 'api'), world.service('relay+worker', 'relay,worker')])
const queues = inspectQueues(t, world)
t.comment(`world ${t1 - t0} ms, processes ${Date.now() - t1} ms`)

t.test('Redis killed mid-load, back 5 s later: every event stored, every assignment delivered once within 5 s (a job lost in the hand-over, 15 s)', async (t) => {
  const start = Date.now()
  let killedAt = 0
  let backAt = 0
  let atKill = { delivered: 0, assignments: 0 }
  let answered = 0
  let midLoad: () => void = () => {}
  const reachedMidLoad = new Promise<void>((r) => (midLoad = r))
  const outage = (async () => {
    // Mid-load: a quarter of the events are in.
    await reachedMidLoad
    const l = await ledger(world.db, [])
    atKill = { delivered: l.delivered, assignments: l.assignments }
    await world.redis.kill()
    killedAt = Date.now()
    await sleep(DOWN_MS)
    await world.redis.start()
    backAt = Date.now()
  })()

  // About 40 events/s for ~7.5 s: the load runs before, during and after the outage.
  const posted = await postAll(makeEvents(EVENTS), {
    target: () => api.url,
    adminKey: world.adminKey,
    concurrency: 4,
    paceMs: 90,
    retryForMs: 20_000,
    onAttempt: () => {
      if (++answered === EVENTS / 4) midLoad()
    },
  })
  t.comment(`load ${Date.now() - start} ms`)
  await outage
  const during = posted.filter((p) => p.attempts[0]!.startedAt > killedAt && p.attempts[0]!.startedAt < backAt).length
  const { ledger: l } = await untilDelivered(world.db, posted, STALLED_BOUND_MS + 5_000)
  const afterReturn = await backlogClearedAfter(world.db, backAt)
  // Assignments waiting when Redis returned and offered more than 5 s later, and the stalled jobs.
  const late = await sql<{ id: string }>`
    select a.id from assignments a
    where a.created_at <= ${new Date(backAt)}
      and not exists (select from assignment_transitions t where t.assignment_id = a.id and t.to_status = 'offered' and t.at <= ${new Date(backAt + 5_000)})`.execute(world.db)
  const stalled = new Set(await queues.stalledIds())
  t.comment(ledgerLine('faults/redis-restart', l, `${during} posted while Redis was down; the backlog delivered ${afterReturn} ms after Redis returned; ${Date.now() - start} ms`))

  t.ok(atKill.assignments > 0 && atKill.delivered < l.assignments, `Redis died mid-load (${atKill.delivered} of ${atKill.assignments} delivered at the kill)`)
  t.ok(during > 0, 'events were posted while Redis was down')
  t.same(statusCounts(posted), { 201: EVENTS }, 'every post answered 201 at once: ingest does not need Redis')
  t.equal(l.stored, l.posted, 'every accepted event stored')
  t.equal(l.delivered, l.assignments, 'every assignment delivered')
  const lateNotStalled = late.rows.filter((r) => !stalled.has(`asg-${r.id}`)).map((r) => r.id)
  t.same(lateNotStalled, [], `what was waiting when Redis returned was delivered within 5 s, but for stalled jobs (${late.rows.length} late, ${stalled.size} stalled)`)
  t.ok(afterReturn !== null && afterReturn <= (late.rows.length ? STALLED_BOUND_MS : 5_000), `and those within ${STALLED_BOUND_MS / 1000} s (all delivered ${afterReturn} ms after Redis returned)`)
  t.equal(l.duplicated, 0, `nothing duplicated ${JSON.stringify(l.details.deliveredTwice.slice(0, 3))}`)
  t.equal(l.lost, 0, `nothing lost ${JSON.stringify(l.details.undelivered.slice(0, 3))}`)
  t.equal(l.halfWritten, 0, 'no half-written call or event')
  t.ok(api.alive() && relayWorker.alive(), `the processes rode it out\n${relayWorker.output()}`)
})
