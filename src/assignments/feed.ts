import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { sql, type RawBuilder } from 'kysely'
import type pg from 'pg'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import { dedicatedClient, type Db } from '../db/connect.js'
import type { ChannelListener, Notifications } from '../db/listener.js'
import { prepared } from '../db/prepared.js'
import { dropSilentQueries } from '../db/silent-queries.js'
import type { AssignmentRow } from '../db/schema.js'
import { AppError } from '../http/errors.js'
import { withTimeout } from '../lib/timeout.js'
import type { QueueName, Role } from '../routing/index.js'
import { assignmentColumns, toAssignmentView } from './repository.js'
import type { AssignmentView } from './schemas.js'
import type { AssignmentStatus } from './state-machine.js'

/*
 * The console feed: every change of an assignment (one row of assignment_transitions), in an order
 * that a reader can resume from without skipping or repeating a change.
 *
 * Position. Row ids are handed out at insert but rows become visible at commit, so "id > last id
 * read" would skip a row whose transaction committed late. Migration 0010 stamps each row with the
 * id of the transaction that wrote it (feed_xid; 0019: or the assignment's latest stamp, when higher,
 * so its changes keep their order). A read takes only rows whose feed_xid is below
 * the oldest transaction of this database still open (feedHorizon: every transaction below it has
 * ended, so nothing can appear there any more) and orders them by (feed_xid, id). A position is a
 * pair (xid, id); an event's id is its position, and after a complete read the reader stands at
 * (horizon, 0): everything below is seen. The price: a long write transaction in this database holds
 * the feed back until it ends (changes are delayed, never lost).
 *
 * Wake-ups. A trigger NOTIFYs at commit of every transaction that wrote a transition, whichever
 * process wrote it. One API instance (the holder of an advisory lock) LISTENs and republishes on
 * Redis pub/sub; every instance subscribes and reads Postgres on a wake-up. A message lost anywhere
 * only delays: each instance also polls every FEED_POLL_MS, and re-reads soon while changes are
 * committed but still above the xmin (held back by an older transaction that will not notify).
 *
 * Fan-out. Each instance runs one hub that reads all new changes once per wake-up and hands them to
 * its consoles in memory; a console that resumes from an older position first catches up from
 * Postgres, with its own filter, until it reaches the hub's position.
 */

export interface FeedPosition {
  xid: bigint
  id: number
}

export const comparePositions = (a: FeedPosition, b: FeedPosition): number => (a.xid < b.xid ? -1 : a.xid > b.xid ? 1 : a.id - b.id)

export const encodePosition = (p: FeedPosition): string => `${p.xid}-${p.id}`

const POSITION = /^(\d{1,20})-(\d{1,18})$/

/** Parses an event id (Last-Event-ID); anything else is a 400 naming the field. */
export function decodePosition(text: string, field: string): FeedPosition {
  const m = POSITION.exec(text.trim())
  const xid = m ? BigInt(m[1]!) : -1n
  const id = m ? Number(m[2]) : -1
  if (!m || xid >= 2n ** 64n || !Number.isSafeInteger(id)) {
    throw new AppError('validation-failed', 'not an event id this service issued', { invalidParams: [{ name: field, reason: 'unknown event id' }] })
  }
  return { xid, id }
}

/**
 * Refuses a position this database cannot have issued: one past every transaction that has ended
 * (`pg_snapshot_xmax`). After a restore from a backup, transaction ids start again lower than the
 * ones consoles hold, and a bogus id can be anything; a stream opened there would drop every change
 * at or below it, silent until the ids catch up. (xmax, 0) itself is a real position: a listing's
 * Feed-Position or the start of a stream on a quiet database, where nothing is running.
 */
export async function checkPositionIssued(db: Db, p: FeedPosition, field: string): Promise<void> {
  const { rows } = await sql<{ xmax: string }>`select pg_snapshot_xmax(pg_current_snapshot())::text as xmax`.execute(db)
  if (comparePositions(p, { xid: BigInt(rows[0]!.xmax), id: 0 }) > 0) {
    throw new AppError('validation-failed', 'this event id is ahead of the feed (from before a database restore, or not issued here); reconnect without it and reload the listing', {
      invalidParams: [{ name: field, reason: 'ahead of the feed' }],
    })
  }
}

