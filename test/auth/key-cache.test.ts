/**
 * The API key cache: a key looked up once is served from memory, revocation and any other change
 * of a key reach every instance at once (the trigger's NOTIFY), expiry is checked at every use,
 * the TTL bounds a change nobody heard of, and the cache holds a bounded number of real keys only.
 *
 * Instance A is the world's app, built as main.ts builds it. Instance B shares the database and
 * has a pool of its own that counts the key lookups it sends to Postgres.
 */
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { sql } from 'kysely'
import t from 'tap'
import { buildApp } from '../../src/app.js'
import { createKeyCache, type KeyCache, type UnknownKeyGate } from '../../src/auth/key-cache.js'
import { createKey, generateKey } from '../../src/auth/keys.js'
import { createDb, createPool, type Db } from '../../src/db/connect.js'
import { countStatements, createWorld, eventually, quietLog, say } from '../helpers/world.js'

const world = await createWorld(t)
const A = world.app

/** A pool on the world's database whose key lookups are counted (the SQL that reaches Postgres). */
function countingDb(): { db: Db; lookups: () => number } {
  const pool = createPool({ connectionString: world.databaseUrl, max: 4, statementTimeoutMs: 10_000 })
  const lookups = countStatements(pool, 'from "api_keys" where "key_hash" =')
  const db = createDb(pool)
  t.teardown(() => db.destroy())
  return { db, lookups }
}

/** What the caches' listeners warned of (a failed connect, a lost connection), for failure messages. */
const warnings: string[] = []
const warnLog = {
  info: () => {},
  warn: (obj: unknown, msg?: string) => void warnings.push(`${msg ?? ''} ${JSON.stringify(obj)}`),
}

/** A cache on its own counting pool, closed at teardown. */
function cacheFor(opts: { ttlMs: number; maxEntries?: number; clock?: () => number; listen?: boolean }): { cache: KeyCache; lookups: () => number } {
  const { db, lookups } = countingDb()
  const cache = createKeyCache({
    db,
    log: warnLog,
    ttlMs: opts.ttlMs,
    maxEntries: opts.maxEntries ?? 1000,
    ...(opts.listen === false ? {} : { databaseUrl: world.databaseUrl }),
    ...(opts.clock ? { clock: opts.clock } : {}),
  })
  t.teardown(() => cache.close())
  return { cache, lookups }
}

// Instance B: a TTL of a minute, so whatever stops a key within the tests' bounds is the NOTIFY.
// The bounds (HEARD_MS) leave a loaded CI machine room and stay far inside the TTL.
const HEARD_MS = 5000
const b = cacheFor({ ttlMs: 60_000 })
const B = await buildApp({ config: world.config, db: world.db, redis: world.redis, ruleSets: world.ruleSets, logger: quietLog, keys: b.cache })
t.teardown(() => B.close())

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const status = async (app: typeof A, key: string) => (await app.inject({ method: 'GET', url: '/v1/assignments', headers: bearer(key) })).statusCode
/** Milliseconds until the key is refused on the app, polling every 5 ms; fails after `ms`. */
async function refusedWithin(app: typeof A, key: string, ms: number): Promise<number> {
  const start = performance.now()
  await eventually(async () => (await status(app, key)) === 401, ms, 5)
  return Math.round(performance.now() - start)
}

// B's LISTEN connection opens on its first key; wait for it so the lookups below are B's only ones.
// Asserted, not thrown: a throw here would end the file and hide every test below. And asserted
// only once nothing is awaited any more at the top: tap ends a file's root test that sits idle
// after an assertion (a teardown is registered), and the tests below were then never run, the file
// still passing (test/package/top-level-awaits.test.ts).
const firstAnswer = await status(B, await world.key('console'))
const listening = await eventually(async () => b.cache.listening(), 30_000).catch(() => false)
t.equal(firstAnswer, 200)
t.ok(listening, `instance B listens for key changes${warnings.length ? ` ${JSON.stringify(warnings)}` : ''}`)

t.test('a cached key keeps working without a query to Postgres', async (t) => {
  const key = await world.key('console', { agencies: ['hastings-pd'] })
  const before = b.lookups()
  for (let i = 0; i < 5; i++) t.equal(await status(B, key), 200)
  t.equal(b.lookups() - before, 1, 'one lookup for five requests')
  // Concurrent requests with a key not held yet make one lookup between them.
  const other = await world.key('cad', { agencies: ['hastings-pd'] })
  const mid = b.lookups()
  const codes = await Promise.all(Array.from({ length: 8 }, () => status(B, other)))
  t.ok(codes.every((c) => c === 403), 'a cad key may not list assignments, eight times over')
  t.equal(b.lookups() - mid, 1, 'one lookup for eight concurrent requests')
})

