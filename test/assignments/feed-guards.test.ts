/**
 * What keeps an open stream honest: its start position as the connect block's id, a refusal for a
 * position ahead of the database, the end of a stream whose key changes, and the end of one whose
 * console stops reading. Heartbeats every 20 ms, so each check comes round quickly.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { assignmentStreams, feedData, type SseClient } from '../helpers/sse.js'
import { createWorld, eventually, say } from '../helpers/world.js'

const HEARTBEAT_MS = 20
const world = await createWorld(t, { env: { FEED_HEARTBEAT_MS: String(HEARTBEAT_MS) } })
const { app } = world
const base = await app.listen({ port: 0, host: '127.0.0.1' })
const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const admin = bearer(world.adminKey)

const stream = assignmentStreams(t, base)

/** The assignment ids of a new call. */
async function post(agency: string): Promise<string[]> {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ agency, natureCode: 'EDP' }) })
  if (res.statusCode !== 201) throw new Error(`call event answered ${res.statusCode}`)
  return (res.json() as { decision: { assignments: { id: string }[] } }).decision.assignments.map((a) => a.id)
}

/** True if `p` settles within `ms`. */
const within = (p: Promise<unknown>, ms: number): Promise<boolean> => Promise.race([p.then(() => true), sleep(ms).then(() => false)])

/** Waits for `n` more heartbeats on an open stream (each one also checks the key). */
async function heartbeats(s: SseClient, n: number): Promise<void> {
  const seen = s.comments.length
  await eventually(async () => s.comments.length >= seen + n, 5000, 5)
}

t.test('HEAD on the stream is not a stream: answered at once, and nothing stays open', async (t) => {
  // Fastify answers HEAD on every GET route by running the GET: on the stream that was an answer
  // with no body that never ended, holding a feed subscription for a client that reads nothing.
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = http.request(`${base}/v1/assignments/stream?agency=head-pd`, { method: 'HEAD', headers: admin }, resolve)
    req.on('error', reject)
    req.end()
  })
  const ended = once(res, 'end')
  res.resume()
  t.ok(await within(ended, 2000), `the answer ends (${res.statusCode})`)
  t.not(res.statusCode, 200, 'and is no stream')
})

t.test('the connect block carries the position the stream starts from', async (t) => {
  // The raw first block, as a browser's EventSource reads it.
  const first = await new Promise<string>((resolve, reject) => {
    const req = http.get(`${base}/v1/assignments/stream?agency=connect-pd`, { headers: admin }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
        if (text.includes('\n\n')) {
          req.destroy()
          resolve(text.slice(0, text.indexOf('\n\n')))
        }
      })
    })
    req.on('error', reject)
  })
  const id = /^id: (\d+-0)$/m.exec(first)?.[1]
  t.ok(id, `an id in the connect block: ${JSON.stringify(first)}`)
  // The console dropped before its first event; what happened meanwhile is not lost.
  const meanwhile = await post('connect-pd')
  const again = await stream({ ...admin, 'last-event-id': id! }, '?agency=connect-pd')
  t.same((await again.waitFor(meanwhile.length)).map((e) => feedData(e).assignmentId), meanwhile)
})

t.test('a position ahead of the database is refused before the stream starts', async (t) => {
  const xmax = BigInt((await world.pool.query<{ x: string }>('select pg_snapshot_xmax(pg_current_snapshot())::text as x')).rows[0]!.x)
  // As after a restore from a backup (transaction ids start again lower), or a bogus id.
  const ahead = `${xmax + 1_000_000n}-0`
  const viaHeader = await stream({ ...admin, 'last-event-id': ahead })
  t.equal(viaHeader.status, 400)
  t.match(viaHeader.headers['content-type'], /^application\/problem\+json/)
  t.match(JSON.parse(viaHeader.body!), { invalidParams: [{ name: 'headers.last-event-id' }] })
  const viaQuery = await stream(admin, `?lastEventId=${xmax + 1_000_000n}-5`)
  t.equal(viaQuery.status, 400)
  t.match(JSON.parse(viaQuery.body!), { invalidParams: [{ name: 'querystring.lastEventId' }] })
  t.equal((await stream(admin, '?lastEventId=99999999999999-1')).status, 400)

  // The head of the database is a real position (a listing's Feed-Position on a quiet database).
  const atHead = await stream({ ...admin, 'last-event-id': `${xmax}-0` })
  t.equal(atHead.status, 200)
  const ids = await post('hastings-pd')
  t.same((await atHead.waitFor(ids.length)).map((e) => feedData(e).assignmentId), ids)
  // And so is any event id the feed handed out.
  t.equal((await stream({ ...admin, 'last-event-id': atHead.events[0]!.id! })).status, 200)
})