/** Which changes a console may see: null means any; an empty list means none. */
export interface FeedScope {
  agencies: readonly string[] | null
  queues: readonly string[] | null
}

export const inScope = (s: FeedScope, agency: string, queue: string): boolean =>
  (s.agencies === null || s.agencies.includes(agency)) && (s.queues === null || s.queues.includes(queue))

const emptyScope = (s: FeedScope): boolean => s.agencies?.length === 0 || s.queues?.length === 0

/** The data of one `assignment` event. */
export interface FeedEventData {
  assignmentId: string
  callId: string
  agency: string
  queue: QueueName
  /** The status this change moved the assignment to. */
  status: AssignmentStatus
  transition: { from: string | null; to: string; role: string; actor: string; reason: string | null; at: string }
  /** The assignment as the listing shows it, with the status and role of this change. */
  assignment: AssignmentView
}

export interface FeedEvent {
  id: string
  position: FeedPosition
  agency: string
  queue: string
  data: FeedEventData
}

export interface FeedRead {
  events: FeedEvent[]
  /** Where the reader stands after this read. */
  next: FeedPosition
  /** Committed changes exist that were not readable yet (held back by an older transaction). */
  pending: boolean
}

type FeedRow = AssignmentRow & {
  pending: boolean
  t_xid: string | null
  t_id: number | null
  t_from: string | null
  t_to: string
  t_role: string
  t_actor: string
  t_reason: string | null
  t_at: Date
  t_agency: string | null
  t_queue: string | null
}

/** Changes a scoped read looks at, at most, in one statement (see readFeed). */
export const FEED_SCAN_WINDOW = 20_000

const TRANSITION_FEED_COLUMNS = ['feed_xid', 'id', 'assignment_id', 'from_status', 'to_status', 'role', 'actor', 'reason', 'at', 'feed_agency', 'feed_queue'] as const

/**
 * Changes after `after` in the scope, oldest first: up to `upTo` (a position already known to be
 * final), or else below the xid `below` (from feedHorizon).
 *
 * A scoped read looks at the next `scanWindow` changes at most, whatever their scope, and when it
 * finds fewer than `limit` of its own there it stands at the last change it looked at: a console
 * of a quiet queue resuming from far back catches up in statements of bounded length, rather than
 * one that reads the whole history in between (a scope that nothing matches read a year, 1.26
 * million changes, in one 270 ms statement; the statement timeout is 5 s).
 */
