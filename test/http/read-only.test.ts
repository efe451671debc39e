/**
 * A Postgres that answers but cannot write: a standby the service was pointed at during a failover,
 * or a primary set read-only (default_transaction_read_only, as some failover tools do to the old
 * one). Ingest must say "try again" (503 with Retry-After), as for a Postgres that is down, never
 * 500; and readiness must not keep the instance in a load balancer that sends it every call.
 */
import pg from 'pg'
import t from 'tap'
import { buildApp } from '../../src/app.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { callEvent } from '../helpers/events.js'
import { createWorld, quietLog } from '../helpers/world.js'

const world = await createWorld(t)
const { config, ruleSets } = world

t.test('Postgres read-only: ingest answers 503 with Retry-After and stores nothing; readiness is 503, naming it', async (t) => {
  const admin = new pg.Client({ connectionString: world.databaseUrl })
  await admin.connect()
  t.teardown(() => admin.end())
  await admin.query(`alter database ${world.name} set default_transaction_read_only = on`)
  t.teardown(() => admin.query(`alter database ${world.name} reset default_transaction_read_only`))
  // New sessions are read-only: an app on a pool of its own, as after a restart onto the standby.
  const db = createDb(createPool({ connectionString: world.databaseUrl, max: 2, statementTimeoutMs: 5000 }))
  t.teardown(() => db.destroy())
  const app = await buildApp({ config, db, redis: world.redis, ruleSets, logger: quietLog })
  t.teardown(() => app.close())

  const event = callEvent()
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: event, headers: { authorization: `Bearer ${world.adminKey}` } })
  t.equal(res.statusCode, 503, res.body)
  t.equal(res.headers['retry-after'], String(config.RETRY_AFTER_SECONDS))
  t.equal(res.json().code, 'service-unavailable')
  t.notOk(await world.db.selectFrom('call_events').select('event_id').where('event_id', '=', event.eventId).executeTakeFirst(), 'nothing stored')

  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503, ready.body)
  t.match(ready.json(), { status: 'not_ready', checks: { postgres: { ok: false, detail: /read-only/ } } })
})
