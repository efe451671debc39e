/**
 * A console on the live feed (GET /v1/assignments/stream, Server-Sent Events): records when each
 * assignment id is first seen in an event's data. Tolerant of the payload's shape — any UUID in
 * the data counts — and of the route not existing (404: `available` is false).
 */
import http from 'node:http'
import { epochMs } from './stats.js'

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi

export interface Feed {
  available: boolean
  status: number
  /** assignment id → epoch ms of the first event naming it */
  seen: Map<string, number>
  events: number
  close(): void
}

/** `onData`: called with each event's data (JSON text), for a console that acts on what it sees. */
export function subscribe(url: string, key: string, timeoutMs = 5000, onData?: (data: string) => void): Promise<Feed> {
  return new Promise((resolve) => {
    const seen = new Map<string, number>()
    let events = 0
    const req = http.get(`${url}/v1/assignments/stream`, { headers: { accept: 'text/event-stream', authorization: `Bearer ${key}` } }, (res) => {
      const status = res.statusCode ?? 0
      const type = String(res.headers['content-type'] ?? '')
      if (status !== 200 || !type.includes('text/event-stream')) {
        res.resume()
        req.destroy()
        return resolve({ available: false, status, seen, events, close: () => {} })
      }
      res.setEncoding('utf8')
      let buffer = ''
      res.on('data', (chunk: string) => {
        const now = epochMs()
        buffer += chunk
        let end: number
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '')
          const data = block
            .split(/\r?\n/)
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5))
            .join('\n')
          if (!data) continue
          events++
          onData?.(data)
          for (const id of data.match(UUID) ?? []) if (!seen.has(id.toLowerCase())) seen.set(id.toLowerCase(), now)
        }
      })
      resolve({ available: true, status, seen, get events() { return events }, close: () => req.destroy() })
    })
    req.on('error', () => resolve({ available: false, status: 0, seen, events, close: () => {} }))
    req.on('response', () => clearTimeout(timer))
    // No answer in time: unavailable. Once it streams, the connection may idle as long as it likes.
    const timer = setTimeout(() => req.destroy(new Error('no answer')), timeoutMs)
  })
}
