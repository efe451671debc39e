import { isIP } from 'node:net'
import { z } from 'zod'
import { defaultQueryTimeoutMs } from './db/silent-queries.js'
import { QUEUES, type QueueName } from './routing/types.js'

export const ROLE_NAMES = ['api', 'relay', 'worker'] as const
export type RoleName = (typeof ROLE_NAMES)[number]

const positiveInt = z.coerce.number().int().positive()
/**
 * The history window in days (HISTORY_WINDOW_MS; test/config.test.ts holds the two together). The
 * scrub clears the person id and address key prior calls are counted by: with a shorter
 * RETENTION_DAYS, calls inside the window drop out of the count (a case-managed repeat caller is
 * routed to CRU instead of the case manager, a frequent caller is not one).
 */
export const MIN_RETENTION_DAYS = 30
/**
 * A time in ms that a timer waits: at most what setTimeout and setInterval can wait (about 24.8
 * days). Beyond it Node waits 1 ms instead, and a check meant to run every month runs every ms.
 */
const durationMs = positiveInt.max(2_147_483_647)

/**
 * `police=30,cru=60`: a number per responder queue; queues not named have none, nor any with `none`.
 * `whole`: a count (jobs at once), where a fraction means nothing.
 */
const perQueue = (what: string, fallback: string, o: { whole?: boolean } = {}) =>
  z.string().default(fallback).transform((s, ctx) => {
    const out: Partial<Record<QueueName, number>> = {}
    if (s.trim() === 'none') return Object.freeze(out)
    for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
      const [queue, value, ...rest] = part.split('=').map((x) => x.trim())
      const n = Number(value)
      if (!(QUEUES as readonly string[]).includes(queue ?? '') || rest.length || value === undefined || value === '' || !Number.isFinite(n) || n <= 0 || (o.whole && !Number.isInteger(n))) {
        ctx.addIssue({ code: 'custom', message: `"${part}": expected queue=${what} with queue one of ${QUEUES.join(', ')} and a positive ${o.whole ? 'whole ' : ''}number` })
        continue
      }
      out[queue as QueueName] = n
    }
    return Object.freeze(out)
  })

/**
 * Which proxies' X-Forwarded-For to believe, as Fastify's `trustProxy` takes it: addresses and
 * CIDR ranges (and proxy-addr's `loopback`, `linklocal`, `uniquelocal`). Not a number of hops:
 * that cannot tell a proxy from a client who sends the header itself (Fastify trusts nothing for
 * one). Unset: none, and a request's address is the peer's, a load balancer's when there is one.
 */
const trustProxy = z
  .string()
  .optional()
  .transform((s, ctx): string[] | false => {
    if (s === undefined || s.trim() === '') return false
    const parts = s.split(',').map((p) => p.trim()).filter(Boolean)
    const bad = parts.filter((p) => !['loopback', 'linklocal', 'uniquelocal'].includes(p) && !isAddressOrRange(p))
    if (bad.length) ctx.addIssue({ code: 'custom', message: `"${bad.join(', ')}": expected the load balancers' addresses or CIDR ranges (10.20.0.5,10.20.0.6), comma separated` })
    return parts
  })

function isAddressOrRange(s: string): boolean {
  const [address, bits, ...rest] = s.split('/')
  const family = isIP(address ?? '')
  if (!family || rest.length) return false
  return bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128))
}

