/** Load generators: autocannon for closed-loop throughput, a small open-loop sender for fixed rates. */
import http from 'node:http'
import autocannon from 'autocannon'
import { createEventStream, type CallEventBody } from './events.js'
import { epochMs, sleep } from './stats.js'

export interface ThroughputResult {
  seconds: number
  ok: number
  non2xx: number
  errors: number
  timeouts: number
  perSecond: number
  latencyP50: number
  latencyP99: number
}

/** Sustained POST /v1/call-events from `connections` keep-alive clients, each body a fresh event of the mix. */
export async function hammer(url: string, key: string, opts: { connections: number; seconds: number; seed?: number }): Promise<ThroughputResult> {
  const stream = createEventStream({ seed: opts.seed ?? 1 })
  const result = await autocannon({
    url,
    connections: opts.connections,
    duration: opts.seconds,
    pipelining: 1,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        path: '/v1/call-events',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        setupRequest: (req) => ({ ...req, body: JSON.stringify(stream.next()) }),
      },
    ],
  })
  const ok = result['2xx']
  return {
    seconds: result.duration,
    ok,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    perSecond: ok / result.duration,
    latencyP50: result.latency.p50,
    latencyP99: result.latency.p99,
  }
}

export interface Sent {
  body: CallEventBody
  sentAt: number // epoch ms
  answeredAt: number
  status: number
  /** Assignment ids of the decision in the answer. */
  assignmentIds: string[]
  error?: string
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })

export function post(url: string, key: string, body: CallEventBody): Promise<Sent> {
  const payload = JSON.stringify(body)
  return new Promise((resolve) => {
    const sentAt = epochMs()
    const req = http.request(
      `${url}/v1/call-events`,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), authorization: `Bearer ${key}` } },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const answeredAt = epochMs()
          let assignmentIds: string[] = []
          try {
            const json = JSON.parse(Buffer.concat(chunks).toString()) as { decision?: { assignments?: { id: string }[] } }
            assignmentIds = json.decision?.assignments?.map((a) => a.id) ?? []
          } catch {
            // a problem+json or an empty body: counted by status
          }
          resolve({ body, sentAt, answeredAt, status: res.statusCode ?? 0, assignmentIds })
        })
      },
    )
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')))
    req.on('error', (err) => resolve({ body, sentAt, answeredAt: epochMs(), status: 0, assignmentIds: [], error: err.message }))
    req.end(payload)
  })
}

/**
 * Open loop at a fixed rate: requests leave on schedule whether or not earlier ones have answered
 * (a slow service cannot slow the load down). `onTick` runs about once a second.
 */
export async function fixedRate(
  urls: string[],
  key: string,
  opts: { rate: number; seconds: number; seed?: number; onTick?: (elapsedS: number) => void | Promise<void> },
): Promise<Sent[]> {
  const stream = createEventStream({ seed: opts.seed ?? 2 })
  const total = Math.round(opts.rate * opts.seconds)
  const interval = 1000 / opts.rate
  const inflight: Promise<Sent>[] = []
  const start = performance.now()
  let nextTick = 1000
  for (let i = 0; i < total; i++) {
    const due = start + i * interval
    const wait = due - performance.now()
    if (wait > 1) await sleep(wait)
    inflight.push(post(urls[i % urls.length]!, key, stream.next()))
    const elapsed = performance.now() - start
    if (opts.onTick && elapsed >= nextTick) {
      nextTick += 1000
      // A failed probe must not end the run: the sample is simply missing.
      Promise.resolve(opts.onTick(elapsed / 1000)).catch(() => {})
    }
  }
  return Promise.all(inflight)
}
