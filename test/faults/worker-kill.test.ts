import t from 'tap'
import { eventually, say } from '../helpers/world.js'
import { createFaultWorld, inspectQueues, ledger, ledgerLine, makeEvents, postAll, slowDown, statusCounts, untilDelivered } from './fixtures/harness.js'

// Fault 2: a worker process SIGKILLed while it runs jobs. Its transactions roll back with its
// connections; its jobs stay "active" in Redis under locks nobody renews, and once the locks lapse
// the next stalled-job check hands them out again.
const EVENTS = 210

const world = await createFaultWorld(t, {
  env: { WORKER_CONCURRENCY: '4', WORKER_LOCK_DURATION_MS: '3000', WORKER_STALLED_INTERVAL_MS: '1000' },
})
const queues = inspectQueues(t, world)
// Each delivery takes 200 ms in Postgres: the workers fall behind the load, and a kill finds jobs in flight.
await slowDown(world.db, 'slow_offer', 'assignment_transitions', 0.2, "new.to_status = 'offered'")
const [api, workerA] = await Promise.all([world.service('api+relay', 'api,relay'), world.service('worker A', 'worker')])

t.test('worker SIGKILLed mid-job: its jobs run again, each delivery recorded once', async (t) => {
  const start = Date.now()
  const loading = postAll(makeEvents(EVENTS), { target: () => api.url, adminKey: world.adminKey, concurrency: 8, retryForMs: 20_000 })

  // Mid-load: some deliveries done, jobs in flight.
  await eventually(async () => (await ledger(world.db, [])).delivered >= 60 && (await queues.activeIds()).length > 0, 60_000, 50)
  const exit = await workerA.kill('SIGKILL')
  const inFlight = await queues.activeIds()
  const atKill = await ledger(world.db, [])
  const workerB = await world.service('worker B', 'worker')

  const posted = await loading
  const { ledger: l, ms } = await untilDelivered(world.db, posted, 30_000)
  // Delivered in Postgres says nothing of BullMQ: a killed job whose offer had committed counts as
  // delivered while it is still active under the dead worker's lock, until the lock (3 s) lapses and
  // a stalled check (every 1 s) hands it to B. Polled, not read once when the ledger is complete.
  const jobStates = () => Promise.all(inFlight.map((id) => queues.stateOf(id)))
  const states = await eventually(async () => {
    const s = await jobStates()
    return s.every((x) => x === 'completed') && s
  }, 15_000).catch(jobStates)
  const counts = await queues.counts()
  say(
    ledgerLine('faults/worker-kill', l, `${inFlight.length} jobs in flight at the kill (${atKill.delivered} delivered before it); all delivered ${ms} ms after the load; ${Date.now() - start} ms`),
  )

  t.equal(exit.signal, 'SIGKILL')
  t.ok(inFlight.length > 0, `the worker died with jobs in flight (${inFlight.length})`)
  t.same(statusCounts(posted), { 201: EVENTS }, 'every post answered 201')
  t.equal(l.stored, l.posted, 'every accepted event stored')
  t.equal(l.delivered, l.assignments, 'every assignment delivered')
  t.same(
    states.filter((s) => s !== 'completed'),
    [],
    'the jobs in flight at the kill were picked up again and completed',
  )
  t.equal(counts.failed, 0, 'no job failed (none stalled twice)')
  t.equal(l.duplicated, 0, `each delivery recorded once ${JSON.stringify(l.details.deliveredTwice.slice(0, 3))}`)
  t.equal(l.lost, 0, `nothing lost ${JSON.stringify(l.details.undelivered.slice(0, 3))}`)
  t.equal(l.halfWritten, 0, 'no half-written call or event')
  t.ok(api.alive() && workerB.alive(), 'the other processes are up')
})