export async function readFeed(
  db: Db,
  o: { after: FeedPosition; upTo?: FeedPosition | undefined; below?: bigint | undefined; scope?: FeedScope | undefined; limit: number; scanWindow?: number },
): Promise<FeedRead> {
  const { after, upTo, below, scope, limit } = o
  if (!upTo && below === undefined) throw new Error('readFeed needs upTo or below')
  const window = scope && (scope.agencies !== null || scope.queues !== null) ? (o.scanWindow ?? FEED_SCAN_WINDOW) : undefined
  // The changes this read covers: on the table itself (the window, its end) and on the outer alias.
  const rangeOn = (column: (name: 'feed_xid' | 'id') => RawBuilder<unknown>) => {
    const key = sql`(${column('feed_xid')}, ${column('id')})`
    return sql`${key} > (${after.xid.toString()}::xid8, ${after.id}::bigint) and ${
      upTo ? sql`${key} <= (${upTo.xid.toString()}::xid8, ${upTo.id}::bigint)` : sql`${column('feed_xid')} < ${String(below)}::xid8`
    }`
  }
  const range = rangeOn((name) => sql.ref(name))
  // Whether the newest change lies at or above the horizon: one step down the index from its end.
  // (An exists() over "feed_xid >= below" was planned as a scan of the whole table, as nothing matches.)
  const pending = upTo
    ? sql`false`
    : sql`coalesce((select p.feed_xid >= ${String(below)}::xid8 from assignment_transitions p order by p.feed_xid desc, p.id desc limit 1), false)`
  // The window is a subquery with its own limit: read lazily, it costs nothing more when the
  // scope's page fills early.
  const changes = window
    ? sql`(select ${sql.join(TRANSITION_FEED_COLUMNS.map((c) => sql.ref(c)))} from assignment_transitions where ${range} order by feed_xid, id limit ${window})`
    : sql`assignment_transitions`
  // Prepared: a handful of shapes (scoped or not, bounded by a position or by the horizon).
  const { rows } = await prepared(sql<FeedRow>`
    select ${pending} as pending, r.*
    from (select 1) one left join lateral (
      select t.feed_xid as t_feed_xid, t.feed_xid::text as t_xid, t.id as t_id, t.from_status as t_from, t.to_status as t_to,
             t.role as t_role, t.actor as t_actor, t.reason as t_reason, t.at as t_at,
             t.feed_agency as t_agency, t.feed_queue as t_queue, ${assignmentColumns('a')}
      from ${changes} t join assignments a on a.id = t.assignment_id
      where ${rangeOn((name) => sql.ref(`t.${name}`))}
        ${scope?.agencies ? sql`and t.feed_agency = any(${[...scope.agencies]}::text[])` : sql``}
        ${scope?.queues ? sql`and t.feed_queue = any(${[...scope.queues]}::text[])` : sql``}
      order by t.feed_xid, t.id
      limit ${limit}
    ) r on true
    order by r.t_feed_xid, r.t_id`).execute(db)
  const head = rows[0]
  if (!head) throw new Error('feed read returned no row')
  const events: FeedEvent[] = []
  for (const r of rows) {
    if (r.t_xid === null || r.t_id === null) continue
    const position = { xid: BigInt(r.t_xid), id: r.t_id }
    const agency = r.t_agency ?? r.agency
    const queue = r.t_queue ?? r.queue
    const status = r.t_to as AssignmentStatus
    events.push({
      id: encodePosition(position),
      position,
      agency,
      queue,
      data: {
        assignmentId: r.id,
        callId: r.call_id,
        agency,
        queue: queue as QueueName,
        status,
        transition: { from: r.t_from, to: r.t_to, role: r.t_role, actor: r.t_actor, reason: r.t_reason, at: r.t_at.toISOString() },
        assignment: { ...toAssignmentView(r), status, role: r.t_role as Role },
      },
    })
  }
  const last = events[events.length - 1]
  // A full page may have more behind it; a short one of a window that was full stands at the
  // window's end (a second statement, but the range is final and its rows are never deleted: it
  // finds the same rows); otherwise everything below the xmin (and up to upTo) is seen.
  const end = events.length < limit && window ? await windowEnd(db, range, window) : undefined
  const next = events.length === limit && last ? last.position : (end ?? upTo ?? { xid: below!, id: 0 })
  return { events, next: comparePositions(next, after) > 0 ? next : after, pending: head.pending }
}

/** The position of the `window`-th change of the range, or undefined when fewer lie there (the index alone answers). */
async function windowEnd(db: Db, range: RawBuilder<unknown>, window: number): Promise<FeedPosition | undefined> {
  const { rows } = await prepared(sql<{ xid: string; id: number }>`
    select feed_xid::text as xid, id from assignment_transitions where ${range} order by feed_xid, id offset ${window - 1} limit 1`).execute(db)
  const row = rows[0]
  return row ? { xid: BigInt(row.xid), id: Number(row.id) } : undefined
}

/**
 * The xid below which no transaction of this database is still open: every row stamped below it is
 * visible to any later statement, or never will be. Other databases of the cluster do not count
 * (they cannot write here), so their long transactions do not hold the feed back.
 *
 * Why it is safe: the snapshot is taken when the statement starts, the activity list after it. A
 * transaction of this database running at the snapshot either still runs when the list is read (its
 * xid counts) or has ended before this statement returns (its rows are visible to the next one);
 * a transaction that gets its xid later gets one at or above the snapshot's xmax, the upper bound.
 * Run it on its own, not inside a transaction that read pg_stat_activity before (the list is
 * cached per transaction). Prepared (two-phase) transactions are not listed: this service uses none.
 */
