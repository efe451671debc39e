import t from 'tap'
import { sql } from 'kysely'
import { eventually, say } from '../helpers/world.js'
import { createFaultWorld, ledgerLine, makeEvents, ok, postAll, slowCommit, statusCounts, untilDelivered } from './fixtures/harness.js'

// Fault 3: one of two API processes SIGKILLed in the middle of the load while the clients retry
// each event, with the same eventId and body, until it gets a 2xx (from whichever API answers).
// Commits take 500 ms longer here (1.5 s about the kill), so that the kill catches transactions mid-commit: Postgres
// finishes them without the process, the clients never hear of it, and their retries must be
// answered 200 with the decision already stored — never a second decision. A alone takes the load
// until it dies, so every commit asleep is one of A's, and the kill waits for one that has just
// begun: some cut-off events are then always committed (waiting on chance, 1 run in 5 had none).
const EVENTS = 480

// A retry that reaches B while A's orphaned commit still sleeps waits for it on the event's unique
// index: the lock timeout (1 s by default) must outlast the 1.5 s sleeps below, or B answers 503.
const world = await createFaultWorld(t, { env: { DATABASE_LOCK_TIMEOUT_MS: '3000' } })
// 500 ms per commit; 1.5 s for the commits begun once the kill is near (see killMidCommit).
await sql`create table slow_commit_seconds (s float8 not null); insert into slow_commit_seconds values (0.5)`.execute(world.db)
await slowCommit(world.db, 'slow_commit', 'decisions', '(select s from slow_commit_seconds)')
const [apiA, apiB] = await Promise.all([world.service('api A', 'api'), world.service('api B + relay + worker', 'api,relay,worker')])

t.test('API SIGKILLed mid-load, clients retrying: every 2xx event stored with one decision', async (t) => {
  const start = Date.now()
  let answered = 0
  let killed = Promise.resolve(false)
  // Whether a commit was under way at the kill; A dies either way, so the load can end.
  // The commit found must still be asleep when the SIGKILL lands: with 500 ms sleeps and one found
  // within 200 ms of its start, a test process paused 300 ms on a loaded machine killed A after the
  // commit had answered, and no cut-off event had committed. Commits begun from here on sleep 1.5 s.
  const killMidCommit = async (): Promise<boolean> => {
    await sql`update slow_commit_seconds set s = 1.5`.execute(world.db)
    const { rows: [since] } = await sql<{ at: Date }>`select clock_timestamp() as at`.execute(world.db)
    const found = await eventually(async () => {
      const { rows } = await sql`select 1 from pg_stat_activity where datname = current_database() and wait_event = 'PgSleep'
        and query ilike 'commit' and query_start > ${since!.at} and clock_timestamp() - query_start < interval '200 milliseconds'`.execute(world.db)
      return rows.length > 0
    }, 10_000, 2).then(
      () => true,
      () => false,
    )
    await apiA.kill('SIGKILL')
    await sql`update slow_commit_seconds set s = 0.5`.execute(world.db)
    return found
  }
  const posted = await postAll(makeEvents(EVENTS), {
    // A load balancer's failover: everything to A while it lives, then to B.
    target: () => (apiA.alive() ? apiA.url : apiB.url),
    adminKey: world.adminKey,
    concurrency: 16,
    retryForMs: 30_000,
    onAttempt: (_p, a) => {
      if (ok(a) && ++answered === Math.round(EVENTS / 3)) killed = killMidCommit()
    },
  })
  const midCommit = await killed
  const { ledger: l, ms } = await untilDelivered(world.db, posted, 20_000)
  const counts = statusCounts(posted)
  const noAnswer = Object.entries(counts)
    .filter(([s]) => !/^\d+$/.test(s))
    .reduce((n, [, c]) => n + c, 0)
  const replays = posted.filter((p) => p.attempts.some((a) => a.status === 200)).length
  say(ledgerLine('faults/api-kill', l, `${noAnswer} requests cut off by the kill; ${replays} of their retries answered 200 (committed without an answer); ${Date.now() - start} ms`))

  t.ok(midCommit, "the kill came while one of A's commits was under way")
  t.ok(noAnswer > 0, 'the kill cut requests off')
  t.ok(replays > 0, 'some cut-off events had committed: their retries answered 200')
  t.same(
    Object.keys(counts).filter((s) => /^\d+$/.test(s) && !['200', '201'].includes(s)),
    [],
    'every answer was 200 or 201',
  )
  t.equal(l.accepted, l.posted, 'every event got its 2xx in the end')
  t.equal(l.stored, l.posted, 'every accepted event stored')
  t.same(l.details.decisionsTwice, [], 'one decision per event and per call')
  t.same(l.details.answersDiffer, [], 'every 2xx for an event named the stored decision')
  t.equal(l.delivered, l.assignments, `every assignment delivered (${ms} ms after the load)`)
  t.equal(l.duplicated, 0, 'nothing duplicated')
  t.equal(l.lost, 0, 'nothing lost')
  t.equal(l.halfWritten, 0, 'no half-written call or event')
  t.ok(apiB.alive(), 'the other API process is up')
})
