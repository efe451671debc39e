import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type pg from 'pg'

const run = promisify(execFile)

/** Whether `ss` (iproute2) is here to read a socket's timers; the checks that need it skip without it. */
export const canReadSocketTimers = await run('ss', ['-V']).then(
  () => true,
  () => false,
)

/** ss's time: `119min`, `15sec`, `9.400ms` (9.4 s: seconds below ten keep their milliseconds), `400ms`. */
export function ssSeconds(text: string): number | undefined {
  const m = /^(?:(\d+)min)?(?:(\d+)sec|(\d+)\.(\d+)ms|(\d+)ms)?$/.exec(text)
  if (!m || !text) return undefined
  const [, min, sec, secBeforeMs, msAfterSec, ms] = m
  return Number(min ?? 0) * 60 + Number(sec ?? secBeforeMs ?? 0) + Number(msAfterSec ?? ms ?? 0) / 1000
}

/**
 * Seconds until Postgres's next keepalive probe on the socket of the session named
 * `applicationName`, read from the kernel (`ss`): at most tcp_keepalives_idle. Reads what reached
 * the server's socket for a connection the test cannot query (a LISTEN connection, the feed
 * bridge's), where `show tcp_keepalives_idle` needs a query on it. Undefined without such a
 * session, or while its socket shows another timer (a retransmission's, until the client
 * acknowledges what the server last sent): ask again.
 */
export async function serverKeepaliveSeconds(pool: pg.Pool, database: string, applicationName: string, serverPort = 5432): Promise<number | undefined> {
  const { rows } = await pool.query<{ port: number }>('select client_port as port from pg_stat_activity where datname = $1 and application_name = $2', [database, applicationName])
  const port = rows[0]?.port
  if (!port) return undefined
  const { stdout } = await run('ss', ['-tnoH', 'state', 'established', `( sport = :${serverPort} and dport = :${port} )`])
  // e.g. `timer:(keepalive,9.400ms,0)`, or `timer:(keepalive,119min,0)` with the server's defaults
  const m = /timer:\(keepalive,([^,]+),/.exec(stdout)
  return m ? ssSeconds(m[1]!) : undefined
}