export async function feedHorizon(db: Db): Promise<bigint> {
  const { rows } = await prepared(sql<{ horizon: string }>`
    with s as materialized (select pg_current_snapshot() as snap),
         ours as materialized (
           select backend_xid::text::bigint as x32 from pg_stat_get_activity(null)
           where datid = (select oid from pg_database where datname = current_database()) and backend_xid is not null
         )
    select coalesce(
      (select min(x) from s, pg_snapshot_xip(s.snap) as x where (x::text::numeric % 4294967296)::bigint in (select x32 from ours)),
      (select pg_snapshot_xmax(snap) from s)
    )::text as horizon`).execute(db)
  return BigInt(rows[0]!.horizon)
}

/**
 * A position from the xmin of the statement's own snapshot (open transactions of every database
 * count): in a repeatable-read transaction, everything before it is in that transaction's snapshot.
 */
export async function feedHead(db: Db): Promise<FeedPosition> {
  const { rows } = await sql<{ horizon: string }>`select pg_snapshot_xmin(pg_current_snapshot())::text as horizon`.execute(db)
  return { xid: BigInt(rows[0]!.horizon), id: 0 }
}

export interface FeedBatch {
  events: FeedEvent[]
  /** The hub's position after this batch: every change up to it has been handed out. */
  to: FeedPosition
}

export interface FeedHubDeps {
  db: Db
  log: FastifyBaseLogger
  /** The safety-net poll when no wake-up comes. */
  pollMs: number
  /**
   * At most one read per this many milliseconds: wake-ups in between wait for the next read.
   * Under load every committed transition wakes the hub, and a read per commit cost Postgres more
   * than the ingest it reported on.
   */
  minGapMs?: number
  pageSize?: number
}

const FIRST_RETRY_MS = 5

/** One per API instance: reads new changes once per wake-up and hands them to every listener. */
export function createFeedHub(deps: FeedHubDeps) {
  const { db, log, pollMs } = deps
  const pageSize = deps.pageSize ?? 500
  const minGapMs = deps.minGapMs ?? 0
  const listeners = new Set<(b: FeedBatch) => void>()
  let position: FeedPosition | undefined
  let running = false
  let reading = false
  let again = false
  let woken = false
  let lastRead = -Infinity
  let timer: NodeJS.Timeout | undefined
  let gapTimer: NodeJS.Timeout | undefined
  let retryMs = FIRST_RETRY_MS
  let failures = 0
  let readyWaiters: Array<() => void> = []

  const schedule = (ms: number) => {
    clearTimeout(timer)
    if (running) timer = setTimeout(() => void pump(), ms)
  }

  async function pump(): Promise<void> {
    if (!running) return
    if (reading) {
      woken = true
      return
    }
    const wait = lastRead + minGapMs - performance.now()
    if (wait > 0) {
      gapTimer ??= setTimeout(() => {
        gapTimer = undefined
        void pump()
      }, wait)
      return
    }
    reading = true
    woken = false
    lastRead = performance.now()
    let pending = false
    try {
      if (!position) {
        position = { xid: await feedHorizon(db), id: 0 }
        for (const w of readyWaiters) w()
        readyWaiters = []
      }
      do {
        again = false
        const r = await readFeed(db, { after: position, below: await feedHorizon(db), limit: pageSize })
        const moved = comparePositions(r.next, position) > 0
        position = r.next
        pending = r.pending
        if (moved) {
          retryMs = FIRST_RETRY_MS
          const batch = { events: r.events, to: r.next }
          for (const l of listeners) {
            try {
              l(batch)
            } catch (err) {
              log.warn({ err: { message: (err as Error).message } }, 'feed listener failed')
            }
          }
        }
        if (r.events.length === pageSize) again = true
      } while (again && running)
      if (failures) log.info({ afterFailures: failures }, 'assignment feed reads again')
      failures = 0
    } catch (err) {
      failures++
      if (running && (failures === 1 || failures % 20 === 0)) log.warn({ err: { message: (err as Error).message }, failures }, 'assignment feed could not read; retrying')
    } finally {
      reading = false
    }
    if (!running) return
    if (failures) return schedule(Math.min(100 * 2 ** failures, pollMs))
    // Woken while reading: read again, once the gap since this read's start has passed.
    if (woken) return void pump()
    if (pending) {
      // Committed changes wait behind an older transaction that may never notify: look again soon.
      schedule(retryMs)
      retryMs = Math.min(retryMs * 2, pollMs)
      return
    }
    schedule(pollMs)
  }

  return {
    start(): void {
      if (running) return
      running = true
      void pump()
    },
    stop(): void {
      running = false
      clearTimeout(timer)
      clearTimeout(gapTimer)
      gapTimer = undefined
      for (const w of readyWaiters) w()
      readyWaiters = []
    },
    /** Something may have changed: read now (coalesced with a read in progress). */
    wake(): void {
      if (running) void pump()
    },
    /** The hub's position, once it has one. */
    position: (): FeedPosition | undefined => position,
    /** Resolves when the hub knows its position (or stops); false after `ms` without one. */
    async ready(ms: number): Promise<boolean> {
      if (position) return true
      if (!running) return false
      let t: NodeJS.Timeout | undefined
      await new Promise<void>((resolve) => {
        readyWaiters.push(resolve)
        t = setTimeout(resolve, ms)
      })
      clearTimeout(t)
      return position !== undefined
    },
    listen(l: (b: FeedBatch) => void): () => void {
      listeners.add(l)
      return () => listeners.delete(l)
    },
    listenerCount: () => listeners.size,
  }
}

