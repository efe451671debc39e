import { Redis } from 'ioredis'
import pino from 'pino'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { createDb, createPool } from '../src/db/connect.js'
import { compileRuleSet, loadDefaultRuleSet } from '../src/routing/index.js'
import { staticRuleSetRegistry } from '../src/rule-sets/registry.js'

/** The OpenAPI document as the code defines it; no server is contacted. */
export async function generateOpenApi(): Promise<string> {
  const config = loadConfig({})
  const pool = createPool({ connectionString: config.DATABASE_URL, max: 1, statementTimeoutMs: 1000 })
  const db = createDb(pool)
  const redis = new Redis(config.REDIS_URL, { lazyConnect: true })
  const compiled = compileRuleSet(loadDefaultRuleSet())
  const ruleSets = staticRuleSetRegistry(compiled)
  const app = await buildApp({ config, db, redis, ruleSets, logger: pino({ level: 'silent' }) })
  await app.ready()
  const doc = app.swagger()
  await app.close()
  await db.destroy()
  redis.disconnect()
  return `${JSON.stringify(doc, null, 2)}\n`
}
