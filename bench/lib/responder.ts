/**
 * A responder console, as dispatch has: on the live feed, each assignment shown `offered` is
 * acknowledged through the API 1–5 s later. Without one, every police and EMS offer expires at its
 * deadline and is offered again, every 30 s until its call closes: a workload that grows for as
 * long as the run lasts, and one no center has.
 */
import http from 'node:http'
import { subscribe } from './sse.js'

export interface Responder {
  available: boolean
  acknowledged(): number
  /** Refused (the assignment moved on meanwhile) or failed. */
  failed(): number
  stop(): void
}

export async function respond(url: string, key: string): Promise<Responder> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
  const timers = new Set<NodeJS.Timeout>()
  let acknowledged = 0
  let failed = 0
  let stopped = false
  const ack = (id: string): void => {
    const req = http.request(`${url}/v1/assignments/${id}/acknowledge`, { method: 'POST', agent, headers: { authorization: `Bearer ${key}` } }, (res) => {
      res.resume()
      if (res.statusCode === 200) acknowledged++
      else failed++
    })
    req.on('error', () => failed++)
    req.end()
  }
  const feed = await subscribe(url, key, 5000, (data) => {
    if (stopped) return
    let event: { assignmentId?: string; status?: string }
    try {
      event = JSON.parse(data) as typeof event
    } catch {
      return
    }
    if (event.status !== 'offered' || !event.assignmentId) return
    const id = event.assignmentId
    const timer = setTimeout(() => {
      timers.delete(timer)
      ack(id)
    }, 1000 + Math.random() * 4000)
    timers.add(timer)
  })
  return {
    available: feed.available,
    acknowledged: () => acknowledged,
    failed: () => failed,
    stop() {
      stopped = true
      for (const t of timers) clearTimeout(t)
      feed.close()
      agent.destroy()
    },
  }
}