export type FeedHub = ReturnType<typeof createFeedHub>

/** Runs a read of a console catching up, on the database for it, when its turn comes. */
export type CatchUp = <T>(read: (db: Db) => Promise<T>) => Promise<T>

/**
 * A console's own view of the feed: starts at `from` (or at the hub's position), catches up from
 * Postgres with its scope until it reaches the hub, then takes the hub's batches. Never hands out
 * an event twice nor skips one: events at or before its position are dropped, and it joins the hub
 * only when nothing lies between them.
 */
export function subscribeFeed(
  o: {
    /** Runs each catch-up read on its database, when its turn comes (consoles share the connections for it). */
    catchUp: CatchUp
    hub: FeedHub
    scope: FeedScope
    from: FeedPosition | undefined
    pageSize?: number
  },
  /**
   * A returned promise says the socket is full and resolves when it can take more: during catch-up
   * it holds the next page back; live, the console stops taking the hub's batches and catches up
   * from Postgres once it resolves (memory stays bounded whatever the console's speed).
   */
  deliver: (events: FeedEvent[]) => void | Promise<void>,
): {
  /** Rejects when a catch-up (the first, or a later one after the console fell behind) cannot read. */
  failed: Promise<never>
  close: () => void
} {
  const { catchUp: inTurn, hub, scope } = o
  const pageSize = o.pageSize ?? 500
  let closed = false
  let live = false
  let at = o.from ?? hub.position()
  if (!at) throw new Error('the feed hub has no position yet')
  const unlisten = hub.listen((batch) => {
    if (!live || closed) return
    const events = batch.events.filter((e) => comparePositions(e.position, at!) > 0 && inScope(scope, e.agency, e.queue))
    if (comparePositions(batch.to, at!) > 0) at = batch.to
    if (!events.length) return
    const full = deliver(events)
    // The socket is full: stop taking batches (they would pile up in memory) and, once it drains,
    // catch up from Postgres from here, a page at a time, like a console that resumed.
    if (full) {
      live = false
      void run(full.then(catchUp))
    }
  })
  const catchUp = async (): Promise<void> => {
    while (!closed) {
      const target = hub.position()!
      if (emptyScope(scope) || comparePositions(at!, target) >= 0) {
        live = true
        return
      }
      const from = at!
      const r = await inTurn((db) => readFeed(db, { after: from, upTo: target, scope, limit: pageSize }))
      if (closed) return
      at = r.next
      if (r.events.length) await deliver(r.events)
    }
  }
  const close = () => {
    closed = true
    unlisten()
  }
  let fail: (err: unknown) => void = () => {}
  const failed = new Promise<never>((_, reject) => (fail = reject))
  const run = (p: Promise<void>) =>
    p.catch((err) => {
      close()
      fail(err)
    })
  void run(catchUp())
  return { failed, close }
}

