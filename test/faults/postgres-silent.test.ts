import { performance } from 'node:perf_hooks'
import { sql } from 'kysely'
import t from 'tap'
import { eventually, say } from '../helpers/world.js'
import { answerCounter, createFaultWorld, databaseUrlFor, ledgerLine, makeEvents, ok, postAll, sleep, statusCounts, untilDelivered, type Attempt, type Posted } from './fixtures/harness.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'

// Fault 6: Postgres gone silent. The services reach Postgres through a TCP proxy that the test
// freezes mid-load: every connection stays open and carries nothing, in either direction, and new
// ones are accepted and carry nothing either — a network that drops packets without a reset, or a
// frozen server host. Nothing errors: only a bound of the service's own ends a query. Then the
// network returns, but the connections frozen until then stay silent (stranded), as real ones do
// for minutes while their retransmissions back off: the service must drop them, not wait for them.
// Ingest must answer within a bound, 2xx or 503 with Retry-After; /readyz must say not ready; and
// ingest must recover by itself within seconds of the thaw, with every event stored once.
const EVENTS = 420
const FREEZE_MS = 4_000
const STATEMENT_TIMEOUT_MS = 1_000
const QUERY_TIMEOUT_MS = 1_500
/** Every attempt is answered within this (a time-out waiting for a pooled connection included). */
const ANSWER_WITHIN_MS = 7_000
/** Ingest answers 2xx again this soon after the thaw. */
const RECOVERED_WITHIN_MS = 5_000
/** The outbox relay sends again this soon after the thaw (its backoff is at most 5 s). */
const RELAY_RECOVERED_WITHIN_MS = 10_000

const world = await createFaultWorld(t, {
  env: {
    DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
    DATABASE_QUERY_TIMEOUT_MS: String(QUERY_TIMEOUT_MS),
  },
})
const pgServer = new URL(world.databaseUrl)
const proxy = await startTcpProxy(t, { host: pgServer.hostname, port: Number(pgServer.port || 5432) })
const viaProxy = { DATABASE_URL: databaseUrlFor(world.name, proxy.port) }
const [api, relayWorker] = await Promise.all([world.service('api', 'api', { env: viaProxy }), world.service('relay+worker', 'relay,worker', { env: viaProxy })])

interface Readiness {
  status: number | string
  retryAfter: string | null
  ms: number
}

async function readiness(): Promise<Readiness> {
  const started = performance.now()
  try {
    const res = await fetch(`${api.url}/readyz`, { signal: AbortSignal.timeout(10_000) })
    await res.text()
    return { status: res.status, retryAfter: res.headers.get('retry-after'), ms: Math.round(performance.now() - started) }
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } }
    return { status: e.cause?.code ?? e.name, retryAfter: null, ms: Math.round(performance.now() - started) }
  }
}

