import pino from 'pino'
import { loadConfig } from '../config.js'
import { loggerOptions } from '../logger.js'
import { createDb, createPool } from './connect.js'
import { ensureDatabase, migrateToLatest } from './migrate.js'

const config = loadConfig()
const log = pino(loggerOptions(config.LOG_LEVEL))
const pool = createPool({ connectionString: config.DATABASE_URL, max: 2, statementTimeoutMs: 60_000, applicationName: 'cad-router-migrate' })
const db = createDb(pool)
try {
  if (await ensureDatabase(config.DATABASE_URL)) log.info('database created')
  const applied = await migrateToLatest(db)
  log.info({ applied }, applied.length ? 'migrations applied' : 'database is up to date')
} catch (err) {
  log.fatal({ err }, 'migration failed')
  process.exitCode = 1
} finally {
  await db.destroy()
}
