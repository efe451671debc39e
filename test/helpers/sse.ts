import http from 'node:http'

export interface SseEvent {
  id: string | undefined
  event: string | undefined
  data: string
}

export interface SseClient {
  status: number
  headers: http.IncomingHttpHeaders
  events: SseEvent[]
  comments: string[]
  /** Waits until at least `n` events have arrived in all; fails after `ms`. */
  waitFor(n: number, ms?: number): Promise<SseEvent[]>
  /** Resolves when the server ends the stream. */
  ended: Promise<void>
  /** Stops reading the socket (a console that cannot keep up) until resume(). */
  pause(): void
  resume(): void
  close(): void
  /** The answer's body, when it was not a stream (any status but 200). */
  body?: string
}

/** A minimal EventSource over real HTTP (the stream must go through a socket, not inject). */
export function openSse(url: string, headers: Record<string, string>): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      const events: SseEvent[] = []
      const comments: string[] = []
      let buffer = ''
      let body = ''
      const waiters = new Set<() => void>()
      res.setEncoding('utf8')
      let endResolve: () => void = () => {}
      const ended = new Promise<void>((r) => (endResolve = r))
      res.on('data', (chunk: string) => {
        if (res.statusCode !== 200) {
          body += chunk
          return
        }
        buffer += chunk
        let i: number
        while ((i = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, i)
          buffer = buffer.slice(i + 2)
          const ev: SseEvent = { id: undefined, event: undefined, data: '' }
          let hasData = false
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line.slice(1).trim())
            else if (line.startsWith('id: ')) ev.id = line.slice(4)
            else if (line.startsWith('event: ')) ev.event = line.slice(7)
            else if (line.startsWith('data: ')) {
              ev.data += (hasData ? '\n' : '') + line.slice(6)
              hasData = true
            }
          }
          if (hasData) events.push(ev)
        }
        for (const w of waiters) w()
      })
      res.on('end', () => endResolve())
      res.on('close', () => endResolve())
      res.on('error', () => endResolve())
      const client: SseClient = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        events,
        comments,
        ended,
        waitFor(n, ms = 5000) {
          if (events.length >= n) return Promise.resolve(events.slice(0, n))
          return new Promise((ok, fail) => {
            const check = () => {
              if (events.length >= n) {
                clearTimeout(timer)
                waiters.delete(check)
                ok(events.slice(0, n))
              }
            }
            const timer = setTimeout(() => {
              waiters.delete(check)
              fail(new Error(`expected ${n} events within ${ms} ms, got ${events.length}`))
            }, ms)
            waiters.add(check)
          })
        },
        pause: () => res.pause(),
        resume: () => res.resume(),
        close() {
          req.destroy()
        },
      }
      if (res.statusCode !== 200) {
        res.on('end', () => resolve(Object.assign(client, { body })))
        return
      }
      resolve(client)
    })
    req.on('error', (err) => reject(err))
  })
}

/**
 * Opens `GET /v1/assignments/stream` on the app listening at `base`; every stream opened is closed
 * when the test ends.
 */
export function assignmentStreams(t: { teardown(fn: () => void): void }, base: string) {
  const streams: SseClient[] = []
  t.teardown(() => streams.forEach((s) => s.close()))
  return async (headers: Record<string, string>, query = ''): Promise<SseClient> => {
    const s = await openSse(`${base}/v1/assignments/stream${query}`, headers)
    streams.push(s)
    return s
  }
}

export const feedData = (e: SseEvent) =>
  JSON.parse(e.data) as {
    assignmentId: string
    callId: string
    agency: string
    queue: string
    status: string
    transition: { from: string | null; to: string; role: string; actor: string; reason: string | null; at: string }
    assignment: { id: string; status: string; queue: string; agency: string }
  }
