/**
 * Migration 0007 on a database from before rule sets had a lifecycle: the version it routed with
 * stays active (with an "initial" activation), older versions are retired, and the registry starts
 * on it without storing the default again. Down and up again leave the same schema.
 */
import { Migrator } from 'kysely'
import pg from 'pg'
import t from 'tap'
import { migrations } from '../../migrations/index.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { createRuleSetRegistry } from '../../src/rule-sets/registry.js'
import { createTestDatabase, PG_ADMIN_URL } from '../helpers/world.js'
import { defaultDocument } from '../routing/fixtures/helpers.js'

const name = await createTestDatabase('t')
const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
await admin.connect()
const url = new URL(PG_ADMIN_URL)
url.pathname = `/${name}`
const db = createDb(createPool({ connectionString: url.toString(), max: 3, statementTimeoutMs: 10_000 }))
t.teardown(async () => {
  await db.destroy()
  await admin.query(`drop database if exists ${name} with (force)`)
  await admin.end()
})
const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } })

t.test('an older database keeps routing with its newest stored version', async (t) => {
  const before = await migrator.migrateTo('0006_reports')
  t.notOk(before.error)
  const v1 = defaultDocument()
  const v2 = { ...defaultDocument(), version: 2 }
  // Rows as the registry of an older release wrote them (no status yet).
  for (const doc of [v1, v2]) {
    await db
      .insertInto('rule_sets')
      .values({ version: doc.version, name: doc.name, document: JSON.stringify(doc) } as never)
      .execute()
  }
  const applied = await migrateToLatest(db)
  t.equal(applied[0], '0007_rule_set_lifecycle', 'the rule-set lifecycle migration runs next')
  const rows = await db.selectFrom('rule_sets').select(['version', 'status']).orderBy('version').execute()
  t.same(rows, [
    { version: 1, status: 'retired' },
    { version: 2, status: 'active' },
  ])
  const activations = await db.selectFrom('rule_set_activations').selectAll().execute()
  t.match(activations, [{ kind: 'initial', from_version: null, to_version: 2, actor: 'system' }])
  t.equal(activations.length, 1, 'one initial activation, of the version that was in use')

  const registry = await createRuleSetRegistry(db)
  t.teardown(() => registry.close())
  t.equal(registry.active().version, 2)
  t.equal((await db.selectFrom('rule_sets').select('version').execute()).length, 2, 'the default was not stored again')
})

t.test('only one version can be active, whatever writes the table', async (t) => {
  await t.rejects(db.updateTable('rule_sets').set({ status: 'active' }).where('version', '=', 1).execute(), /rule_sets_one_active/)
})

t.test('down and up again', async (t) => {
  // Down through every later migration and 0007 itself, then up again.
  const down = await migrator.migrateTo('0006_reports')
  t.notOk(down.error)
  const applied = await migrateToLatest(db)
  t.equal(applied[0], '0007_rule_set_lifecycle', 'the rule-set lifecycle migration runs next')
  t.equal((await db.selectFrom('rule_sets').select('version').where('status', '=', 'active').executeTakeFirst())?.version, 2)
})
