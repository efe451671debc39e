import Fastify from 'fastify'
import t from 'tap'
import type { KeyCache } from '../../src/auth/key-cache.js'
import { authPlugin } from '../../src/auth/plugin.js'
import type { Principal } from '../../src/auth/principal.js'
import { registerProblemHandlers } from '../../src/http/problem.js'
import { eventually } from '../helpers/world.js'

// The plugin against a key cache whose Postgres lookups of unknown keys are held until released,
// so what runs at once and what waits can be counted (the lookup itself is key-cache.test.ts's).
function slowCache() {
  let running = 0
  let most = 0
  const release: (() => void)[] = []
  const principal: Principal = { keyId: 'k1', name: 'cad', role: 'cad', agencies: null, queues: null }
  const cache: KeyCache = {
    async authenticate(key, whenUnknown) {
      if (key.startsWith('known')) return principal
      const lookup = async () => {
        running++
        most = Math.max(most, running)
        await new Promise<void>((r) => release.push(r))
        running--
        return undefined
      }
      return whenUnknown ? whenUnknown(lookup) : lookup()
    },
    invalidate: () => {},
    onChange: () => () => {},
    size: () => 0,
    listening: () => false,
    close: async () => {},
  }
  return { cache, most: () => most, releaseAll: () => release.splice(0).forEach((r) => r()) }
}

t.test('unknown keys are looked up two at a time, at most 100 are held, and known keys never wait behind them', async (t) => {
  const { cache, most, releaseAll } = slowCache()
  const app = Fastify()
  registerProblemHandlers(app, 3)
  await app.register(authPlugin, { keys: cache })
  app.get('/x', { config: { access: ['cad'] } }, async () => ({ ok: true }))
  t.teardown(() => app.close())

  const get = (key: string) => app.inject({ method: 'GET', url: '/x', headers: { authorization: `Bearer ${key}` } })
  const guesses = Array.from({ length: 150 }, (_, i) => get(`guess${i}`))
  await eventually(async () => most() >= 2, 5000, 5).catch(() => {})
  t.equal(most(), 2, 'two lookups of unknown keys at once')
  const known = await get('known-cad-key')
  t.equal(known.statusCode, 200, 'a known key is answered while the guesses wait')

  const releasing = setInterval(releaseAll, 5)
  const answers = await Promise.all(guesses)
  clearInterval(releasing)
  const counts = new Map<number, number>()
  for (const a of answers) counts.set(a.statusCode, (counts.get(a.statusCode) ?? 0) + 1)
  t.same(Object.fromEntries(counts), { 401: 100, 429: 50 }, 'a hundred running or waiting were looked up; the rest were told to retry')
  const refused = answers.find((a) => a.statusCode === 429)!
  t.equal(refused.headers['retry-after'], '3')
  t.equal(most(), 2, 'never more than two at once')
})
