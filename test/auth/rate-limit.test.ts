import t from 'tap'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t, { env: { RATE_LIMIT_PER_MINUTE: '5' } })

t.test('per-key rate limit: 429 with Retry-After, other keys unaffected, health stays open', async (t) => {
  const a = { authorization: `Bearer ${await world.key('console')}` }
  const b = { authorization: `Bearer ${await world.key('console')}` }
  const codes: number[] = []
  for (let i = 0; i < 7; i++) codes.push((await world.app.inject({ method: 'GET', url: '/v1/assignments', headers: a })).statusCode)
  t.same(codes, [200, 200, 200, 200, 200, 429, 429])
  const limited = await world.app.inject({ method: 'GET', url: '/v1/assignments', headers: a })
  t.equal(limited.json().code, 'rate-limited')
  t.equal(limited.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.ok(Number(limited.headers['retry-after']) > 0)
  t.equal((await world.app.inject({ method: 'GET', url: '/v1/assignments', headers: b })).statusCode, 200)
  for (let i = 0; i < 8; i++) t.equal((await world.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)
})
