import { performance } from 'node:perf_hooks'
import { sql } from 'kysely'
import t from 'tap'
import { createFaultWorld, inspectQueues, ledgerLine, makeEvents, ok, postAll, sleep, slowDown, statusCounts, untilDelivered, type Posted } from './fixtures/harness.js'
import { eventually, say } from '../helpers/world.js'

// Fault 6: SIGTERM to one of two processes (each runs every role) in the middle of the load.
// Each ingest and each delivery takes 200 ms longer in Postgres, so that the signal finds
// requests and jobs in flight. The process must finish them within SHUTDOWN_GRACE_MS and exit 0;
// the clients move to the other process. Jobs get a 30 s lock here (the service's default is 10 s,
// which the stalled check then recovers within this test's wait): a job the process abandoned
// instead of finishing would wait that long, and the delivery check would fail.
const EVENTS = 210
const GRACE_MS = 10_000

const world = await createFaultWorld(t, { env: { SHUTDOWN_GRACE_MS: String(GRACE_MS), WORKER_CONCURRENCY: '4', WORKER_LOCK_DURATION_MS: '30000' } })
const queues = inspectQueues(t, world)
await slowDown(world.db, 'slow_ingest', 'decisions', 0.2)
await slowDown(world.db, 'slow_offer', 'assignment_transitions', 0.2, "new.to_status = 'offered'")
const [a, b] = await Promise.all([world.service('A (all roles)', 'api,relay,worker'), world.service('B (all roles)', 'api,relay,worker')])

t.test('each process listens for every NOTIFY channel on one connection', async (t) => {
  // Every listening connection costs Postgres at each notifying commit (src/db/listener.ts): rule
  // sets, the relay, and (from the first request) API keys share one per process.
  const names = async () =>
    (
      await sql<{ name: string; n: number }>`select application_name as name, count(*)::int as n from pg_stat_activity
        where datname = ${world.name} and application_name in ('cad-router-listen', 'cad-router-keys', 'cad-router-rule-sets', 'cad-router-relay')
        group by 1`.execute(world.db)
    ).rows
  t.same(await names(), [{ name: 'cad-router-listen', n: 2 }], 'A and B: one each')
  const res = await fetch(`${a.url}/v1/assignments`, { headers: { authorization: `Bearer ${world.adminKey}` } })
  t.equal(res.status, 200, 'a request: the key cache subscribes')
  t.same(await names(), [{ name: 'cad-router-listen', n: 2 }], 'still one each')
})

t.test('SIGTERM under load: requests and jobs in flight finish, exit 0 within the grace period, nothing lost', async (t) => {
  const start = Date.now()
  let answered = 0
  let turn = 0
  const sending = new Map<Posted, { target: string; startedAt: number }>()
  let inFlightAtSignal: Posted[] = []
  let jobsAtSignal: string[] = []
  let signalledAt = 0
  let stopped: Promise<{ code: number | null; ms: number }> | undefined
  const posted = await postAll(makeEvents(EVENTS), {
    target: () => (a.alive() && turn++ % 2 === 0 ? a.url : b.url),
    adminKey: world.adminKey,
    concurrency: 12,
    retryForMs: 30_000,
    onSend: (p, target) => sending.set(p, { target, startedAt: Date.now() }),
    onAttempt: (p, at) => {
      sending.delete(p)
      if (ok(at) && ++answered === Math.round(EVENTS / 3)) {
        stopped = (async () => {
          // Answers come in bursts as group commits end, and their jobs reach the workers a moment
          // later: signal once some are running (within 3 s), so the signal finds both in flight.
          const until = performance.now() + 3000
          let ids: string[] = []
          while (!(ids = await queues.activeIds()).length && performance.now() < until) await new Promise((r) => setTimeout(r, 10))
          signalledAt = Date.now()
          inFlightAtSignal = [...sending].filter(([, s]) => s.target === a.url).map(([q]) => q)
          jobsAtSignal = ids
          const exit = await a.kill('SIGTERM')
          return { code: exit.code, ms: Date.now() - signalledAt }
        })()
      }
    },
  })
  const exit = await stopped!
  const { ledger: l, ms } = await untilDelivered(world.db, posted, 30_000)
  const counts = statusCounts(posted)
  // A job's offer commits in Postgres before BullMQ marks it completed: polled, not read once right
  // after the ledger says delivered (a job still active for good stays so and fails below).
  const jobStates = () => Promise.all(jobsAtSignal.map((id) => queues.stateOf(id)))
  const states = await eventually(async () => {
    const s = await jobStates()
    return s.every((x) => x === 'completed') && s
  }, 5_000).catch(jobStates)
  // A 200 for an event posted once means an earlier attempt committed it and its answer was lost.
  const answersLost = posted.filter((p) => p.attempts.some((x) => x.status === 200)).map((p) => p.event.eventId)
  const finishedInFlight = inFlightAtSignal.filter((p) => p.attempts.some((x) => ok(x) && x.target === a.url && x.startedAt < signalledAt))
  say(
    ledgerLine(
      'faults/graceful-shutdown',
      l,
      `A exited ${exit.code} ${exit.ms} ms after SIGTERM, answering ${finishedInFlight.length} of ${inFlightAtSignal.length} requests in flight; ${jobsAtSignal.length} jobs in flight; ${JSON.stringify(counts)}; ${Date.now() - start} ms`,
    ),
  )

  t.equal(exit.code, 0, 'A exited cleanly (0), not by the grace timer')
  t.ok(exit.ms < GRACE_MS, `within the grace period (${exit.ms} ms)`)
  t.ok(inFlightAtSignal.length > 0 && jobsAtSignal.length > 0, 'the signal came with requests and jobs in flight')
  t.ok(finishedInFlight.length > 0, 'requests in flight at the signal were answered')
  t.same(answersLost, [], 'no event was committed without its answer reaching the client')
  t.same(
    Object.keys(counts).filter((s) => /^\d+$/.test(s) && !['200', '201', '503'].includes(s)),
    [],
    'no 500',
  )
  t.same(
    posted.flatMap((p) => p.attempts).filter((x) => x.status === 503 && (x.retryAfter === null || x.code !== 'service-unavailable')),
    [],
    'a 503 is a service-unavailable problem with Retry-After',
  )
  t.same(
    states.filter((s) => s !== 'completed'),
    [],
    'the jobs in flight at the signal completed',
  )
  // Completed says nothing of who finished them: a job A handed back (or left to stall) is finished
  // by B. Draining means A finished its own within WORKER_DRAIN_MS.
  t.notMatch(a.output(), /handing them back|could not hand a job back/, 'A drained its jobs: none handed back to the queue')
  // A process that exits with jobs running leaves them active under a lock nobody renews (their
  // offers may even commit without it): once all is delivered, nothing may still be active.
  let active = await queues.activeIds()
  for (let i = 0; active.length && i < 30; i++) active = (await sleep(100), await queues.activeIds())
  t.same(active, [], 'no job left active under the lock of a process that is gone')
  t.same(await queues.stalledIds(), [], 'no job stalled (none abandoned under its lock)')
  t.equal(l.accepted, l.posted, 'every event got its 2xx')
  t.equal(l.stored, l.posted, 'every accepted event stored')
  t.equal(l.delivered, l.assignments, `every assignment delivered, none left behind under a lock (${ms} ms after the load)`)
  t.equal(l.duplicated, 0, 'nothing duplicated')
  t.equal(l.lost, 0, 'nothing lost')
  t.equal(l.halfWritten, 0, 'no half-written call or event')
  t.equal((await queues.counts()).failed, 0, 'no job failed')
  t.ok(b.alive(), 'B is up')
})
