/**
 * Latency at a fixed rate (open loop, 200 events/s by default) against one API process and one
 * relay+worker process: ingest p50/p99 as the client sees it; POST → worker pickup (the `offered`
 * transition the worker writes, against the moment the POST left the client); and, when the API
 * has the live feed, POST answered → a console on GET /v1/assignments/stream seeing the assignment.
 * A responder console (lib/responder.ts) acknowledges the offers, as dispatch does; the cores each
 * process kept busy are printed beside the figures, since on a small machine they explain them.
 */
import { availableParallelism } from 'node:os'
import type pg from 'pg'
import { createEventStream } from './lib/events.js'
import { fixedRate, post, type Sent } from './lib/load.js'
import type { Row } from './lib/report.js'
import { respond, type Responder } from './lib/responder.js'
import { analyzeAfterWarmUp, cpuSecondsOf, deploy, postgresCpuSeconds, redisCpuSeconds } from './lib/service.js'
import { subscribe } from './lib/sse.js'
import { sleep, summarise } from './lib/stats.js'

export interface LatencyOptions {
  seconds: number
  rate: number
  /** Events of the one-at-a-time baseline (300: about 21 s at 10 ms an answer and 60 ms between them). */
  aloneEvents: number
  log: (line: string) => void
}

/** Waits until the workers have offered everything still queued (or `timeoutMs` passes). */
export async function drain(pool: pg.Pool, timeoutMs = 15_000): Promise<number> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const { rows } = await pool.query<{ n: string }>("select count(*) as n from assignments where status = 'queued'")
    const n = Number(rows[0]!.n)
    if (n === 0 || Date.now() > until) return n
    await sleep(200)
  }
}

/**
 * Assignments each event created, with when a worker offered them (epoch ms; null: never). Only
 * queued → offered is a delivery: a role change writes a transition that keeps the status.
 * Assignments an escalation created later carry the same decision; they are not the event's
 * (an offer the responder did not acknowledge in time escalates at its deadline, 30 s for police).
 */
export async function freshAssignments(pool: pg.Pool): Promise<{ eventId: string; id: string; status: string; offeredAt: number | null }[]> {
  const { rows } = await pool.query<{ event_id: string; id: string; status: string; offered_at: number | null }>(
    `select d.event_id, a.id, a.status, (select extract(epoch from min(t.at)) * 1000 from assignment_transitions t where t.assignment_id = a.id and t.from_status = 'queued' and t.to_status = 'offered')::float8 as offered_at
       from assignments a join decisions d on d.id = a.decision_id
      where a.escalated_from is null`,
  )
  return rows.map((r) => ({ eventId: r.event_id, id: r.id, status: r.status, offeredAt: r.offered_at === null ? null : Number(r.offered_at) }))
}

/**
 * The baseline: events sent one at a time, each `gapMs` after the previous one was answered, on a
 * service with nothing queued (see runLatency). What remains is the path's own length (HTTP, the
 * ingest transaction, the relay, the worker's offer), which no queueing explains. The responder
 * still acknowledges the baseline's own offers, 1–5 s later, about one request per event.
 */
export async function oneAtATime(url: string, key: string, opts: { count: number; gapMs: number; seed: number }): Promise<Sent[]> {
  const stream = createEventStream({ seed: opts.seed })
  const sent: Sent[] = []
  for (let i = 0; i < opts.count; i++) {
    sent.push(await post(url, key, stream.next()))
    await sleep(opts.gapMs)
  }
  return sent
}

type Fresh = Awaited<ReturnType<typeof freshAssignments>>

/**
 * The assignments of `sent`'s stored events, sorted: offered (with POST → offered and answer →
 * offered), cancelled by a close first, follow-ups reserved for later, and lost (anything else never offered).
 */
function deliveries(sent: Sent[], fresh: Fresh) {
  const byEvent = new Map<string, Sent>()
  for (const s of sent) if (s.status === 201) byEvent.set(s.body.eventId, s)
  const out = { all: [] as { id: string; sent: Sent }[], pickups: [] as number[], afterAnswer: [] as number[], offered: [] as { id: string; sent: Sent; offeredAt: number }[], cancelledFirst: 0, reserved: 0, lost: 0 }
  for (const a of fresh) {
    const s = byEvent.get(a.eventId)
    if (!s) continue // another phase's event, or one whose first post was not this list's
    out.all.push({ id: a.id, sent: s })
    if (a.offeredAt === null) {
      if (a.status === 'cancelled') out.cancelledFirst++
      // A closed mental-health call's follow-up is reserved until FOLLOW_UP_DUE_HOURS: not due in this run.
      else if (a.status === 'reserved') out.reserved++
      else out.lost++
    } else {
      out.pickups.push(a.offeredAt - s.sentAt)
      out.afterAnswer.push(a.offeredAt - s.answeredAt)
      out.offered.push({ id: a.id, sent: s, offeredAt: a.offeredAt })
    }
  }
  return out
}

