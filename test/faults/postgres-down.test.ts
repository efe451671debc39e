import { sql } from 'kysely'
import t from 'tap'
import { PG_ADMIN_URL, say } from '../helpers/world.js'
import { answerCounter, createFaultWorld, databaseUrlFor, ledgerLine, makeEvents, postAll, sleep, statusCounts, untilDelivered, type Attempt } from './fixtures/harness.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'

// Fault 4: Postgres unreachable. The services reach Postgres through a TCP proxy that the test
// cuts (every connection dropped, new ones refused) for 3 s; later the test kills the services'
// backends with pg_terminate_backend. Ingest must answer 503 with Retry-After (never 500, never a
// dropped connection), the processes must stay up, and everything must recover by itself.
const EVENTS = 700
const CUT_MS = 3_000

const world = await createFaultWorld(t)
const pgServer = new URL(PG_ADMIN_URL)
const proxy = await startTcpProxy(t, { host: pgServer.hostname, port: Number(pgServer.port || 5432) })
const viaProxy = { DATABASE_URL: databaseUrlFor(world.name, proxy.port) }
const [api, relayWorker] = await Promise.all([world.service('api', 'api', { env: viaProxy }), world.service('relay+worker', 'relay,worker', { env: viaProxy })])

/** Every connection of the services (not the test's own) to the world's database. */
const terminateBackends = async () =>
  (
    await sql<{ n: number }>`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
      where datname = ${world.name} and pid <> pg_backend_pid() and application_name like 'cad-router%'`.execute(world.db)
  ).rows[0]!.n

t.test('Postgres unreachable: 503 with Retry-After, never 500; recovers by itself', async (t) => {
  const start = Date.now()
  const answers = answerCounter()
  const { when } = answers
  let terminated = 0
  const during: { cut: Attempt[]; terminate: Attempt[] } = { cut: [], terminate: [] }
  let phase: keyof typeof during | undefined
  const faults = (async () => {
    await when(60)
    phase = 'cut'
    await proxy.cut()
    await sleep(CUT_MS)
    await proxy.restore()
    await when(answers.answered + 60)
    phase = 'terminate'
    terminated += await terminateBackends()
    await sleep(300)
    terminated += await terminateBackends()
    await sleep(1000)
    phase = undefined
  })()

  const posted = await postAll(makeEvents(EVENTS), {
    target: () => api.url,
    adminKey: world.adminKey,
    concurrency: 6,
    paceMs: 8,
    retryForMs: 30_000,
    retryDelayMs: 100,
    stopIf: () => !api.alive() || !relayWorker.alive(),
    onAttempt: (_p, a) => {
      if (phase) during[phase].push(a)
      answers.answer()
    },
  })
  answers.releaseAll()
  if (!(api.alive() && relayWorker.alive())) {
    t.fail(`a process died:\n${api.output()}\n${relayWorker.output()}`)
    return
  }
  await faults
  const { ledger: l, ms } = await untilDelivered(world.db, posted, 30_000)
  const attempts = posted.flatMap((p) => p.attempts)
  const counts = statusCounts(posted)
  const unavailable = attempts.filter((a) => a.status === 503)
  say(
    ledgerLine(
      'faults/postgres-down',
      l,
      `${during.cut.filter((a) => a.status === 503).length} × 503 during the cut, ${during.terminate.filter((a) => a.status === 503).length} after killing ${terminated} backends; ${JSON.stringify(counts)}; ${Date.now() - start} ms`,
    ),
  )

  t.ok(during.cut.some((a) => a.status === 503), 'while cut off, ingest answered 503')
  t.same(
    Object.keys(counts).filter((s) => !['200', '201', '503'].includes(s)),
    [],
    'no other answer: no 500, no dropped connection',
  )
  t.same(
    unavailable.filter((a) => a.retryAfter !== '5' || a.code !== 'service-unavailable'),
    [],
    'every 503 is a service-unavailable problem with Retry-After',
  )
  // Idle connections exist after the load too: the kill must come while requests are being answered.
  t.ok(terminated > 0 && during.terminate.length > 0, `backends terminated (${terminated}) mid-load (${during.terminate.length} answers in that phase)`)
  const up = api.alive() && relayWorker.alive()
  t.ok(up, up ? 'no process died' : `a process died:\n${api.output()}\n${relayWorker.output()}`)
  t.equal(l.accepted, l.posted, 'every event got its 2xx in the end: recovered without a restart')
  t.equal(l.stored, l.posted, 'every accepted event stored')
  t.equal(l.delivered, l.assignments, `every assignment delivered (${ms} ms after the load)`)
  t.equal(l.duplicated, 0, 'nothing duplicated')
  t.equal(l.lost, 0, 'nothing lost')
  t.equal(l.halfWritten, 0, 'no half-written call or event')
})