export const FEED_CHANNEL = 'cad_router_feed'
const BRIDGE_LOCK = 'cad-router:feed-bridge'

export interface FeedSignalsDeps {
  /** For the connection that holds the bridge's lock. */
  databaseUrl: string
  /** The process's LISTEN connection: the bridge listens there while it holds the lock. */
  notifications: Notifications
  /** Publishes wake-ups; a dedicated subscriber connection is duplicated from it. */
  redis: Redis
  /** Redis channel, namespaced like the queues so tests and deployments do not hear each other. */
  channel: string
  log: FastifyBaseLogger
  onWake: () => void
  /** How often an instance that is not the bridge tries to become it. */
  bridgeRetryMs?: number
  /**
   * How often the bridge asks its lock's session whether it still answers (default 5 s). Postgres
   * ends that session after three of these without a word (idle_session_timeout): the lease.
   */
  bridgeCheckMs?: number
  /** A query of the lock's connection without an answer after this is given up, the connection dropped (default 5 s). */
  bridgeQueryTimeoutMs?: number
}

/**
 * Wake-ups across API instances: every instance subscribes to a Redis channel; one of them, the
 * bridge, republishes the commit-time NOTIFY there. Every instance follows the NOTIFY channel on
 * its process's LISTEN connection (which listens anyway, for keys and rule sets: Postgres signals it
 * at every notifying commit whatever its channels, so this one adds only the messages); while that connection listens, the instance tries to take a
 * session advisory lock, on a connection of its own, and the holder is the bridge. When its LISTEN
 * connection is lost the bridge lets the lock go, so an instance that still hears takes over; when
 * the bridge or its lock connection dies, the lock goes with it.
 *
 * A lock connection that goes silent (a frozen host, a network that drops packets) errs on
 * nothing, and ending it may never reach Postgres, whose session would keep the lock from every
 * instance. So the bridge's session is a lease: the bridge asks it something every bridgeCheckMs,
 * each query bounded, and drops the connection when one goes unanswered; Postgres ends a session
 * not asked anything for three checks (idle_session_timeout), whatever its TCP still believes, so
 * the lock is free again within that.
 */
