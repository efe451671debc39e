/**
 * Soak: a fixed rate (200 events/s) for BENCH_SOAK_SECONDS (600 by default) against one API and one
 * relay+worker process. RSS of both processes (from /proc) and the API's event-loop delay (p99 from
 * its /metrics) are compared between the start (10–25 % into the run, after warm-up) and the end
 * (the last 15 %); the outbox lag (age of the oldest unsent row) is sampled every second.
 *
 * A responder console (lib/responder.ts) acknowledges what is offered, as dispatch does.
 */
import { fixedRate, type Sent } from './lib/load.js'
import type { Row } from './lib/report.js'
import { analyzeAfterWarmUp, cpuSecondsOf, deploy, postgresCpuSeconds, rssOf, scrapeMetric } from './lib/service.js'
import { summarise } from './lib/stats.js'
import { drain } from './latency.js'
import { respond, type Responder } from './lib/responder.js'

export interface SoakOptions {
  seconds: number
  rate: number
  log: (line: string) => void
}

interface Sample {
  t: number // seconds into the run
  apiRss?: number
  workerRss?: number
  loopP99?: number // ms
  outboxLag?: number // ms
  /** CPU seconds used so far (taken with the /metrics scrape). */
  cpu?: { api: number; worker: number; postgres: number | null }
}

/** One tenth of the soak: whether it drifts or only has bad moments shows here, not in start vs end. */
export interface SoakWindow {
  from: number // s
  to: number // s
  /** Requests sent in the window and answered with a 2xx (whenever the answer came), per second. */
  answeredPerSecond: number
  ingestP50: number // ms, of the requests sent in the window
  ingestP99: number
  outboxLagMax: number // ms
  apiRssMb: number
  workerRssMb: number
  apiLoopP99: number // ms
  /** Cores busy on average: API, worker, Postgres (NaN where not measured). */
  cores: { api: number; worker: number; postgres: number }
}

async function eventLoopP99(url: string, key: string): Promise<number | undefined> {
  const seconds = await scrapeMetric(url, key, 'cad_router_nodejs_eventloop_lag_p99_seconds')
  return seconds === undefined ? undefined : seconds * 1000
}

const mean = (xs: (number | undefined)[]): number => {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x))
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN
}