t.test('revoking through the API stops the key at once on the same instance', async (t) => {
  const created = (await A.inject({ method: 'POST', url: '/v1/keys', payload: { name: 'revoked-here', role: 'console', agencies: null } })).json()
  t.equal(await status(A, created.key), 200)
  t.equal(await status(A, created.key), 200, 'served from the cache')
  t.equal((await A.inject({ method: 'POST', url: `/v1/keys/${created.id}/revoke` })).statusCode, 200)
  t.equal(await status(A, created.key), 401, 'the very next request is refused')
})

t.test('revoking on instance A stops the key on instance B by NOTIFY, long before the TTL', async (t) => {
  const created = (await A.inject({ method: 'POST', url: '/v1/keys', payload: { name: 'revoked-there', role: 'console', agencies: null } })).json()
  t.equal(await status(B, created.key), 200)
  const before = b.lookups()
  t.equal(await status(B, created.key), 200, 'B serves it from its cache')
  t.equal(b.lookups(), before)
  t.equal((await A.inject({ method: 'POST', url: `/v1/keys/${created.id}/revoke` })).statusCode, 200)
  const ms = await refusedWithin(B, created.key, HEARD_MS)
  say(`B refused the key ${ms} ms after A's revocation answered`)
})

t.test('any other change of a key, made anywhere, reaches every instance (the keys CLI, psql)', async (t) => {
  const key = await world.key('console', { agencies: ['hastings-pd'], name: 'changing' })
  t.equal(await status(B, key), 200)
  await world.pool.query(`update api_keys set role = 'auditor' where name = 'changing'`)
  await eventually(async () => (await status(B, key)) === 403, HEARD_MS, 5)
  t.pass('the new role applies: an auditor may not list assignments')
  await world.pool.query(`delete from api_keys where name = 'changing'`)
  await refusedWithin(B, key, HEARD_MS)
  t.pass('a deleted key is refused')
})

t.test('an expired key is refused even while cached, without a query', async (t) => {
  // 3 s of life: its creation and first use must fit in it, which 1 s did not always on a loaded machine.
  const expiresAt = new Date(Date.now() + 3000)
  const { key } = await createKey(world.db, { name: 'expiring', role: 'console', agencies: null, queues: null, expiresAt, createdBy: 'test' })
  t.equal(await status(B, key), 200)
  const before = b.lookups()
  await eventually(async () => Date.now() > expiresAt.getTime() + 10, 10_000)
  t.equal(await status(B, key), 401)
  t.equal(b.lookups(), before, 'refused from the cache: expiry is checked at every use')
})