/** The 2xx answers of `sent`, the rest counted as errors, and the ingest times of the 2xx. */
function answers(sent: Sent[]) {
  const ok = sent.filter((s) => s.status >= 200 && s.status < 300)
  return { ok, errors: sent.length - ok.length, ingest: summarise(ok.map((s) => s.answeredAt - s.sentAt)) }
}

function baselineOf(alone: Sent[], fresh: Fresh) {
  const { errors, ingest } = answers(alone)
  const d = deliveries(alone, fresh)
  return { errors, ingest, pickup: summarise(d.pickups), d }
}

/** The baseline's rows; `overlapped`: offers that landed after the next event had left (then something did wait). */
function baselineRows(bench: string, alone: Sent[], { errors, ingest, pickup, d }: ReturnType<typeof baselineOf>): Row[] {
  const nextLeft = new Map<Sent, number>()
  for (let i = 0; i + 1 < alone.length; i++) nextLeft.set(alone[i]!, alone[i + 1]!.sentAt)
  const overlapped = d.offered.filter((o) => o.offeredAt > (nextLeft.get(o.sent) ?? Infinity)).length
  const ms = (x: { p50: number; p90: number; p99: number }) => `${x.p50.toFixed(1)} / ${x.p90.toFixed(1)} / ${x.p99.toFixed(1)} ms`
  return [
    { bench, metric: `baseline, one event at a time (${ingest.n} events): ingest p50 / p90 / p99`, value: ms(ingest) },
    { bench, metric: `baseline, one event at a time: POST → worker pickup p50 / p90 / p99 (${pickup.n} assignments)`, value: ms(pickup) },
    { bench, metric: 'baseline: errors / assignments never offered / offers that landed after the next event left', value: `${errors} / ${d.lost} / ${overlapped}`, target: '0 / 0 / –', pass: errors === 0 && d.lost === 0 },
  ]
}

export function latencyRows(bench: string, sent: Sent[], fresh: Fresh, feed: Awaited<ReturnType<typeof subscribe>>, rate: number, alone?: Sent[]): Row[] {
  const { ok, errors, ingest } = answers(sent)
  const { all, pickups, afterAnswer, cancelledFirst, reserved, lost } = deliveries(sent, fresh)
  const consoles: number[] = []
  let notSeen = 0
  if (feed.available) {
    // Every assignment of the events, offered or not: its creation is on the feed too.
    for (const o of all) {
      const at = feed.seen.get(o.id)
      if (at === undefined) notSeen++
      // The feed may beat the HTTP answer to the client: that counts as 0.
      else consoles.push(Math.max(0, at - o.sent.answeredAt))
    }
  }
  const pickup = summarise(pickups)
  const consoleLat = summarise(consoles)
  const achieved = ok.length / ((Math.max(...sent.map((s) => s.sentAt)) - Math.min(...sent.map((s) => s.sentAt))) / 1000)
  // Baseline and ratio: how much of a p99 is the rate's queueing, how much the path itself.
  const against = (value: number, baseline: number | undefined) => (baseline === undefined ? {} : { baseline, ratio: value / baseline })
  const base = alone && baselineOf(alone, fresh)
  return [
    ...(alone && base ? baselineRows(bench, alone, base) : []),
    { bench, metric: `rate offered / achieved (target ${rate}/s)`, value: `${rate} / ${Math.round(achieved)}`, unit: 'ev/s' },
    { bench, metric: 'ingest p50', value: ingest.p50, unit: 'ms', ...against(ingest.p50, base?.ingest.p50) },
    { bench, metric: 'ingest p99', value: ingest.p99, unit: 'ms', ...against(ingest.p99, base?.ingest.p99), target: '≤ 15 ms', pass: ingest.p99 <= 15 },
    { bench, metric: 'errors (non-2xx, socket, time-out)', value: errors, target: '0', pass: errors === 0 },
    { bench, metric: `POST → worker pickup p50 (${pickup.n} assignments)`, value: pickup.p50, unit: 'ms', ...against(pickup.p50, base?.pickup.p50) },
    { bench, metric: 'POST → worker pickup p99', value: pickup.p99, unit: 'ms', ...against(pickup.p99, base?.pickup.p99), target: '≤ 25 ms', pass: pickup.p99 <= 25 },
    { bench, metric: 'POST answered → worker pickup p50 / p99 (negative: picked up before the answer arrived)', value: `${summarise(afterAnswer).p50.toFixed(1)} / ${summarise(afterAnswer).p99.toFixed(1)} ms` },
    { bench, metric: `assignments never offered (besides ${cancelledFirst} cancelled by a close first, ${reserved} follow-ups reserved for later)`, value: lost, target: '0', pass: lost === 0 },
    feed.available
      ? { bench, metric: `POST answered → console on the feed p99 (${consoleLat.n}; p50 ${consoleLat.p50.toFixed(1)} ms)`, value: consoleLat.p99, unit: 'ms', target: '≤ 50 ms', pass: consoleLat.p99 <= 50 && notSeen === 0 }
      : { bench, metric: `POST answered → console on the feed p99 (GET /v1/assignments/stream: ${feed.status || 'no answer'})`, value: 'n/a', target: '≤ 50 ms' },
    ...(feed.available ? [{ bench, metric: 'assignments the console never saw', value: notSeen, target: '0', pass: notSeen === 0 } as Row] : []),
  ]
}

