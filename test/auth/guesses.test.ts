import t from 'tap'
import { randomBytes } from 'node:crypto'
import { createGuessLimiter } from '../../src/auth/guesses.js'
import { createWorld } from '../helpers/world.js'

// A short cache, so a known key's entry lapses between requests and has to be looked up again.
const world = await createWorld(t, { env: { AUTH_UNKNOWN_KEYS_PER_MINUTE: '5', AUTH_CACHE_MS: '1' } })
const { app } = world
const unknownKey = () => `cadr_${randomBytes(32).toString('base64url')}`
const get = (key: string, remoteAddress = '127.0.0.1') => app.inject({ method: 'GET', url: '/v1/assignments', remoteAddress, headers: { authorization: `Bearer ${key}` } })

t.test('an address that keeps presenting unknown keys gets 429 for keys the process does not know; known keys pass', async (t) => {
  const cad = await world.key('console', { agencies: ['hastings-pd'] })
  t.equal((await get(cad)).statusCode, 200, 'a console key, seen valid once')
  for (let i = 0; i < 5; i++) t.equal((await get(unknownKey())).statusCode, 401, `unknown key ${i + 1}: looked up, refused`)
  const stopped = await get(unknownKey())
  t.equal(stopped.statusCode, 429, 'the sixth in the minute is not looked up')
  t.equal(stopped.json().code, 'rate-limited')
  const wait = Number(stopped.headers['retry-after'])
  t.ok(wait >= 1 && wait <= 60, `Retry-After ${wait} s: until the minute is over`)

  await new Promise((r) => setTimeout(r, 20))
  t.equal((await get(cad)).statusCode, 200, 'the known key passes, although its cache entry lapsed and it is looked up again')
  const fresh = await world.key('console', { agencies: ['hastings-pd'] })
  t.equal((await get(fresh)).statusCode, 429, 'a key new to the process waits out the minute like a guess')
  t.equal((await get(unknownKey(), '10.1.2.3')).statusCode, 401, 'another address is not held up')
  t.equal((await get(fresh, '10.1.2.3')).statusCode, 200, 'and the new key works from there')
  t.equal((await app.inject({ method: 'GET', url: '/v1/assignments', headers: { authorization: 'Basic x' } })).statusCode, 401, 'a header that is no key costs no lookup and is not counted')
})

t.test('the window: refusals count for a minute from the first', async (t) => {
  let now = 0
  const g = createGuessLimiter({ limit: 3, clock: () => now, maxAddresses: 2 })
  for (let i = 0; i < 3; i++) g.refused('a')
  t.equal(g.blockedFor('a'), 60_000)
  now = 59_000
  t.equal(g.blockedFor('a'), 1_000)
  t.equal(g.blockedFor('b'), 0)
  now = 60_000
  t.equal(g.blockedFor('a'), 0, 'a new minute')
  g.refused('a')
  g.refused('a')
  t.equal(g.blockedFor('a'), 0, 'counting from one again: two of three')
  g.refused('b')
  g.refused('c')
  g.refused('a')
  t.equal(g.blockedFor('a'), 0, 'at most maxAddresses are kept: the oldest window went, and a counts from one')
  g.refused('a')
  g.refused('a')
  t.equal(g.blockedFor('a'), 60_000, 'until it reaches the limit again')
})