t.test('a change of the key’s role or scope ends its open streams', async (t) => {
  const wide = await world.key('console', { agencies: ['hastings-pd', 'rosemount-pd'], name: 'wide-console' })
  const s = await stream(bearer(wide))
  const r1 = await post('rosemount-pd')
  t.same((await s.waitFor(r1.length)).map((e) => feedData(e).assignmentId), r1, 'Rosemount in scope at first')

  // What does not change what the key may see keeps the stream: a new name, the agencies reordered.
  await world.pool.query(`update api_keys set name = 'wide-console-renamed', agencies = '{rosemount-pd,hastings-pd}' where name = 'wide-console'`)
  await heartbeats(s, 4)
  t.notOk(await within(s.ended, 0), 'still open')

  await world.pool.query(`update api_keys set agencies = '{hastings-pd}' where name = 'wide-console-renamed'`)
  // 10 s: liveness (the stream's end is heard by NOTIFY or at a 20 ms heartbeat; a loaded machine
  // can pause the process for a second or more), not a race between the two.
  t.ok(await within(s.ended, 10_000), 'narrowed agencies: the stream ends')

  const roled = await world.key('console', { agencies: ['hastings-pd'], name: 'roled-console' })
  const s2 = await stream(bearer(roled))
  await heartbeats(s2, 2)
  await world.pool.query(`update api_keys set role = 'auditor' where name = 'roled-console'`)
  t.ok(await within(s2.ended, 10_000), 'another role: the stream ends')

  const queued = await world.key('console', { agencies: ['hastings-pd'], queues: ['cru'], name: 'queued-console' })
  const s3 = await stream(bearer(queued))
  await heartbeats(s3, 2)
  await world.pool.query(`update api_keys set queues = '{cru,police}' where name = 'queued-console'`)
  t.ok(await within(s3.ended, 10_000), 'other queues: the stream ends')
})

t.test('a console that stops reading is disconnected, with at most one drain listener', async (t) => {
  const warnings: string[] = []
  const onWarning = (w: Error) => warnings.push(w.name)
  process.on('warning', onWarning)
  t.teardown(() => process.off('warning', onWarning))
  // The server side of the stream, to watch its listeners.
  let serverRes: ServerResponse | undefined
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    if (req.url?.startsWith('/v1/assignments/stream')) serverRes = res
  }
  app.server.on('request', onRequest)
  t.teardown(() => app.server.off('request', onRequest))

  const req = http.get(`${base}/v1/assignments/stream`, { headers: admin })
  t.teardown(() => req.destroy())
  const [res] = (await once(req, 'response')) as [IncomingMessage]
  t.equal(res.statusCode, 200)
  res.pause() // and never reads: once its buffer is full, the socket is not read either
  const server = await eventually(async () => serverRes)
  const socket = server.socket
  const closed = once(server, 'close')
  let maxDrain = 0
  const sample = setInterval(() => (maxDrain = Math.max(maxDrain, server.listenerCount('drain'))), 5)
  t.teardown(() => clearInterval(sample))

  // Far more than the sockets' buffers hold, in pages under the 1 MiB at which a write disconnects.
  const [a] = await post('hastings-pd')
  await world.pool.query(
    `insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason)
     select $1, 'queued', 'queued', 'primary', 'bulk', lpad(g::text, 300, '.') from generate_series(1, 20000) g`,
    [a],
  )
  t.ok(await within(closed, 15_000), 'the server closed the stream')
  say(`${socket?.bytesWritten ?? 'n/a'} bytes written; at most ${maxDrain} drain listener(s)`)
  t.ok(maxDrain <= 1, `at most one drain listener (${maxDrain})`)
  t.notOk(warnings.includes('MaxListenersExceededWarning'), 'no listener leak warning')
})