const fields = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  // Loopback by default: until API keys exist nothing but the local machine should reach the API.
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z.string().url().default('postgres://postgres@127.0.0.1:5432/cad_router'),
  DATABASE_POOL_SIZE: positiveInt.default(20),
  DATABASE_STATEMENT_TIMEOUT_MS: durationMs.default(5000),
  /**
   * A statement waiting this long for a lock another transaction holds (a session left open on a
   * call's row, say) fails instead of waiting out the statement timeout; 0: no limit of its own.
   * Unset: 1000, or half the statement timeout when that is shorter.
   */
  DATABASE_LOCK_TIMEOUT_MS: z.coerce.number().int().min(0).optional(),
  /**
   * A query Postgres has not answered after this long (a network that drops packets, a frozen
   * host: the statement timeout is Postgres' own and cannot fire then) is given up, its connection
   * destroyed, and the request answers 503; a session of ours left idle in a transaction this long
   * is ended by Postgres. Above the statement timeout; unset: twice it.
   */
  DATABASE_QUERY_TIMEOUT_MS: durationMs.optional(),
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  /**
   * After Redis fails to answer a request's command (the API connection's 1 s time-out, or no
   * connection), requests stop asking it for this long; then one PING asks whether it is back.
   */
  REDIS_BREAKER_OPEN_MS: durationMs.default(5000),
  BULLMQ_PREFIX: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only').default('cad-router'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ROLE: z
    .string()
    .default('api,relay,worker')
    .transform((s, ctx) => {
      const roles = [...new Set(s.split(',').map((r) => r.trim()).filter(Boolean))]
      for (const r of roles) {
        if (!(ROLE_NAMES as readonly string[]).includes(r)) {
          ctx.addIssue({ code: 'custom', message: `unknown role "${r}" (expected ${ROLE_NAMES.join(', ')})` })
        }
      }
      // An empty list would start nothing and exit 0, to be restarted, quietly, for ever.
      if (!roles.length) ctx.addIssue({ code: 'custom', message: `names no role (expected one or more of ${ROLE_NAMES.join(', ')}, comma separated)` })
      return roles as RoleName[]
    }),
  RELAY_POLL_MS: durationMs.default(1000),
  RELAY_BATCH_SIZE: positiveInt.max(1000).default(200),
  /**
   * The relay re-sends an assignment still queued this long after its job went to Redis, once BullMQ
   * no longer has that job to run (failed for good, or lost with Redis); twice as long after each re-send.
   */
  RELAY_RESEND_AFTER_MS: durationMs.default(30_000),
  /** How often the relay looks for such assignments. */
  RELAY_RESEND_SWEEP_MS: durationMs.default(10_000),
  WORKER_CONCURRENCY: positiveInt.default(8),
  /**
   * A worker holds a lock on each job it runs and renews it every half of this; a job whose lock
   * lapses is "stalled" and handed out again at the next stalled check. That happens when a worker
   * dies, and when Redis dies after handing a job over but before its answer reached the worker:
   * the job is then active under a lock nobody holds. Their sum bounds how late such a job runs
   * (BullMQ's 30 s each made it a minute).
   */
  WORKER_LOCK_DURATION_MS: durationMs.default(10_000),
  WORKER_STALLED_INTERVAL_MS: durationMs.default(5_000),
  /**
   * Group commit: call events that arrive together are stored in one transaction, up to this many
   * (1 turns it off), with this many transactions at once (each holds a connection of the pool).
   */
  INGEST_BATCH_MAX: positiveInt.max(500).default(32),
  INGEST_BATCH_CONCURRENCY: positiveInt.default(2),
  /** A further transaction starts only once the youngest in flight has run this long (or a full batch could start); 0: at once. */
  INGEST_BATCH_HOLD_MS: z.coerce.number().int().min(0).max(1000).default(10),
  /** Call events waiting for a transaction beyond this are answered 503 with Retry-After at once. */
  INGEST_QUEUE_MAX: positiveInt.default(2000),
  FOLLOW_UP_DEADLINE_HOURS: positiveInt.default(72),
  /** A closed mental-health call's follow-up is reserved until this many hours after closing, then offered. */
  FOLLOW_UP_DUE_HOURS: z.coerce.number().min(0).default(24),
  /** Seconds an offered assignment may wait for an acknowledgement before it escalates; queues not named wait forever. */
  ACK_DEADLINES: perQueue('seconds', 'police=30,cru=60,ems=30,case_management=120'),
  /** Jobs a worker process runs at once per queue; queues not named use WORKER_CONCURRENCY. */
  WORKER_CONCURRENCY_PER_QUEUE: perQueue('jobs', '', { whole: true }),
  /** The Postgres sweep behind the deadline jobs (escalations and due follow-ups Redis may have lost). */
  LIFECYCLE_SWEEP_MS: durationMs.default(15_000),
  /**
   * How long a stopping worker process lets its jobs in flight finish (all its workers at once)
   * before it hands the rest back to their queues. Below SHUTDOWN_GRACE_MS; unset: 5000, or half
   * of SHUTDOWN_GRACE_MS when that is shorter.
   */
  WORKER_DRAIN_MS: durationMs.optional(),
  /** Assignment feed: the safety-net poll when no wake-up arrives (wake-ups come through Redis). */
  FEED_POLL_MS: durationMs.default(1000),
  /** Assignment feed: at most one read of Postgres per this many ms per API instance (0: one per wake-up). */
  FEED_READ_GAP_MS: z.coerce.number().int().min(0).max(1000).default(10),
  /** Assignment feed: SSE comment lines this often, so proxies keep the stream open. */
  FEED_HEARTBEAT_MS: durationMs.default(15_000),
  SHUTDOWN_GRACE_MS: durationMs.default(10_000),
  BODY_LIMIT_BYTES: positiveInt.default(64 * 1024),
  /** `npm run migrate`'s statement time-out (its client gives up at twice it): a migration that reads a big table takes long. */
  MIGRATE_STATEMENT_TIMEOUT_MS: durationMs.default(60_000),
  TRUST_PROXY: trustProxy,
  RETRY_AFTER_SECONDS: positiveInt.default(5),
  /** Personal data is removed from calls closed longer ago than this. */
  // Below MIN_RETENTION_DAYS main.ts warns at start (a county's law may ask for less; refusing would
  // stop an upgraded instance). At most a century: more days than a date holds would make every
  // scrub's cut-off an invalid date.
  RETENTION_DAYS: positiveInt.max(36_500).default(90),
  RETENTION_EVERY_MS: durationMs.default(3600_000),
  /** How often each instance checks which rule set is active, behind LISTEN/NOTIFY (which switches at once). */
  RULE_SET_CHECK_MS: durationMs.default(5000),
  /**
   * How long an API process trusts a key it looked up without asking Postgres again (0: it asks on
   * every request). Revocation and other changes reach every process at once through NOTIFY; this
   * bounds the delay only while a process's LISTEN connection is down.
   */
  AUTH_CACHE_MS: z.coerce.number().int().min(0).max(60_000).default(5000),
  /** At most this many keys held per process (least recently used go first). */
  AUTH_CACHE_SIZE: positiveInt.max(1_000_000).default(1000),
  /** Requests per minute per API key (per address for requests without one). */
  RATE_LIMIT_PER_MINUTE: positiveInt.default(30_000),
  /** OpenTelemetry traces go to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318); off when unset. */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().url().optional(),
  OTEL_SERVICE_NAME: z.string().min(1).default('cad-router'),
  /** The first admin key of a fresh install (see README); stored as a hash at start. */
  ADMIN_API_KEY: z
    .string()
    .regex(/^cadr_[A-Za-z0-9_-]{40,100}$/, 'must look like cadr_ followed by at least 40 random base64url characters (see README)')
    .optional(),
})