t.test('the TTL bounds a change nobody heard of; a reconnect forgets everything', async (t) => {
  let now = 0
  const { cache, lookups } = cacheFor({ ttlMs: 5000, clock: () => now })
  const { key, view } = await createKey(world.db, { name: 'silent', role: 'console', agencies: null, queues: null, expiresAt: null, createdBy: 'test' })
  t.ok(await cache.authenticate(key))
  await eventually(async () => cache.listening(), 15_000)
  t.ok(await cache.authenticate(key))
  // Revoked with triggers off (session_replication_role = replica): no NOTIFY, as if it were lost.
  await world.db.transaction().execute(async (trx) => {
    await sql`set local session_replication_role = replica`.execute(trx)
    await trx.updateTable('api_keys').set({ revoked_at: new Date() }).where('id', '=', view.id).execute()
  })
  const before = lookups()
  t.ok(await cache.authenticate(key), 'still honoured from the cache: nobody told it')
  now += 4999
  t.ok(await cache.authenticate(key), 'until the TTL runs out')
  t.equal(lookups(), before)
  now += 1
  t.notOk(await cache.authenticate(key), 'then asked again, and refused')
  t.equal(lookups(), before + 1)

  // Another key, held; the LISTEN connection is cut: on reconnect the cache drops what it held.
  const other = await createKey(world.db, { name: 'silent-2', role: 'console', agencies: null, queues: null, expiresAt: null, createdBy: 'test' })
  t.ok(await cache.authenticate(other.key))
  t.equal(cache.size(), 1)
  // (Every key listener on this database: B's reconnects as well.)
  const cut = await world.pool.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name = 'cad-router-keys'`, [world.name])
  t.ok(cut.rowCount! >= 1, 'listener connections cut')
  await eventually(async () => cache.listening() && cache.size() === 0, 15_000)
  t.pass('listening again, with nothing held from before')
})

t.test('the cache is bounded, holds known keys only, least recently used first out', async (t) => {
  const { cache, lookups } = cacheFor({ ttlMs: 60_000, maxEntries: 3, listen: false })
  const keys: string[] = []
  for (let i = 0; i < 4; i++) keys.push((await createKey(world.db, { name: `bounded-${i}`, role: 'console', agencies: null, queues: null, expiresAt: null, createdBy: 'test' })).key)
  const [k0, k1, k2, k3] = keys as [string, string, string, string]
  for (const k of [k0, k1, k2]) t.ok(await cache.authenticate(k))
  t.equal(cache.size(), 3)
  t.ok(await cache.authenticate(k0), 'k0 used again: now the most recent')
  t.ok(await cache.authenticate(k3))
  t.equal(cache.size(), 3, 'never more than maxEntries')
  const before = lookups()
  for (const k of [k0, k2, k3]) t.ok(await cache.authenticate(k))
  t.equal(lookups(), before, 'k0, k2 and k3 held')
  t.ok(await cache.authenticate(k1))
  t.equal(lookups(), before + 1, 'k1, the least recently used, had gone')

  // A brute-force attacker's guesses are looked up, refused and never held.
  const guesses = Array.from({ length: 50 }, () => generateKey())
  const mid = lookups()
  for (const g of guesses) t.notOk(await cache.authenticate(g))
  t.equal(lookups() - mid, 50, 'each guess asked Postgres')
  t.equal(cache.size(), 3, 'and pushed no real key out')
  t.notOk(await cache.authenticate(`cadr_${randomBytes(200).toString('base64url')}`), 'an overlong key')
  t.notOk(await cache.authenticate('not-a-key'), 'a string that is no key')
  t.equal(lookups() - mid, 50, 'neither looked up')
})

t.test('a refused key retried costs one lookup per TTL; undoing a revocation anywhere lifts the refusal at once', async (t) => {
  const { cache, lookups } = cacheFor({ ttlMs: 60_000 })
  // Its LISTEN connection opens on first use and, once up, forgets everything held: wait for it.
  t.notOk(await cache.authenticate(generateKey()))
  await eventually(async () => cache.listening(), 15_000)
  const stale = generateKey() // a decommissioned console's key, deleted long ago
  const start = lookups()
  for (let i = 0; i < 10; i++) t.notOk(await cache.authenticate(stale))
  t.equal(lookups() - start, 1, 'ten retries of an unknown key: one lookup')
  // ADMIN_API_KEY presented to a process before another one stored it: the insert's NOTIFY lifts the refusal.
  await createKey(world.db, { name: 'stored-after-refusal', role: 'console', agencies: null, queues: null, expiresAt: null, createdBy: 'test' }, stale)
  await eventually(async () => cache.authenticate(stale), HEARD_MS, 5)
  t.pass(`a refused key stored afterwards works within ${HEARD_MS} ms, although refusals last a minute here`)

  const { key, view } = await createKey(world.db, { name: 'revoked-then-restored', role: 'console', agencies: null, queues: null, expiresAt: null, createdBy: 'test' })
  t.ok(await cache.authenticate(key))
  await world.db.updateTable('api_keys').set({ revoked_at: new Date() }).where('id', '=', view.id).execute()
  await eventually(async () => !(await cache.authenticate(key)), HEARD_MS, 5)
  const before = lookups()
  for (let i = 0; i < 10; i++) t.notOk(await cache.authenticate(key))
  t.equal(lookups(), before, 'ten retries of a revoked key: no lookup')
  t.equal(cache.size(), 1, 'refusals are not held among the keys (the one held is the key stored above)')

  await world.db.updateTable('api_keys').set({ revoked_at: null }).where('id', '=', view.id).execute()
  await eventually(async () => cache.authenticate(key), HEARD_MS, 5)
  t.pass(`the key works again within ${HEARD_MS} ms, although refusals last a minute here`)
})

t.test('refusals are bounded apart from the keys and lapse after the TTL', async (t) => {
  let now = 0
  const { cache, lookups } = cacheFor({ ttlMs: 5000, maxEntries: 2, clock: () => now, listen: false })
  const real = await world.key('console')
  t.ok(await cache.authenticate(real))
  const [g1, g2, g3] = [generateKey(), generateKey(), generateKey()]
  for (const g of [g1, g2, g3]) t.notOk(await cache.authenticate(g))
  t.equal(lookups(), 4)
  t.notOk(await cache.authenticate(g1))
  t.equal(lookups(), 5, 'two refusals held: the third pushed out the oldest (g1), which was asked again')
  t.ok(await cache.authenticate(real))
  t.equal(lookups(), 5, 'the real key still held')
  now += 4999
  t.notOk(await cache.authenticate(g3))
  t.equal(lookups(), 5, 'g3 refused from memory within the TTL')
  now += 1
  t.notOk(await cache.authenticate(g3))
  t.equal(lookups(), 6, 'and asked again once it ran out')
})

t.test('AUTH_CACHE_MS=0 turns the cache off', async (t) => {
  const { cache, lookups } = cacheFor({ ttlMs: 0 })
  const key = await world.key('console')
  for (let i = 0; i < 3; i++) t.ok(await cache.authenticate(key))
  t.equal(lookups(), 3)
  t.equal(cache.size(), 0)
  t.notOk(cache.listening(), 'and opens no LISTEN connection')
})

t.test('a cache that has just started knows the valid keys before their first use; not revoked or unknown ones', async (t) => {
  const valid = await world.key('cad', { name: 'known-at-start' })
  const revoked = await world.key('cad', { name: 'revoked-before-start' })
  await world.db.updateTable('api_keys').set({ revoked_at: new Date() }).where('name', '=', 'revoked-before-start').execute()
  const { cache, lookups } = cacheFor({ ttlMs: 60_000 })
  // The gate an unknown key's lookup goes through (the plugin's bound); this one refuses them all.
  const refuseUnknown: UnknownKeyGate = () => Promise.reject(new Error('unknown key'))
  const known = (key: string) => cache.authenticate(key, refuseUnknown).then(() => true, () => false)
  t.notOk(await known(valid), 'not before its listener has connected (this call starts it)')
  await eventually(() => known(valid), 15_000)
  t.equal(lookups(), 1, 'learnt in one read of the valid keys; its first use then looked it up without the gate')
  t.notOk(await known(revoked), 'a revoked key is not known')
  t.notOk(await known(`cadr_${randomBytes(32).toString('base64url')}`), 'nor a made-up one')
})

t.test('a key stored after the cache started is known before its first use, by its NOTIFY', async (t) => {
  // While unknown keys flood the gate (src/auth/plugin.ts), a new CAD's key must not wait behind them.
  const { cache } = cacheFor({ ttlMs: 60_000 })
  const refuseUnknown: UnknownKeyGate = () => Promise.reject(new Error('unknown key'))
  const known = (key: string) => cache.authenticate(key, refuseUnknown).then(() => true, () => false)
  await cache.authenticate(`cadr_${randomBytes(32).toString('base64url')}`).catch(() => undefined)
  await eventually(async () => cache.listening(), 15_000)
  // The keys read at start are read by then: the one added next cannot be among them.
  await eventually(() => known(world.adminKey), 15_000)
  const added = await world.key('cad', { name: 'added-after-start' })
  t.ok(await eventually(() => known(added), HEARD_MS).then(() => true, () => false), 'known through the gate without a lookup of its own')
})

t.test('onChange tells of a change of a key by its id, also with no TTL; not of a new key', async (t) => {
  for (const ttlMs of [60_000, 0]) {
    const { cache } = cacheFor({ ttlMs })
    const heard: (string | undefined)[] = []
    const stop = cache.onChange((id) => heard.push(id))
    await eventually(async () => cache.listening(), 15_000)
    t.same(heard, [undefined], `ttl ${ttlMs}: told once the listener is up, for every key (changes may have been missed before)`)
    await world.key('console', { name: `new-${ttlMs}` })
    const changing = await world.key('console', { name: `changing-${ttlMs}` })
    const id = (await world.db.selectFrom('api_keys').select('id').where('name', '=', `changing-${ttlMs}`).executeTakeFirstOrThrow()).id
    t.ok(await cache.authenticate(changing))
    await world.db.updateTable('api_keys').set({ revoked_at: new Date() }).where('id', '=', id).execute()
    await eventually(async () => heard.length === 2, 5_000)
    t.same(heard, [undefined, id], `ttl ${ttlMs}: the revoked key's id; nothing for the key created`)
    stop()
    await world.db.updateTable('api_keys').set({ name: `changed-${ttlMs}` }).where('id', '=', id).execute()
    await new Promise((r) => setTimeout(r, 200))
    t.equal(heard.length, 2, `ttl ${ttlMs}: nothing once stopped`)
  }
})

t.test('closing the cache twice is harmless', async (t) => {
  const { cache } = cacheFor({ ttlMs: 1000 })
  await cache.authenticate(await world.key('console'))
  await cache.close()
  await cache.close()
  t.notOk(cache.listening())
})
