import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import { sql } from 'kysely'
import pg from 'pg'
import t, { type Test } from 'tap'
import { migrations } from '../../migrations/index.js'
import type { Db } from '../../src/db/connect.js'
import { createMigrationDb, ensureDatabase, migrateToLatest, MIN_POSTGRES_VERSION_NUM, pendingMigrations, unsupportedPostgres } from '../../src/db/migrate.js'
import { databaseUrlFor } from '../faults/fixtures/harness.js'
import { childEnv, programEntry } from '../helpers/service-process.js'
import { PG_ADMIN_URL, say } from '../helpers/world.js'

/** A new, empty database of this test's, with a migration handle on it; both gone at teardown. */
async function freshDatabase(t: Test): Promise<{ url: string; db: Db }> {
  const name = `cadr_m_${randomBytes(6).toString('hex')}`
  const url = databaseUrlFor(name)
  await ensureDatabase(url)
  const db = createMigrationDb(url, 30_000)
  t.teardown(async () => {
    await db.destroy()
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
    await admin.connect()
    await admin.query(`drop database if exists ${name} with (force)`)
    await admin.end()
  })
  return { url, db }
}

t.test('two processes starting at once on a database that does not exist yet: one creates and migrates it, the other waits and finds it done', async (t) => {
  const name = `cadr_m_${randomBytes(6).toString('hex')}`
  const url = databaseUrlFor(name)
  t.teardown(async () => {
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
    await admin.connect()
    await admin.query(`drop database if exists ${name} with (force)`)
    await admin.end()
  })
  // As src/main.ts starts: create the database when missing, then migrate on a connection of its own.
  const start = async () => {
    const created = await ensureDatabase(url)
    const db = createMigrationDb(url, 30_000)
    try {
      return { created, applied: await migrateToLatest(db) }
    } finally {
      await db.destroy()
    }
  }
  const [a, b] = await Promise.all([start(), start()])
  const all = Object.keys(migrations).sort()
  t.same([a.applied, b.applied].map((x) => x.length).sort((x, y) => x - y), [0, all.length], 'every migration applied once, by one of them')
  t.ok(a.created || b.created, 'the database was created')
  const db = createMigrationDb(url)
  t.same(await pendingMigrations(db), [], 'nothing pending')
  await db.destroy()
})

t.test('Postgres older than 14 is refused before any migration, by name', async (t) => {
  t.equal(unsupportedPostgres(140000, '14.0'), undefined, '14 runs')
  t.equal(unsupportedPostgres(170002, '17.2'), undefined, 'and later')
  t.match(unsupportedPostgres(130015, '13.15'), /Postgres 13\.15 is not supported: cad-router needs Postgres 14 or later/, '13 is refused')
  t.ok(unsupportedPostgres(NaN, 'of an unknown version'), 'a version it cannot read is refused too')
  // This machine's server passes (the other tests migrate on it).
  const client = new pg.Client({ connectionString: PG_ADMIN_URL })
  await client.connect()
  t.teardown(() => client.end())
  const { rows } = await client.query<{ num: string }>(`select current_setting('server_version_num') as num`)
  t.ok(Number(rows[0]!.num) >= MIN_POSTGRES_VERSION_NUM, `this server (${rows[0]!.num}) is one it runs on`)
})

t.test('a database a later release has migrated: this release starts on it, without migrating; a schema it cannot name is refused', async (t) => {
  const { url, db } = await freshDatabase(t)
  const all = Object.keys(migrations).sort()
  t.equal((await migrateToLatest(db)).length, all.length)
  // What a later release's start leaves: its own migration after ours.
  const later = '9999_a_later_release'
  await sql`insert into kysely_migration (name, timestamp) values (${later}, ${new Date().toISOString()})`.execute(db)
  const told: string[][] = []
  t.same(await migrateToLatest(db, { onNewerSchema: (names) => told.push(names) }), [], 'nothing applied, and no error')
  t.same(told, [[later]], 'the later release’s migrations named')
  t.same(await pendingMigrations(db), [], 'readiness has nothing pending')

  // One of ours not applied: not a later release's schema.
  await sql`delete from kysely_migration where name = ${all.at(-1)!}`.execute(db)
  await t.rejects(migrateToLatest(db), { name: 'MigrationError', message: new RegExp(`does not know \\(${later}\\) and lacks some it needs \\(${all.at(-1)!}\\)`) })
  await sql`insert into kysely_migration (name, timestamp) values (${all.at(-1)!}, ${new Date().toISOString()})`.execute(db)
  // An unknown name among ours: another branch's.
  await sql`insert into kysely_migration (name, timestamp) values ('0001a_elsewhere', ${new Date().toISOString()})`.execute(db)
  await t.rejects(migrateToLatest(db), { name: 'MigrationError', message: /0001a_elsewhere.*not all after its own/ })
})

t.test('npm run migrate: its statement time-out is MIGRATE_STATEMENT_TIMEOUT_MS', async (t) => {
  // A session holding the migrator's lock (another release migrating, a stuck psql): the CLI waits
  // for it up to its statement time-out, then fails saying so. Raised, it would wait longer.
  const { url, db } = await freshDatabase(t)
  await migrateToLatest(db)
  const holder = new pg.Client({ connectionString: url })
  await holder.connect()
  t.teardown(() => holder.end())
  // Kysely's migration lock on Postgres: a session advisory lock of this id.
  await holder.query('select pg_advisory_lock(3853314791062309107)')

  const started = performance.now()
  const child = spawn(process.execPath, programEntry('src/db/migrate-cli.ts'), { env: childEnv({ DATABASE_URL: url, MIGRATE_STATEMENT_TIMEOUT_MS: '300', LOG_LEVEL: 'info' }), stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (b: Buffer) => (output += b.toString()))
  child.stderr.on('data', (b: Buffer) => (output += b.toString()))
  const [code] = (await once(child, 'close')) as [number | null]
  const took = performance.now() - started
  t.equal(code, 1, `it fails: ${output.slice(-600)}`)
  t.match(output, /statement timeout/, 'saying why')
  say(`migrate CLI gave up on the held lock after ${Math.round(took)} ms (node start included)`)
  t.ok(took < 30_000, 'long before the 60 s default')
})