export function createFeedSignals(deps: FeedSignalsDeps) {
  const { log, onWake, channel } = deps
  const retryMs = deps.bridgeRetryMs ?? 1000
  const checkMs = deps.bridgeCheckMs ?? 5000
  const queryTimeoutMs = deps.bridgeQueryTimeoutMs ?? 5000
  // An instance that is trying for the lock asks every retryMs, and that resets the lease too.
  const leaseMs = 3 * Math.max(checkMs, retryMs)
  let running = false
  let hearing = false
  let client: pg.Client | undefined
  let timer: NodeJS.Timeout | undefined
  let checkTimer: NodeJS.Timeout | undefined
  let bridging = false
  let listener: ChannelListener | undefined
  let publishing = false
  let publishAgain = false

  // Our own wake-ups come back through Redis too; the instance already woke itself for them.
  const me = randomUUID()
  // (Subscriber mode: nothing to auto-pipeline, whatever the publishing connection does; and its
  // SUBSCRIBE waits for Redis, without the API connection's command time-out.)
  const sub = deps.redis.duplicate({ lazyConnect: true, enableOfflineQueue: true, maxRetriesPerRequest: null, enableAutoPipelining: false, commandTimeout: undefined })
  sub.on('error', () => {})
  sub.on('message', (_channel: string, from: string) => {
    if (from !== me) onWake()
  })
  // Messages sent while the subscriber was away are lost: read once it is back.
  sub.on('ready', () => onWake())

  // Coalesced: while one publish is in flight, later notifications make one more.
  const publish = () => {
    onWake()
    if (publishing) {
      publishAgain = true
      return
    }
    publishing = true
    publishAgain = false
    deps.redis
      .publish(channel, me)
      .catch(() => {})
      .finally(() => {
        publishing = false
        if (publishAgain && running) publish()
      })
  }

  const retry = () => {
    clearTimeout(timer)
    if (running && hearing) timer = setTimeout(() => void bridge(), retryMs)
  }

  /** Ends the lock's session, which releases the lock at once for the other instances. */
  const letGo = () => {
    clearTimeout(timer)
    clearTimeout(checkTimer)
    bridging = false
    const c = client
    client = undefined
    c?.end().catch(() => {})
  }

  /** The lock's connection `c` failed or went silent: another instance, or a retry, takes over. */
  const lost = (c: pg.Client, err?: Error) => {
    if (client !== c) return
    if (bridging && running) log.warn({ err: { message: err?.message ?? 'connection ended' } }, 'feed bridge lost its Postgres connection; another instance or a retry takes over')
    bridging = false
    clearTimeout(checkTimer)
    client = undefined
    c.end().catch(() => {})
    retry()
  }

  /** While bridging: one bounded query now and then, which also renews the session's lease. */
  const check = (c: pg.Client) => {
    clearTimeout(checkTimer)
    checkTimer = setTimeout(() => {
      if (client !== c || !bridging) return
      c.query('select 1').then(
        () => check(c),
        (err: unknown) => lost(c, err as Error),
      )
    }, checkMs)
  }

  async function bridge(): Promise<void> {
    if (!running || !hearing || bridging) return
    // Keepalive, a bounded connect and the session options, as the LISTEN connection; and the lease.
    const c = client ?? dedicatedClient({ databaseUrl: deps.databaseUrl, applicationName: 'cad-router-feed', extraOptions: `-c idle_session_timeout=${leaseMs}` })
    if (!client) {
      client = c
      c.on('error', (err) => lost(c, err))
      c.on('end', () => lost(c))
      // A query without an answer ends the connection (which calls lost): never a bridge that waits forever.
      dropSilentQueries(c, queryTimeoutMs)
      try {
        await c.connect()
      } catch (err) {
        if (client === c) client = undefined
        c.end().catch(() => {})
        log.debug({ err: { message: (err as Error).message } }, 'feed bridge could not connect')
        return retry()
      }
    }
    try {
      const { rows } = await c.query<{ ok: boolean }>('select pg_try_advisory_lock(hashtext($1)) as ok', [BRIDGE_LOCK])
      if (client !== c) return
      if (!rows[0]?.ok) return retry()
      // Deaf or stopped while the lock was being taken: a bridge must hear.
      if (!running || !hearing) return letGo()
      bridging = true
      log.info('this instance relays assignment feed wake-ups to Redis')
      publish() // changes committed while no bridge was listening
      check(c)
    } catch (err) {
      log.debug({ err: { message: (err as Error).message } }, 'feed bridge could not take the lock')
      // On a new connection next time: this one may be the reason (lost() schedules the retry).
      lost(c, err as Error)
    }
  }

  return {
    async start(): Promise<void> {
      if (running) return
      running = true
      sub.connect().catch(() => {})
      sub.subscribe(channel).catch(() => {})
      listener = deps.notifications.subscribe(FEED_CHANNEL, {
        onNotify: () => {
          if (bridging) publish()
        },
        // (Each loss let the lock go: the instance that takes it publishes for what went unheard.)
        onListening: () => {
          hearing = true
          void bridge()
        },
        onLost: () => {
          hearing = false
          if (bridging) log.warn('feed bridge lost its LISTEN connection; it lets another instance take over')
          letGo()
        },
      })
      await listener.started()
    },
    async stop(): Promise<void> {
      running = false
      hearing = false
      await listener?.close()
      listener = undefined
      clearTimeout(timer)
      clearTimeout(checkTimer)
      bridging = false
      const c = client
      client = undefined
      // Ending the session releases the advisory lock at once for the other instances. Not waited
      // for long: over a silent connection the end never completes (Postgres ends the session at
      // its lease).
      if (c) await withTimeout(c.end(), 1000).catch(() => {})
      sub.disconnect()
    },
    isBridge: () => bridging,
  }
}

export type FeedSignals = ReturnType<typeof createFeedSignals>
