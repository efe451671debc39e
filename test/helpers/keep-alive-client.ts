import http from 'node:http'

export interface Answer {
  status: number
  /** The response's Connection header. */
  connection: string | undefined
  body: string
}

/**
 * A client as a CAD's: one connection, kept open for the next request (fetch's pool closes idle
 * connections on a timer of its own; this one keeps them until the server ends them).
 */
export function keepAliveClient(base: string, apiKey: string) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const send = (path: string, opts: { method?: string; body?: unknown } = {}) =>
    new Promise<Answer>((resolve, reject) => {
      const req = http.request(`${base}${path}`, {
        agent,
        method: opts.method ?? 'GET',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      })
      req.on('error', reject)
      req.on('response', (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }))
      })
      req.end(opts.body === undefined ? undefined : JSON.stringify(opts.body))
    })
  return { send, destroy: () => agent.destroy() }
}
