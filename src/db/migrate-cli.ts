import pino from 'pino'
import { loadConfigOrExit } from '../config.js'
import { loggerOptions } from '../logger.js'
import { createMigrationDb, ensureDatabase, migrateToLatest } from './migrate.js'

const config = loadConfigOrExit()
const log = pino(loggerOptions(config.LOG_LEVEL))
const db = createMigrationDb(config.DATABASE_URL, config.MIGRATE_STATEMENT_TIMEOUT_MS)
try {
  if (await ensureDatabase(config.DATABASE_URL)) log.info('database created')
  const applied = await migrateToLatest(db, { onNewerSchema: (newer) => log.warn({ newer }, 'the database has migrations of a later release: nothing to apply') })
  log.info({ applied }, applied.length ? 'migrations applied' : 'database is up to date')
} catch (err) {
  log.fatal({ err }, 'migration failed')
  process.exitCode = 1
} finally {
  await db.destroy()
}