const configSchema = fields
  .superRefine((c, ctx) => {
    const lock = c.DATABASE_LOCK_TIMEOUT_MS
    // Postgres would never get to use it: the statement timeout fires first.
    if (lock && lock >= c.DATABASE_STATEMENT_TIMEOUT_MS) {
      ctx.addIssue({ code: 'custom', path: ['DATABASE_LOCK_TIMEOUT_MS'], message: `must be below DATABASE_STATEMENT_TIMEOUT_MS (${c.DATABASE_STATEMENT_TIMEOUT_MS}), or 0` })
    }
    const query = c.DATABASE_QUERY_TIMEOUT_MS
    // At or below it, statements Postgres lets run would be cut by us.
    if (query && query <= c.DATABASE_STATEMENT_TIMEOUT_MS) {
      ctx.addIssue({ code: 'custom', path: ['DATABASE_QUERY_TIMEOUT_MS'], message: `must be above DATABASE_STATEMENT_TIMEOUT_MS (${c.DATABASE_STATEMENT_TIMEOUT_MS})` })
    }
    // The drain is part of the shutdown: at or past the grace period the process is killed (exit 1)
    // before it hands anything back.
    if (c.WORKER_DRAIN_MS && c.WORKER_DRAIN_MS >= c.SHUTDOWN_GRACE_MS) {
      ctx.addIssue({ code: 'custom', path: ['WORKER_DRAIN_MS'], message: `must be below SHUTDOWN_GRACE_MS (${c.SHUTDOWN_GRACE_MS})` })
    }
  })
  .transform((c) => ({
    ...c,
    DATABASE_LOCK_TIMEOUT_MS: c.DATABASE_LOCK_TIMEOUT_MS ?? Math.min(1000, Math.floor(c.DATABASE_STATEMENT_TIMEOUT_MS / 2)),
    DATABASE_QUERY_TIMEOUT_MS: c.DATABASE_QUERY_TIMEOUT_MS ?? defaultQueryTimeoutMs(c.DATABASE_STATEMENT_TIMEOUT_MS),
    WORKER_DRAIN_MS: c.WORKER_DRAIN_MS ?? Math.max(1, Math.min(5_000, Math.floor(c.SHUTDOWN_GRACE_MS / 2))),
  }))

export type Config = Readonly<z.infer<typeof configSchema>>

/** Every setting's name (the README's Configuration table has a row for each). */
export const SETTING_NAMES = Object.keys(fields.shape) as readonly (keyof typeof fields.shape)[]

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/**
 * A blank value (`FOO=`, or `FOO: ${FOO:-}` in a compose file) is read as unset, so it means the
 * default. Read as a number it would be 0, which for several settings silently means "off" (the lock
 * timeout, the key cache, the batch hold); read as a string it would stop the process.
 */
function withoutBlanks(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v.trim() !== '') out[k] = v
  return out
}

/** Parsed once at start; nothing else reads process.env. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = configSchema.safeParse(withoutBlanks(env))
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(env)'}: ${i.message}`)
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`)
  }
  return Object.freeze(parsed.data)
}

/** For the entry points: a bad setting is named on stderr (no stack trace) and the process exits with 2. */
export function loadConfigOrExit(): Config {
  try {
    return loadConfig()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`${err.message}\n`)
    return process.exit(2)
  }
}