export async function runSoak(opts: SoakOptions): Promise<{ rows: Row[]; timeline: SoakWindow[] }> {
  const d = await deploy('soak', { apis: 1, workers: 1 })
  let responder: Responder | undefined
  try {
    const api = d.apis[0]!
    const worker = d.workers[0]!
    const samples: Sample[] = []
    let scraping = false
    let lastScrape = -Infinity
    // /metrics runs queries of its own over growing tables: every 5 s on a long soak, so the probe
    // does not become the load (every second on a short run, to have samples at all).
    const scrapeEvery = opts.seconds >= 100 ? 5 : 1
    let analyzed = false
    const onTick = async (t: number): Promise<void> => {
      // The soak has no separate warm-up: its first seconds are one.
      if (!analyzed && t >= 5) {
        analyzed = true
        analyzeAfterWarmUp(d.pool).catch((err: Error) => opts.log(`  soak: ANALYZE failed (${err.message}); plans stay as cached`))
      }
      const s: Sample = { t, apiRss: rssOf(api.pid), workerRss: rssOf(worker.pid) }
      samples.push(s)
      const { rows } = await d.pool.query<{ lag: number | null }>('select (extract(epoch from now() - min(created_at)) * 1000)::float8 as lag from outbox where sent_at is null')
      s.outboxLag = rows[0]?.lag ?? 0
      if (!scraping && t - lastScrape >= scrapeEvery) {
        scraping = true
        lastScrape = t
        s.cpu = { api: cpuSecondsOf([api.pid]), worker: cpuSecondsOf([worker.pid]), postgres: postgresCpuSeconds() }
        s.loopP99 = await eventLoopP99(api.url!, d.adminKey).finally(() => (scraping = false))
      }
    }
    // Growth over a soak depends on it: without autovacuum, updated tables and partial indexes fill with dead rows.
    const autovacuum = (await d.pool.query<{ autovacuum: string }>('show autovacuum')).rows[0]?.autovacuum
    responder = await respond(api.url!, d.adminKey)
    opts.log(`  soak: ${opts.seconds} s at ${opts.rate}/s; responder on the live feed ${responder.available ? 'acknowledging offers' : 'not available'}; Postgres autovacuum ${autovacuum}`)
    const sent = await fixedRate([api.url!], d.adminKey, { rate: opts.rate, seconds: opts.seconds, seed: 31, onTick })
    await drain(d.pool)
    responder.stop()
    opts.log(`  soak: responder acknowledged ${responder.acknowledged()} offers (${responder.failed()} refused: moved on meanwhile, or errors)`)
    const T = opts.seconds // samples are taken while sending
    const start = samples.filter((s) => s.t >= 0.1 * T && s.t <= 0.25 * T)
    const end = samples.filter((s) => s.t >= 0.85 * T)
    const growth = (a: number, b: number): number => b / a - 1
    const apiStart = mean(start.map((s) => s.apiRss))
    const apiEnd = mean(end.map((s) => s.apiRss))
    const wStart = mean(start.map((s) => s.workerRss))
    const wEnd = mean(end.map((s) => s.workerRss))
    const loops = samples.filter((s) => s.loopP99 !== undefined)
    const loopStart = mean(start.map((s) => s.loopP99))
    // A short run may have no scrape in its last stretch: then the last one taken.
    const loopEnd = end.some((s) => s.loopP99 !== undefined) ? mean(end.map((s) => s.loopP99)) : (loops.at(-1)?.loopP99 ?? NaN)
    const maxLag = Math.max(0, ...samples.map((s) => s.outboxLag ?? 0))
    const ok = sent.filter((s) => s.status >= 200 && s.status < 300)
    const errors = sent.length - ok.length
    // What the errors were: a status (503 under overload) or 0 for no answer (socket, time-out).
    const kinds = new Map<string, number>()
    for (const e of sent) {
      if (e.status >= 200 && e.status < 300) continue
      const kind = e.status ? String(e.status) : (e.error ?? 'no answer')
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
    }
    const ingest = summarise(ok.map((s) => s.answeredAt - s.sentAt))
    const MB = 2 ** 20
    const timeline = windows(T, samples, ok)
    for (const w of timeline) {
      opts.log(
        `  soak ${w.from.toFixed(0).padStart(4)}–${w.to.toFixed(0).padEnd(4)} s: ${w.answeredPerSecond.toFixed(0)}/s sent and answered, ingest p50/p99 of those ${w.ingestP50.toFixed(0)}/${w.ingestP99.toFixed(0)} ms, ` +
          `lag max ${w.outboxLagMax.toFixed(0)} ms, RSS API/worker ${w.apiRssMb.toFixed(0)}/${w.workerRssMb.toFixed(0)} MB, loop p99 ${w.apiLoopP99.toFixed(1)} ms, ` +
          `cores API/worker/Postgres ${w.cores.api.toFixed(2)}/${w.cores.worker.toFixed(2)}/${w.cores.postgres.toFixed(2)}`,
      )
    }
    const pct = (g: number): string => `${g >= 0 ? '+' : ''}${(100 * g).toFixed(1)}%`
    const rows: Row[] = [
      { bench: 'soak', metric: `${Math.round(T)} s at ${opts.rate}/s: events posted / errors`, value: `${sent.length} / ${errors}${kinds.size ? ` (${[...kinds].map(([k, n]) => `${k} ×${n}`).join(', ')})` : ''}`, target: '0 errors', pass: errors === 0 },
      { bench: 'soak', metric: `API RSS start → end (${(apiStart / MB).toFixed(0)} → ${(apiEnd / MB).toFixed(0)} MB)`, value: pct(growth(apiStart, apiEnd)), target: '≤ +5%', pass: growth(apiStart, apiEnd) <= 0.05 },
      { bench: 'soak', metric: `worker RSS start → end (${(wStart / MB).toFixed(0)} → ${(wEnd / MB).toFixed(0)} MB)`, value: pct(growth(wStart, wEnd)), target: '≤ +5%', pass: growth(wStart, wEnd) <= 0.05 },
      {
        bench: 'soak',
        metric: `API event-loop delay p99 start → end (${loopStart.toFixed(1)} → ${loopEnd.toFixed(1)} ms)`,
        value: pct(growth(loopStart, loopEnd)),
        target: '≤ +5%',
        pass: Number.isFinite(loopStart) ? growth(loopStart, loopEnd) <= 0.05 : undefined,
      },
      { bench: 'soak', metric: 'outbox lag, max of per-second samples', value: maxLag, unit: 'ms', target: '≤ 1000 ms', pass: maxLag <= 1000 },
      { bench: 'soak', metric: 'ingest p50 / p99 over the soak', value: `${ingest.p50.toFixed(1)} / ${ingest.p99.toFixed(1)} ms` },
      { bench: 'soak', metric: 'offers acknowledged by the responder console (1–5 s after the offer)', value: responder.acknowledged() },
    ]
    return { rows, timeline }
  } finally {
    responder?.stop()
    await d.stop()
  }
}

function windows(T: number, samples: Sample[], answered: Sent[]): SoakWindow[] {
  const out: SoakWindow[] = []
  const first = answered.reduce((m, s) => Math.min(m, s.sentAt), Infinity)
  const step = T / 10
  for (let from = 0; from < T - 1e-9; from += step) {
    const to = from + step
    const inWindow = samples.filter((s) => s.t >= from && s.t < to)
    const sent = answered.filter((s) => (s.sentAt - first) / 1000 >= from && (s.sentAt - first) / 1000 < to)
    const latency = summarise(sent.map((s) => s.answeredAt - s.sentAt))
    // From the last CPU reading before the window (or its first) to the last one in it.
    const withCpu = samples.filter((s) => s.cpu && s.t < to)
    const a = withCpu.filter((s) => s.t <= from).at(-1) ?? withCpu.find((s) => s.t >= from)
    const b = withCpu.at(-1)
    const cores = (pick: (c: NonNullable<Sample['cpu']>) => number | null): number => {
      if (!a?.cpu || !b?.cpu || b.t === a.t) return NaN
      const x = pick(a.cpu)
      const y = pick(b.cpu)
      return x === null || y === null ? NaN : (y - x) / (b.t - a.t)
    }
    out.push({
      from,
      to,
      answeredPerSecond: sent.length / step,
      ingestP50: latency.p50,
      ingestP99: latency.p99,
      outboxLagMax: Math.max(0, ...inWindow.map((s) => s.outboxLag ?? 0)),
      apiRssMb: mean(inWindow.map((s) => s.apiRss)) / 2 ** 20,
      workerRssMb: mean(inWindow.map((s) => s.workerRss)) / 2 ** 20,
      apiLoopP99: mean(inWindow.map((s) => s.loopP99)),
      cores: { api: cores((c) => c.api), worker: cores((c) => c.worker), postgres: cores((c) => c.postgres) },
    })
  }
  return out
}
