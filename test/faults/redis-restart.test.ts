import t from 'tap'
import { backlogClearedAfter, createFaultWorld, inspectQueues, ledger, ledgerLine, makeEvents, postAll, sleep, statusCounts, untilDelivered } from './fixtures/harness.js'
import { say } from '../helpers/world.js'

// Fault 1: Redis killed (SIGKILL, no shutdown) in the middle of the load and started again 5 s
// later. Ingest never needs Redis; the outbox keeps what the relay could not send; what Redis had
// already acknowledged survives in its append-only file (appendfsync always).
const EVENTS = 700
const DOWN_MS = 5_000

const t0 = Date.now()
const world = await createFaultWorld(t)
const t1 = Date.now()
const [api, relayWorker] = await Promise.all([world.service('api', 'api'), world.service('relay+worker', 'relay,worker')])
const queues = inspectQueues(t, world)
say(`world ${t1 - t0} ms, processes ${Date.now() - t1} ms`)
t.notMatch(relayWorker.output(), /could not send/, 'the relay starts without a failed send (it waits for its Redis connection)')

t.test('Redis killed mid-load, back 5 s later: every event stored, every assignment delivered once within 5 s', async (t) => {
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

  // About 100 events/s for ~7 s: the load runs before, during and after the outage.
  const posted = await postAll(makeEvents(EVENTS), {
    target: () => api.url,
    adminKey: world.adminKey,
    concurrency: 4,
    paceMs: 38,
    retryForMs: 20_000,
    onAttempt: () => {
      if (++answered === EVENTS / 4) midLoad()
    },
  })
  say(`load ${Date.now() - start} ms`)
  await outage
  const during = posted.filter((p) => p.attempts[0]!.startedAt > killedAt && p.attempts[0]!.startedAt < backAt).length
  const { ledger: l } = await untilDelivered(world.db, posted, 30_000)
  const afterReturn = await backlogClearedAfter(world.db, backAt)
  say(ledgerLine('faults/redis-restart', l, `${during} posted while Redis was down; the backlog delivered ${afterReturn} ms after Redis returned; ${Date.now() - start} ms`))

  // Mid-load: some work was in before the kill, and more came after it (the final count is always above what was delivered then).
  t.ok(atKill.assignments > 0 && atKill.assignments < l.assignments, `Redis died mid-load (${atKill.assignments} of ${l.assignments} assignments made by then, ${atKill.delivered} delivered)`)
  t.ok(during > 0, 'events were posted while Redis was down')
  t.same(statusCounts(posted), { 201: EVENTS }, 'every post answered 201 at once: ingest does not need Redis')
  t.equal(l.stored, l.posted, 'every accepted event stored')
  t.equal(l.delivered, l.assignments, 'every assignment delivered')
  // A job Redis handed a worker just before it died, the answer lost, is handed back when the
  // worker's connection returns (src/workers/orphans.ts); left to the stalled check, it waited 10–15 s.
  // 5 s is issue 6's own figure: widen it only with the issue, not for a slow machine.
  const stalled = await queues.stalledIds()
  t.ok(afterReturn !== null && afterReturn <= 5_000, `what was waiting when Redis returned was delivered within 5 s (${afterReturn} ms; stalled jobs: ${stalled.join(', ') || 'none'})`)
  t.equal(l.duplicated, 0, `nothing duplicated ${JSON.stringify(l.details.deliveredTwice.slice(0, 3))}`)
  t.equal(l.lost, 0, `nothing lost ${JSON.stringify(l.details.undelivered.slice(0, 3))}`)
  t.equal(l.halfWritten, 0, 'no half-written call or event')
  t.ok(api.alive() && relayWorker.alive(), `the processes rode it out\n${relayWorker.output()}`)
})

t.test('a process with every role started while Redis is down takes calls at once; its workers start when Redis returns', async (t) => {
  await world.redis.kill()
  let redisUp = false
  t.teardown(async () => {
    if (!redisUp) await world.redis.start()
  })
  // Ready means /readyz answers 200: "degraded" while Redis is away.
  const late = await world.service('late (all roles)', 'api,relay,worker', { env: { LOG_LEVEL: 'info' } })
  const ready = await fetch(`${late.url}/readyz`)
  t.equal(ready.status, 200)
  t.equal(((await ready.json()) as { status: string }).status, 'degraded', 'ready, degraded')
  const posted = await postAll(makeEvents(30), { target: () => late.url, adminKey: world.adminKey, concurrency: 4, retryForMs: 5_000 })
  t.same(statusCounts(posted), { 201: 30 }, 'every call taken while Redis is down')
  t.notOk(late.said('workers started'), 'the workers are still waiting for Redis')

  await world.redis.start()
  redisUp = true
  const { ledger: l } = await untilDelivered(world.db, posted, 30_000)
  t.equal(l.delivered, l.assignments, 'every assignment delivered once Redis is back')
  t.equal(l.duplicated, 0)
  const started = Date.now()
  // Looked for in everything it said: on a slow machine lines it writes since (acknowledgement
  // deadlines escalating) push it out of output()'s last lines.
  while (!late.said('workers started') && Date.now() - started < 15_000) await sleep(100)
  t.ok(late.said('workers started'), `and the process started its workers:\n${late.output()}`)
  t.ok(late.alive())
})
