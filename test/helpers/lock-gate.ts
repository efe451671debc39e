import { sql } from 'kysely'
import pg from 'pg'
import type { Db } from '../../src/db/connect.js'

interface Tap {
  teardown(fn: () => unknown): void
}

/**
 * The environment of a service process some of whose statements the test keeps stuck in Postgres
 * (lockGate) across a shutdown: a statement time-out longer than the grace period, so a shutdown
 * that waits for them runs out of time, and no lock time-out of its own, so a wait at the gate lasts
 * the statement's whole time.
 */
export function stuckStatementEnv(o: { graceMs: number; drainMs: number; statementTimeoutMs: number }): Record<string, string> {
  return {
    SHUTDOWN_GRACE_MS: String(o.graceMs),
    WORKER_DRAIN_MS: String(o.drainMs),
    DATABASE_STATEMENT_TIMEOUT_MS: String(o.statementTimeoutMs),
    DATABASE_LOCK_TIMEOUT_MS: '0',
  }
}

/**
 * A gate in Postgres that the test shuts and opens: a trigger whose body runs `gate.wait` makes its
 * statement wait while the gate is shut (the test's session holds advisory lock `key`).
 */
export async function lockGate(t: Tap, db: Db, database: { name: string; url: string }, key: number) {
  const holder = new pg.Client({ connectionString: database.url })
  holder.on('error', () => {})
  await holder.connect()
  t.teardown(() => holder.end().catch(() => {}))
  return {
    /** For a trigger's body (PL/pgSQL). */
    wait: `perform pg_advisory_xact_lock_shared(${key})`,
    shut: async () => void (await holder.query('select pg_advisory_lock($1)', [key])),
    open: async () => void (await holder.query('select pg_advisory_unlock($1)', [key])),
    /** The service's sessions waiting at the gate now. */
    waiting: async () =>
      (
        await sql<{ pid: number }>`select pid from pg_stat_activity
          where datname = ${database.name} and application_name = 'cad-router' and wait_event_type = 'Lock' and wait_event = 'advisory'`.execute(db)
      ).rows.map((r) => r.pid),
    /** How many of these sessions still exist. */
    left: async (pids: number[]) => (await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where pid = any(${pids})`.execute(db)).rows[0]!.n,
  }
}
