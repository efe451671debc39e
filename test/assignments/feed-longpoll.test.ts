import { channel } from 'node:diagnostics_channel'
import t from 'tap'
import pg from 'pg'
import { callEvent } from '../helpers/events.js'
import { createWorld, eventually } from '../helpers/world.js'

const world = await createWorld(t)
const { app } = world
const hastings = `Bearer ${await world.key('console', { agencies: ['hastings-pd'] })}`

async function post(agency: string) {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ agency, natureCode: 'EDP' }) })
  if (res.statusCode !== 201) throw new Error(`call event answered ${res.statusCode}`)
  return (res.json() as { decision: { assignments: { id: string }[] } }).decision.assignments.map((a) => a.id)
}

const list = (headers: Record<string, string>, query = '') => app.inject({ method: 'GET', url: `/v1/assignments${query}`, headers: { authorization: hastings, ...headers } })

/**
 * Resolves once the long-poll `request` sent (one with `wait=` in its query, the only one in flight)
 * waits for a change: its handler has started (Fastify publishes each handler's start) and has since
 * given back a connection of the service's pool, that of its first read (it listens to the feed
 * before that read). Not a guessed sleep: on a loaded machine the first read may come late.
 */
async function waiting<T>(send: () => Promise<T>): Promise<{ answer: Promise<T> }> {
  const handlerStarted = channel('tracing:fastify.request.handler:start')
  let started = false
  let read = false
  const onStart = (m: unknown) => {
    if ((m as { request: { url: string } }).request.url.includes('wait=')) started = true
  }
  const onRelease = () => {
    if (started) read = true
  }
  handlerStarted.subscribe(onStart)
  world.pool.on('release', onRelease)
  try {
    const answer = send()
    answer.catch(() => {})
    await eventually(async () => read, 10_000, 5)
    return { answer }
  } finally {
    handlerStarted.unsubscribe(onStart)
    world.pool.off('release', onRelease)
  }
}

t.test('ETag and If-None-Match: 304 while the page is the same, 200 once it changes', async (t) => {
  await post('hastings-pd')
  const first = await list({})
  t.equal(first.statusCode, 200)
  const etag = first.headers.etag as string
  t.match(etag, /^"[A-Za-z0-9_-]+"$/)
  t.equal(first.headers['cache-control'], 'private, no-cache')

  const same = await list({ 'if-none-match': etag })
  t.equal(same.statusCode, 304)
  t.equal(same.body, '')
  t.equal(same.headers.etag, etag)
  t.equal((await list({ 'if-none-match': `"other", W/${etag}` })).statusCode, 304, 'a list of tags, weak or not')

  // Another agency's change does not change this console's page.
  await post('rosemount-pd')
  t.equal((await list({ 'if-none-match': etag })).statusCode, 304)

  const ids = await post('hastings-pd')
  const changed = await list({ 'if-none-match': etag })
  t.equal(changed.statusCode, 200)
  t.not(changed.headers.etag, etag)
  t.ok(ids.every((id) => (changed.json() as { items: { id: string }[] }).items.some((a) => a.id === id)))
  // Filters are part of the page: a different filter, a different tag.
  t.not((await list({}, '?queue=police')).headers.etag, changed.headers.etag)
})

t.test('long-poll: answers as soon as the page changes', async (t) => {
  const { headers } = await list({})
  const etag = headers.etag as string
  const started = Date.now()
  const waiting = list({ 'if-none-match': etag }, '?wait=20')
  await new Promise((r) => setTimeout(r, 300))
  const ids = await post('hastings-pd')
  const res = await waiting
  const took = Date.now() - started
  t.equal(res.statusCode, 200)
  // The wait is 20 s: an answer within 15 s is the change's doing, however slow a loaded CI machine is.
  t.ok(took < 15_000, `answered in ${took} ms, not at the end of the wait`)
  t.ok(took >= 300, 'not before the change')
  t.ok(ids.every((id) => (res.json() as { items: { id: string }[] }).items.some((a) => a.id === id)))
  t.not(res.headers.etag, etag)
})

t.test('long-poll: answers at once when the page already differs', async (t) => {
  const started = Date.now()
  const res = await list({ 'if-none-match': '"stale"' }, '?wait=20')
  t.equal(res.statusCode, 200)
  // Within 10 s of a 20 s wait: at once, not at its end (with room for a loaded CI machine).
  t.ok(Date.now() - started < 10_000)
})

t.test('long-poll: 304 when the wait ends without a change, and out-of-scope changes do not count', async (t) => {
  const { headers } = await list({})
  const etag = headers.etag as string
  const started = Date.now()
  const waiting = list({ 'if-none-match': etag }, '?wait=1')
  await new Promise((r) => setTimeout(r, 200))
  await post('rosemount-pd')
  const res = await waiting
  t.equal(res.statusCode, 304)
  t.ok(Date.now() - started >= 1000, 'waited the full second')
  t.equal(res.headers.etag, etag)
})

