import { sql } from 'kysely'
import pg from 'pg'
import t from 'tap'
import { answerCounter, createFaultWorld, dropTrigger, ledgerLine, makeEvents, postAll, sleep, slowDown, statusCounts, untilDelivered, type Attempt } from './fixtures/harness.js'
import { say } from '../helpers/world.js'

// Fault 5: Postgres that fails writes the way a full disk does (SQLSTATE 53100, at the outbox
// insert or at the commit of an ingest), then answers slowly (a statement sleeping past
// the 1 s statement timeout), then makes writers wait on a lock held by someone else. Every such
// ingest must answer 503 with Retry-After and leave nothing behind; the retries then go through.
const EVENTS = 700
const FAULT_MS = 2_000

const world = await createFaultWorld(t, { env: { DATABASE_STATEMENT_TIMEOUT_MS: '1000' } })
const service = await world.service('api+relay+worker', 'api,relay,worker')

/**
 * Half of the inserts into `table` fail with "No space left on device": as the row is written
 * ('insert'), or at the commit of the transaction that wrote it ('commit': a deferred trigger),
 * after every statement of the ingest succeeded. (Ingest writes call_events in its one insert
 * statement and never updates it: a trigger on its update, as this test had, never fired.)
 */
async function diskFull(table: string, at: 'insert' | 'commit'): Promise<void> {
  const name = `disk_full_${table}`
  const when = at === 'insert' ? `create trigger ${name} before insert` : `create constraint trigger ${name} after insert`
  await sql
    .raw(
      `create sequence ${name}_hits;
       create or replace function ${name}() returns trigger language plpgsql as $$ begin
         if random() < 0.5 then
           perform nextval('${name}_hits');
           raise exception 'could not extend file "base/1/2": No space left on device' using errcode = 'disk_full', hint = 'Check free disk space.';
         end if;
         return new;
       end $$;
       ${when} on ${table} ${at === 'commit' ? 'deferrable initially deferred ' : ''}for each row execute function ${name}();`,
    )
    .execute(world.db)
}

/** How many writes the trigger of diskFull(table) failed (a sequence: its count survives the rollback). */
async function diskFullHits(table: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`select case when is_called then last_value else 0 end::int as n from ${sql.id(`disk_full_${table}_hits`)}`.execute(world.db)
  return rows[0]!.n
}

t.test('disk full, slow statements, held locks: 503 with Retry-After, nothing half-written', async (t) => {
  const start = Date.now()
  const answers = answerCounter()
  const { when } = answers
  type Phase = 'disk-full' | 'slow' | 'lock'
  const during: Record<Phase, Attempt[]> = { 'disk-full': [], slow: [], lock: [] }
  let phase: Phase | undefined
  const faults = (async () => {
    await when(40)
    phase = 'disk-full'
    await diskFull('outbox', 'insert')
    await diskFull('call_events', 'commit')
    await sleep(FAULT_MS)
    await dropTrigger(world.db, 'disk_full_outbox', 'outbox')
    await dropTrigger(world.db, 'disk_full_call_events', 'call_events')

    await when(answers.answered + 40)
    phase = 'slow'
    await slowDown(world.db, 'slow_decisions', 'decisions', 1.5, 'random() < 0.5')
    await sleep(FAULT_MS)
    await dropTrigger(world.db, 'slow_decisions', 'decisions')

    await when(answers.answered + 40)
    phase = 'lock'
    const locker = new pg.Client({ connectionString: world.databaseUrl, application_name: 'fault-test' })
    await locker.connect()
    await locker.query('begin')
    await locker.query('lock table decisions in exclusive mode')
    await sleep(FAULT_MS)
    await locker.query('rollback')
    await locker.end()
    phase = undefined
  })()

  const posted = await postAll(makeEvents(EVENTS), {
    target: () => service.url,
    adminKey: world.adminKey,
    concurrency: 6,
    paceMs: 8,
    retryForMs: 30_000,
    retryDelayMs: 100,
    stopIf: () => !service.alive(),
    onAttempt: (_p, a) => {
      if (phase) during[phase].push(a)
      answers.answer()
    },
  })
  answers.releaseAll()
  if (!service.alive()) {
    t.fail(`a process died:\n${service.output()}`)
    return
  }
  await faults
  const { ledger: l, ms } = await untilDelivered(world.db, posted, 30_000)
  const counts = statusCounts(posted)
  const unavailable = posted.flatMap((p) => p.attempts).filter((a) => a.status === 503)
  const slowest = Math.max(...unavailable.map((a) => a.endedAt - a.startedAt))
  const n503 = (p: Phase) => during[p].filter((a) => a.status === 503).length
  say(
    ledgerLine('faults/postgres-slow', l, `503s: ${n503('disk-full')} disk full, ${n503('slow')} slow, ${n503('lock')} locked (slowest ${slowest} ms); ${JSON.stringify(counts)}; ${Date.now() - start} ms`),
  )

  t.ok(n503('disk-full') > 0, 'disk full: 503')
  // Each injection failed some ingest (a trigger that never fires proves nothing).
  const hits = { outbox: await diskFullHits('outbox'), commit: await diskFullHits('call_events') }
  t.ok(hits.outbox > 0 && hits.commit > 0, `disk full hit ingests at the outbox insert (${hits.outbox}) and at commit (${hits.commit})`)
  t.ok(n503('slow') > 0, 'statements past the timeout: 503')
  t.ok(n503('lock') > 0, 'waiting on a lock past the timeout: 503')
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
  t.ok(slowest < 5_000, `a time-out is answered promptly (slowest 503 in ${slowest} ms)`)
  t.equal(l.halfWritten, 0, 'nothing half-written: no call, event, decision or assignment without the rest of its ingest')
  t.equal(l.accepted, l.posted, 'every event got its 2xx in the end')
  t.equal(l.stored, l.posted, 'every accepted event stored')
  t.equal(l.delivered, l.assignments, `every assignment delivered (${ms} ms after the load)`)
  t.equal(l.duplicated, 0, 'nothing duplicated')
  t.equal(l.lost, 0, 'nothing lost')
  t.ok(service.alive(), 'the process is up')
})
