/**
 * Soak: a fixed rate (200 events/s) for BENCH_SOAK_SECONDS (600 by default) against one API and one
 * relay+worker process. RSS of both processes (from /proc) and the API's event-loop delay (p99 from
 * its /metrics) are compared between the start (10–25 % into the run, after warm-up) and the end
 * (the last 15 %); the outbox lag (age of the oldest unsent row) is sampled every second.
 */
import { fixedRate } from './lib/load.js'
import type { Row } from './lib/report.js'
import { deploy, rssOf, scrapeMetric } from './lib/service.js'
import { summarise } from './lib/stats.js'
import { drain } from './latency.js'

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
}

async function eventLoopP99(url: string, key: string): Promise<number | undefined> {
  const seconds = await scrapeMetric(url, key, 'cad_router_nodejs_eventloop_lag_p99_seconds')
  return seconds === undefined ? undefined : seconds * 1000
}

const mean = (xs: (number | undefined)[]): number => {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x))
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN
}

export async function runSoak(opts: SoakOptions): Promise<Row[]> {
  const d = await deploy('soak', { apis: 1, workers: 1 })
  try {
    const api = d.apis[0]!
    const worker = d.workers[0]!
    const samples: Sample[] = []
    let scraping = false
    let lastScrape = -Infinity
    // /metrics runs queries of its own over growing tables: every 5 s on a long soak, so the probe
    // does not become the load (every second on a short run, to have samples at all).
    const scrapeEvery = opts.seconds >= 100 ? 5 : 1
    const onTick = async (t: number): Promise<void> => {
      const s: Sample = { t, apiRss: rssOf(api.pid), workerRss: rssOf(worker.pid) }
      samples.push(s)
      const { rows } = await d.pool.query<{ lag: number | null }>('select (extract(epoch from now() - min(created_at)) * 1000)::float8 as lag from outbox where sent_at is null')
      s.outboxLag = rows[0]?.lag ?? 0
      if (!scraping && t - lastScrape >= scrapeEvery) {
        scraping = true
        lastScrape = t
        s.loopP99 = await eventLoopP99(api.url!, d.adminKey).finally(() => (scraping = false))
      }
    }
    opts.log(`  soak: ${opts.seconds} s at ${opts.rate}/s`)
    const sent = await fixedRate([api.url!], d.adminKey, { rate: opts.rate, seconds: opts.seconds, seed: 31, onTick })
    await drain(d.pool)
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
    const ingest = summarise(ok.map((s) => s.answeredAt - s.sentAt))
    const MB = 2 ** 20
    const pct = (g: number): string => `${g >= 0 ? '+' : ''}${(100 * g).toFixed(1)}%`
    return [
      { bench: 'soak', metric: `${Math.round(T)} s at ${opts.rate}/s: events posted / errors`, value: `${sent.length} / ${errors}`, target: '0 errors', pass: errors === 0 },
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
    ]
  } finally {
    await d.stop()
  }
}