t.test('wait is bounded', async (t) => {
  const res = await list({ 'if-none-match': '"x"' }, '?wait=31')
  t.equal(res.statusCode, 400)
  t.equal(res.json().invalidParams[0].name, 'querystring.wait')
})

t.test("a woken long-poll reads on the feed's connections: it answers while ingest holds every connection of the service's pool", async (t) => {
  const [id] = await post('hastings-pd')
  const first = await list({})
  const etag = first.headers.etag as string
  // Every connection taken only once the long-poll has read its first page and waits.
  const { answer: polled } = await waiting(() => list({ 'if-none-match': etag }, '?wait=20'))
  const held = await Promise.all(Array.from({ length: world.pool.options.max }, () => world.pool.connect()))
  t.teardown(() => held.forEach((c) => c.release()))
  // The change comes from elsewhere (another API instance, a worker): a connection of its own.
  const other = new pg.Client({ connectionString: world.databaseUrl })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('begin')
  await other.query(`update assignments set status = 'acknowledged', updated_at = now() where id = $1`, [id])
  await other.query(`insert into assignment_transitions (assignment_id, from_status, to_status, role, actor) values ($1, 'queued', 'acknowledged', 'primary', 'desk-9')`, [id])
  await other.query('commit')
  const res = await polled
  t.equal(res.statusCode, 200, 'the new page, not a 503 after waiting for the pool')
  t.equal((res.json() as { items: { id: string; status: string }[] }).items.find((a) => a.id === id)?.status, 'acknowledged')
})

t.test('a key revoked or narrowed while its long-poll waits gets no new page: 401', async (t) => {
  for (const change of ['revoke', 'narrow'] as const) {
    const created = await app.inject({ method: 'POST', url: '/v1/keys', payload: { name: `waiting-${change}`, role: 'console', agencies: ['hastings-pd'] } })
    const { id, key } = created.json() as { id: string; key: string }
    const authorization = `Bearer ${key}`
    const first = await app.inject({ method: 'GET', url: '/v1/assignments', headers: { authorization } })
    t.equal(first.statusCode, 200)
    // The change comes while the request waits, not before its first read (which would simply see the changed key).
    const { answer } = await waiting(() => app.inject({ method: 'GET', url: '/v1/assignments?wait=20', headers: { authorization, 'if-none-match': first.headers.etag as string } }))
    if (change === 'revoke') t.equal((await app.inject({ method: 'POST', url: `/v1/keys/${id}/revoke` })).statusCode, 200)
    else await world.db.updateTable('api_keys').set({ queues: ['police'] }).where('id', '=', id).execute()
    const ids = await post('hastings-pd')
    const res = await answer
    t.equal(res.statusCode, 401, `${change}: the waiting request is refused`)
    t.notOk(ids.some((a) => res.body.includes(a)), `${change}: and carries nothing of the new call`)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="cad-router"')
  }
})

t.test('many long-polls waiting at once raise no listener-leak warning', async (t) => {
  const warnings: string[] = []
  const onWarning = (w: Error) => warnings.push(w.name)
  process.on('warning', onWarning)
  t.teardown(() => void process.off('warning', onWarning))
  const { headers } = await list({})
  const answers = await Promise.all(Array.from({ length: 15 }, () => list({ 'if-none-match': headers.etag as string }, '?wait=1')))
  t.same([...new Set(answers.map((a) => a.statusCode))], [304])
  await new Promise((r) => setImmediate(r))
  t.same(warnings, [], 'no MaxListenersExceededWarning')
})

// Last: it closes the app.
t.test('closing the service answers a waiting long-poll at once (304), so shutdown does not wait out the 30 s', async (t) => {
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  const { headers } = await list({})
  // Closed once the long-poll's handler runs (Fastify publishes each handler's start), not after a
  // guessed sleep: on a loaded machine the request may not have arrived yet.
  const handlerStarted = channel('tracing:fastify.request.handler:start')
  let arrived = false
  const onStart = (m: unknown) => {
    if ((m as { request: { url: string } }).request.url.includes('wait=30')) arrived = true
  }
  handlerStarted.subscribe(onStart)
  t.teardown(() => void handlerStarted.unsubscribe(onStart))
  const waiting = fetch(`${base}/v1/assignments?wait=30`, { headers: { authorization: hastings, 'if-none-match': headers.etag as string } })
  await eventually(async () => arrived, 10_000, 5)
  const started = Date.now()
  await world.close()
  const closeMs = Date.now() - started
  const res = await waiting
  t.equal(res.status, 304, 'the console is told nothing changed, and asks again (another instance)')
  // The long-poll would hold the close for its 30 s; 15 s leaves a loaded machine room to close the rest.
  t.ok(closeMs < 15_000, `the app closed in ${closeMs} ms`)
})