/** Longer than the responder's 1–5 s wait before it acknowledges an offer. */
const RESPONDER_QUIET_MS = 5_500

export async function runLatency(opts: LatencyOptions): Promise<Row[]> {
  const d = await deploy('latency', { apis: 1, workers: 1 })
  let responder: Responder | undefined
  try {
    const url = d.apis[0]!.url!
    const feed = await subscribe(url, d.adminKey)
    responder = await respond(url, d.adminKey)
    opts.log(`  latency: live feed ${feed.available ? 'subscribed' : `not available (${feed.status || 'no answer'})`}; responder ${responder.available ? 'acknowledging offers' : 'not available'}`)
    const warm = Math.max(2, Math.round(opts.seconds / 6))
    opts.log(`  latency: warm-up ${warm} s, a baseline one event at a time, then ${opts.seconds} s at ${opts.rate}/s`)
    await fixedRate([url], d.adminKey, { rate: opts.rate, seconds: warm, seed: 21 })
    await analyzeAfterWarmUp(d.pool)
    // The baseline starts and ends on a quiet service: nothing queued, the responder done with the
    // offers before it (it acknowledges 1–5 s after each).
    await drain(d.pool)
    await sleep(RESPONDER_QUIET_MS)
    opts.log(`  latency: baseline, ${opts.aloneEvents} events one at a time`)
    const alone = await oneAtATime(url, d.adminKey, { count: opts.aloneEvents, gapMs: 60, seed: 23 })
    await drain(d.pool)
    await sleep(RESPONDER_QUIET_MS)
    const pids = { api: d.apis.map((p) => p.pid), worker: d.workers.map((p) => p.pid) }
    const cpu = () => ({ api: cpuSecondsOf(pids.api), worker: cpuSecondsOf(pids.worker), postgres: postgresCpuSeconds(), redis: redisCpuSeconds(), bench: cpuSecondsOf([process.pid]) })
    const cpu0 = cpu()
    const t0 = performance.now()
    const sent = await fixedRate([url], d.adminKey, { rate: opts.rate, seconds: opts.seconds, seed: 22 })
    const cpu1 = cpu()
    const seconds = (performance.now() - t0) / 1000
    const left = await drain(d.pool)
    if (left) opts.log(`  latency: ${left} assignments still queued after the drain`)
    await sleep(500) // the feed's last events
    responder.stop()
    feed.close()
    const rows = latencyRows('latency', sent, await freshAssignments(d.pool), feed, opts.rate, alone)
    const cores = (a: number | null, b: number | null): string => (a === null || b === null ? 'n/a' : ((b - a) / seconds).toFixed(2))
    const busy = [cores(cpu0.api, cpu1.api), cores(cpu0.worker, cpu1.worker), cores(cpu0.postgres, cpu1.postgres), cores(cpu0.redis, cpu1.redis), cores(cpu0.bench, cpu1.bench)]
    rows.push(
      { bench: 'latency', metric: 'offers acknowledged / refused by the responder console, 1–5 s after the offer (warm-up and baseline included)', value: `${responder.acknowledged()} / ${responder.failed()}` },
      { bench: 'latency', metric: `cores busy: API / worker / Postgres / Redis / load generator (of ${availableParallelism()})`, value: busy.join(' / ') },
    )
    for (const p of [...d.apis, ...d.workers]) if (p.output.length) opts.log(`  ${p.role} said: ${p.output.slice(-3).join(' | ')}`)
    return rows
  } finally {
    responder?.stop()
    await d.stop()
  }
}
