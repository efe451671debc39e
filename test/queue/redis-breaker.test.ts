/**
 * The breaker on its own, against a stand-in connection whose PING the test answers or not: what
 * test/calls/redis-hung.test.ts cannot arrange with a real Redis — requests that arrive while the
 * first is still waiting, an error Redis sends back, a connection that comes back after a disconnect.
 */
import { EventEmitter, once } from 'node:events'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import type { Redis } from 'ioredis'
import { createRedisBreaker, RedisUnavailable, type RedisBreakerState } from '../../src/queue/redis-breaker.js'

const TIMEOUT_MS = 300

interface Tap {
  teardown(fn: () => unknown): void
}

/** A connection whose PINGs wait until the test answers them (or never). */
class StandIn extends EventEmitter {
  pings = 0
  private waiting: { resolve: (v: string) => void; reject: (e: Error) => void }[] = []
  ping(): Promise<string> {
    this.pings++
    this.emit('pinged')
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }))
  }
  answer(): void {
    for (const w of this.waiting.splice(0)) w.resolve('PONG')
  }
  refuse(): void {
    for (const w of this.waiting.splice(0)) w.reject(new Error('Connection is closed.'))
  }
}

function world(t: Tap, openMs: number) {
  const redis = new StandIn()
  const logged: { level: 'warn' | 'info'; msg: string }[] = []
  const changes = new EventEmitter()
  const breaker = createRedisBreaker({
    redis: redis as unknown as Redis,
    timeoutMs: TIMEOUT_MS,
    openMs,
    log: { warn: (_o, msg) => logged.push({ level: 'warn', msg }), info: (_o, msg) => logged.push({ level: 'info', msg }) },
    onChange: (state) => changes.emit(state),
  })
  t.teardown(() => breaker.stop())
  const becomes = (state: RedisBreakerState) => once(changes, state)
  return { redis, breaker, logged, becomes }
}

const never = () => new Promise<string>(() => {})
const replyError = () => Object.assign(new Error('WRONGTYPE Operation against a key holding the wrong kind of value'), { name: 'ReplyError' })

t.test('the first command Redis fails to answer opens it, releasing at once the others still waiting', async (t) => {
  const { breaker, logged } = world(t, 60_000)
  const ended: number[] = []
  const first = breaker.run(never).finally(() => ended.push(performance.now()))
  // Sent two thirds of a time-out later, while the first still waits: without the release it would
  // end that much after the first, when its own time-out ran out.
  await new Promise((r) => setTimeout(r, (TIMEOUT_MS * 2) / 3))
  const second = breaker.run(never).finally(() => ended.push(performance.now()))
  await t.rejects(first, /no answer from Redis within 300 ms/)
  await t.rejects(second, RedisUnavailable)
  const gap = ended[1]! - ended[0]!
  // Released together, in one turn of the event loop; without the release it would end 200 ms later.
  // A third of a time-out (was a sixth) leaves a loaded machine's pauses room and still tells them apart.
  t.ok(gap < TIMEOUT_MS / 3, `the second ended with the first (${gap.toFixed(1)} ms after it), not ${(TIMEOUT_MS * 2) / 3} ms later`)
  t.equal(breaker.state, 'open')

  let asked = false
  const refusedAt = performance.now()
  await t.rejects(
    breaker.run(async () => {
      asked = true
      return 'x'
    }),
    RedisUnavailable,
  )
  t.notOk(asked, 'while open, a command is not sent')
  // At once: a command sent would wait its time-out (300 ms); half of it leaves a loaded machine room.
  const refusedMs = performance.now() - refusedAt
  t.ok(refusedMs < TIMEOUT_MS / 2, `and the refusal is at once (${refusedMs.toFixed(1)} ms)`)
  t.same(logged.map((l) => l.level), ['warn'], 'the opening logged once')
})

t.test('an error Redis sends back says nothing of its answering: the breaker stays closed', async (t) => {
  const { breaker } = world(t, 60_000)
  await t.rejects(breaker.run(() => Promise.reject(replyError())), /WRONGTYPE/)
  t.equal(breaker.state, 'closed')
  t.equal(await breaker.run(async () => 'ok'), 'ok')
})

t.test('a lost connection opens it too', async (t) => {
  const { breaker } = world(t, 60_000)
  await t.rejects(breaker.run(() => Promise.reject(new Error("Stream isn't writeable and enableOfflineQueue options is false"))))
  t.equal(breaker.state, 'open')
})

t.test('half-open: its own PING after the open spell; no answer keeps it open, an answer closes it; requests never wait on the probe', async (t) => {
  const { redis, breaker, logged, becomes } = world(t, 50)
  await t.rejects(breaker.run(() => Promise.reject(new Error('Connection is closed.'))))

  // First probe: no answer within the time-out.
  await becomes('half-open')
  t.equal(redis.pings, 1, 'one PING')
  const during = performance.now()
  await t.rejects(breaker.run(async () => 'x'), RedisUnavailable, 'a request during the probe does not wait for it')
  // (The probe waits up to its time-out, 300 ms: half of it tells the two apart.)
  const duringMs = performance.now() - during
  t.ok(duringMs < TIMEOUT_MS / 2, `refused in ${duringMs.toFixed(1)} ms`)
  await becomes('open')
  t.equal(breaker.state, 'open', 'no answer: open again')

  // Second probe: answered.
  await becomes('half-open')
  redis.answer()
  await becomes('closed')
  t.equal(await breaker.run(async () => 'ok'), 'ok', 'commands go to Redis again')
  t.same(
    logged.map((l) => l.level),
    ['warn', 'info'],
    'one line for the opening, one for the closing, none for the probe that failed',
  )
})

t.test('a connection ready again is asked at once, not at the end of the spell', async (t) => {
  const { redis, breaker, becomes } = world(t, 60_000)
  await t.rejects(breaker.run(() => Promise.reject(new Error('Connection is closed.'))))
  t.equal(redis.pings, 0)
  const pinged = once(redis, 'pinged')
  redis.emit('ready')
  await pinged
  redis.answer()
  await becomes('closed')
  t.equal(breaker.state, 'closed')
})

t.test('stopped, it probes no more', async (t) => {
  const { redis, breaker } = world(t, 20)
  await t.rejects(breaker.run(() => Promise.reject(new Error('Connection is closed.'))))
  breaker.stop()
  redis.emit('ready')
  // Nothing to wait for: what is shown is that nothing comes, over five open spells.
  await new Promise((r) => setTimeout(r, 100))
  t.equal(redis.pings, 0)
  redis.refuse()
})

t.test('while closed, a settled command leaves nothing behind: the breaker holds no reference to it (no growth per request)', async (t) => {
  const { setFlagsFromString } = await import('node:v8')
  const { runInNewContext } = await import('node:vm')
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const { breaker } = world(t, 60_000)
  const refs: WeakRef<object>[] = []
  for (let i = 0; i < 100; i++) {
    const value = { current: i, ttl: 60_000 }
    refs.push(new WeakRef(value))
    await breaker.run(async () => value)
  }
  // Let the settled commands' reactions run, then collect.
  await new Promise((r) => setImmediate(r))
  gc()
  await new Promise((r) => setImmediate(r))
  gc()
  const alive = refs.filter((r) => r.deref() !== undefined).length
  t.equal(alive, 0, `${alive} of 100 answered commands still reachable from the breaker while it stays closed`)
  t.equal(breaker.state, 'closed')
})