t.test('Postgres silent: answers within a bound, 503 with Retry-After, never 500; recovers by itself after the thaw', async (t) => {
  const start = Date.now()
  const answers = answerCounter()
  const { when } = answers
  type Phase = 'frozen' | 'after'
  const during: Record<Phase, Attempt[]> = { frozen: [], after: [] }
  let phase: Phase | undefined
  // On the monotonic clock: the harness stamps attempts with Date.now(), and CI's wall clock has been
  // seen to jump seconds ahead mid-run, which would pass for an answer that took seconds longer.
  const now = () => performance.now()
  /** When each attempt was sent and answered, on that clock. */
  const sentAt = new Map<Posted, number>()
  const timing = new Map<Attempt, { startedAt: number; endedAt: number }>()
  let frozeAt = 0
  let thawedAt = 0
  let stranded = 0
  let relayRecoveredMs: number | undefined
  const ready: Readiness[] = []
  // On the test's own connection, which the proxy does not carry.
  const outboxSent = async () => (await sql<{ n: number }>`select count(*)::int as n from outbox where sent_at is not null`.execute(world.db)).rows[0]!.n
  const untilRelaySent = (sentBefore: number) =>
    eventually(async () => (await outboxSent()) > sentBefore, 3 * RELAY_RECOVERED_WITHIN_MS, 50).then(
      () => Math.round(now() - thawedAt),
      () => undefined,
    )
  const faults = (async () => {
    await when(60)
    phase = 'frozen'
    frozeAt = now()
    proxy.freeze()
    // Asked twice: once while the pool still holds connections from before, once when they are gone.
    ready.push(await readiness())
    await sleep(Math.max(0, FREEZE_MS / 2 - (now() - frozeAt)))
    ready.push(await readiness())
    await sleep(Math.max(0, FREEZE_MS - (now() - frozeAt)))
    stranded = proxy.silent()
    // Nothing of the relay's commits while frozen: rows sent beyond these were sent after the thaw.
    const sentBefore = await outboxSent()
    proxy.thaw({ strand: true })
    thawedAt = now()
    phase = 'after'
    relayRecoveredMs = await untilRelaySent(sentBefore)
  })()

  const posted = await postAll(makeEvents(EVENTS), {
    target: () => api.url,
    adminKey: world.adminKey,
    concurrency: 6,
    paceMs: 10,
    retryForMs: 30_000,
    retryDelayMs: 100,
    // Longer than any answer may take: an attempt cut by it is an answer that never came.
    attemptTimeoutMs: 2 * ANSWER_WITHIN_MS,
    stopIf: () => !api.alive() || !relayWorker.alive(),
    onSend: (p) => sentAt.set(p, now()),
    onAttempt: (p, a) => {
      timing.set(a, { startedAt: sentAt.get(p)!, endedAt: now() })
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
  const { ledger: l, ms } = await untilDelivered(world.db, posted, 20_000)
  const readyAfter = await readiness()
  const attempts = posted.flatMap((p) => p.attempts)
  const counts = statusCounts(posted)
  const unavailable = attempts.filter((a) => a.status === 503)
  const took = (a: Attempt) => timing.get(a)!
  const slowest = Math.round(Math.max(...attempts.map((a) => took(a).endedAt - took(a).startedAt)))
  // Recovery: the first attempt sent after the thaw that was stored, and the last one that was not.
  const sentAfter = during.after.filter((a) => took(a).startedAt >= thawedAt)
  const firstOk = sentAfter.find(ok)
  const recoveredMs = firstOk ? Math.round(took(firstOk).endedAt - thawedAt) : undefined
  const lastRefused = Math.round(sentAfter.filter((a) => !ok(a)).reduce((m, a) => Math.max(m, took(a).endedAt - thawedAt), 0))
  say(
    ledgerLine(
      'faults/postgres-silent',
      l,
      `${during.frozen.filter((a) => a.status === 503).length} × 503 while frozen (${FREEZE_MS} ms, ${stranded} connections stranded), ` +
        `slowest answer ${slowest} ms; /readyz while frozen ${ready.map((r) => `${r.status} in ${r.ms} ms`).join(', ')}; ` +
        `first 2xx ${recoveredMs ?? 'never'} ms after the thaw, last refusal ${lastRefused} ms after, relay sent again ${relayRecoveredMs ?? 'never'} ms after; ` +
        `${JSON.stringify(counts)}; ${Date.now() - start} ms`,
    ),
  )

  t.ok(during.frozen.some((a) => a.status === 503), 'while silent, ingest answered 503')
  t.same(
    Object.keys(counts).filter((s) => !['200', '201', '503'].includes(s)),
    [],
    'no other answer: no 500, no dropped connection, no request left hanging',
  )
  t.ok(slowest < ANSWER_WITHIN_MS, `every attempt answered within ${ANSWER_WITHIN_MS} ms (slowest ${slowest} ms)`)
  t.same(
    unavailable.filter((a) => a.retryAfter !== '5' || a.code !== 'service-unavailable'),
    [],
    'every 503 is a service-unavailable problem with Retry-After',
  )
  t.same(
    ready.filter((r) => r.status !== 503 || r.retryAfter !== '5'),
    [],
    `/readyz said not ready (503 with Retry-After) while silent: ${ready.map((r) => `${r.status} in ${r.ms} ms`).join(', ')}`,
  )
  t.ok(stranded > 0, `connections were stranded by the freeze (${stranded})`)
  t.ok(recoveredMs !== undefined && recoveredMs < RECOVERED_WITHIN_MS, `ingest stored events again ${recoveredMs ?? 'never'} ms after the thaw (within ${RECOVERED_WITHIN_MS} ms)`)
  t.ok(
    relayRecoveredMs !== undefined && relayRecoveredMs < RELAY_RECOVERED_WITHIN_MS,
    `the outbox relay sent again ${relayRecoveredMs ?? 'never'} ms after the thaw (within ${RELAY_RECOVERED_WITHIN_MS} ms): it does not take the pool's stranded connections one by one`,
  )
  t.equal(readyAfter.status, 200, `/readyz ready again after the load (${readyAfter.status} in ${readyAfter.ms} ms)`)
  const up = api.alive() && relayWorker.alive()
  t.ok(up, up ? 'no process died' : `a process died:\n${api.output()}\n${relayWorker.output()}`)
  t.equal(l.accepted, l.posted, 'every event got its 2xx in the end: recovered without a restart')
  t.equal(l.stored, l.posted, 'every accepted event stored')
  t.equal(l.halfWritten, 0, 'nothing half-written: no call, event, decision or assignment without the rest of its ingest')
  t.equal(l.duplicated, 0, 'nothing duplicated: one decision per event, and every 2xx named it')
  t.equal(l.lost, 0, 'nothing lost')
  t.equal(l.delivered, l.assignments, `every assignment delivered (${ms} ms after the load)`)
})
