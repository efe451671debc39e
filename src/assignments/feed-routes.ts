import type { ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import type { Redis } from 'ioredis'
import pLimit from 'p-limit'
import { z } from 'zod'
import { principalOf } from '../auth/plugin.js'
import type { KeyCache } from '../auth/key-cache.js'
import type { Principal } from '../auth/principal.js'
import { createDb, createPool, type Db } from '../db/connect.js'
import type { Notifications } from '../db/listener.js'
import { AppError } from '../http/errors.js'
import { problemResponses, type HeaderDoc } from '../http/openapi.js'
import { coalesced } from '../lib/coalesced.js'
import { QUEUES } from '../routing/index.js'
import { checkPositionIssued, createFeedHub, type CatchUp, createFeedSignals, decodePosition, encodePosition, inScope, subscribeFeed, type FeedEvent, type FeedHub, type FeedScope } from './feed.js'
import { assignmentSchema } from './schemas.js'

export interface AssignmentFeedDeps {
  db: Db
  databaseUrl: string
  /** The process's LISTEN connection (the feed bridge listens there). */
  notifications: Notifications
  redis: Redis
  /** Namespaces the Redis channel (the BullMQ prefix). */
  prefix: string
  log: FastifyBaseLogger
  pollMs: number
  /** See FEED_READ_GAP_MS. */
  readGapMs?: number
  heartbeatMs: number
}

const READY_MS = 5000
/** Catch-up reads in flight at once per process; the others wait their turn, a page at a time. */
const CATCH_UP_CONNECTIONS = 2
export const CATCH_UP_APPLICATION_NAME = 'cad-router-feed-catchup'

/**
 * The feed of one API instance. It starts on the first console that streams or long-polls, so an
 * app that serves none (tests, the OpenAPI generator) opens no extra connection.
 */
export function createAssignmentFeed(deps: AssignmentFeedDeps) {
  // The hub reads on a connection of its own: behind a pool busy with ingest, a wake-up would
  // wait for a free connection, and every console with it.
  const hubDb = createDb(createPool({ connectionString: deps.databaseUrl, max: 1, statementTimeoutMs: 5000, applicationName: 'cad-router-feed' }))
  // Consoles catching up (a resume from an old position, many after a restart) and long-polling
  // consoles woken by a change read on a small pool of their own: on the service's pool they could
  // take every connection ingest needs.
  // The readers wait their turn in `turns`, never in the pool (whose wait for a connection
  // times out at 3 s, as every pool's does, so that an unreachable Postgres answers 503 quickly).
  const catchUpDb = createDb(
    createPool({ connectionString: deps.databaseUrl, max: CATCH_UP_CONNECTIONS, statementTimeoutMs: 5000, applicationName: CATCH_UP_APPLICATION_NAME }),
  )
  const turns = pLimit(CATCH_UP_CONNECTIONS)
  const catchUp: CatchUp = (read) => turns(() => read(catchUpDb))
  const hub = createFeedHub({ db: hubDb, log: deps.log, pollMs: deps.pollMs, ...(deps.readGapMs !== undefined ? { minGapMs: deps.readGapMs } : {}) })
  const signals = createFeedSignals({ databaseUrl: deps.databaseUrl, notifications: deps.notifications, redis: deps.redis, channel: `${deps.prefix}:feed`, log: deps.log, onWake: hub.wake })
  let started: Promise<void> | undefined
  let stopped = false
  return {
    db: deps.db,
    catchUp,
    hub,
    signals,
    heartbeatMs: deps.heartbeatMs,
    /** Starts the feed once; throws 503 when it cannot learn its position from Postgres. */
    async ready(): Promise<FeedHub> {
      if (stopped) throw new AppError('service-unavailable', 'the server is shutting down')
      started ??= (async () => {
        hub.start()
        await signals.start()
      })()
      await started
      if (!(await hub.ready(READY_MS))) throw new AppError('service-unavailable', 'the assignment feed cannot read Postgres')
      return hub
    },
    async stop(): Promise<void> {
      stopped = true
      hub.stop()
      if (started) await signals.stop()
      await hubDb.destroy()
      await catchUpDb.destroy()
    },
  }
}

export type AssignmentFeed = ReturnType<typeof createAssignmentFeed>

/** What a console sees: its key's agencies and queues, narrowed by the query. */
export function feedScope(p: Principal, q: { queue?: string | undefined; agency?: string | undefined }): FeedScope {
  const narrow = (allowed: readonly string[] | null, asked: string | undefined) =>
    asked === undefined ? allowed : allowed === null || allowed.includes(asked) ? [asked] : []
  return { agencies: narrow(p.agencies, q.agency), queues: narrow(p.queues, q.queue) }
}

/**
 * Long-poll: listens to the hub from creation, so a change committed after the caller's read is
 * never missed; `next(ms)` resolves true on a change in scope since the previous call, false on
 * timeout or when the client goes away.
 */
export function feedWaiter(hub: FeedHub, scope: FeedScope, gone: ServerResponse, stopping?: AbortSignal) {
  let changes = 0
  let seen = 0
  let wakeUp: (() => void) | undefined
  let closed = stopping?.aborted === true
  const unlisten = hub.listen((b) => {
    if (b.events.some((e) => inScope(scope, e.agency, e.queue))) {
      changes++
      wakeUp?.()
    }
  })
  const onGone = () => {
    closed = true
    wakeUp?.()
  }
  gone.once('close', onGone)
  // The service is shutting down: the wait ends now (the console gets its 304 and asks another instance).
  stopping?.addEventListener('abort', onGone, { once: true })
  return {
    async next(ms: number): Promise<boolean> {
      if (changes === seen && !closed) {
        let t: NodeJS.Timeout | undefined
        await new Promise<void>((resolve) => {
          wakeUp = resolve
          t = setTimeout(resolve, ms)
        })
        clearTimeout(t)
        wakeUp = undefined
      }
      const changed = changes > seen && !closed
      seen = changes
      return changed
    },
    close(): void {
      unlisten()
      gone.off('close', onGone)
      stopping?.removeEventListener('abort', onGone)
    },
  }
}

const feedEventSchema = z
  .object({
    assignmentId: z.string().uuid(),
    callId: z.string(),
    agency: z.string(),
    queue: z.enum(QUEUES),
    status: z.string().describe('The status this change moved the assignment to'),
    transition: z.object({
      from: z.string().nullable(),
      to: z.string(),
      role: z.string(),
      actor: z.string(),
      reason: z.string().nullable(),
      at: z.string(),
    }),
    assignment: assignmentSchema.describe('The assignment as the listing shows it when the event is sent (its other fields may be newer than this change, on a replay especially), with the status and role of this change: take those two from here'),
  })
  .meta({ id: 'AssignmentFeedEvent' })

const streamQuery = z
  .object({
    queue: z.enum(QUEUES).optional(),
    agency: z.string().min(1).max(64).optional(),
    lastEventId: z.string().min(1).max(64).optional().describe('Resume after this event id, for clients that cannot send the Last-Event-ID header; the header wins'),
  })
  .strict()

const STREAM_HEADERS: Record<string, HeaderDoc> = {
  'Cache-Control': { description: '`no-cache, no-transform`: no cache or proxy keeps or rewrites the stream', schema: { type: 'string', example: 'no-cache, no-transform' } },
  'X-Accel-Buffering': { description: '`no`: nginx passes each event on at once instead of buffering the response', schema: { type: 'string', example: 'no' } },
}

const STREAM_DOC = [
  'Server-Sent Events (`text/event-stream`): every change of an assignment this key may see (its agencies and queues, narrowed by `queue` and `agency`), oldest first.',
  'Each change is one event:',
  '',
  '```',
  'id: <event id>',
  'event: assignment',
  'data: {"assignmentId":…,"callId":…,"agency":…,"queue":…,"status":…,"transition":{"from","to","role","actor","reason","at"},"assignment":{…as in the listing…}}',
  '```',
  '',
  'Lines starting with `:` are heartbeats (ignore them). A client that reconnects with `Last-Event-ID` (or `?lastEventId=`) receives every change after that event, once, in order — from any API instance.',
  'Without one, the stream starts with changes from now on; the opening `: connected` block carries its start position as `id:`, so a client that drops before its first event resumes without a gap. To follow on from a listing without a gap, pass the listing’s `Feed-Position` header as `lastEventId`, and apply events by assignment id.',
  'An event id ahead of the database (kept from before a restore, or never issued) is refused with 400.',
  'A slow client is sent changes as fast as it reads them; one that stops reading (its socket not drained for two heartbeats, or over 1 MB unread) is disconnected and resumes with `Last-Event-ID`. A change of the key’s role, agencies or queues, or its revocation, ends the stream as soon as the change is heard (milliseconds), at the next heartbeat at the latest.',
].join('\n')

const MAX_BUFFERED_BYTES = 1024 * 1024
const RECONNECT_MS = 2000

/** The same agencies or queues, in any order (null: all). */
function sameScope(a: readonly string[] | null, b: readonly string[] | null): boolean {
  if (a === null || b === null) return a === b
  const x = [...a].sort()
  const y = [...b].sort()
  return x.length === y.length && x.every((v, i) => v === y[i])
}

/**
 * Whether the key's row still grants what the stream (or a waiting long-poll) was opened with: not
 * revoked, not expired, and the same role, agencies and queues (a stream filters with the scope it
 * started with, so any change ends it; the console reconnects under the new one).
 */
export async function keyUnchanged(db: Db, p: Principal): Promise<boolean> {
  const row = await db.selectFrom('api_keys').select(['role', 'agencies', 'queues', 'revoked_at', 'expires_at']).where('id', '=', p.keyId).executeTakeFirst()
  return (
    !!row &&
    !row.revoked_at &&
    !(row.expires_at && row.expires_at <= new Date()) &&
    row.role === p.role &&
    sameScope(row.agencies, p.agencies) &&
    sameScope(row.queues, p.queues)
  )
}

// One text per event however many consoles it goes to: the hub hands every live stream the same
// event objects, and each console serialised its own copy of each before.
const frames = new WeakMap<FeedEvent, string>()

function frame(e: FeedEvent): string {
  let text = frames.get(e)
  if (text === undefined) {
    text = `id: ${e.id}\nevent: assignment\ndata: ${JSON.stringify(e.data)}\n\n`
    frames.set(e, text)
  }
  return text
}

export const feedRoutes: FastifyPluginAsyncZod<{ feed: AssignmentFeed; keys: Pick<KeyCache, 'onChange'> }> = async (app, { feed, keys }) => {
  const open = new Set<ServerResponse>()
  // Streams never end on their own: end them before the server waits for its connections to close.
  app.addHook('preClose', async () => {
    for (const res of open) res.end()
  })

  app.get(
    '/v1/assignments/stream',
    {
      // Fastify's HEAD runs the GET: here an answer with no body that never ends.
      exposeHeadRoute: false,
      config: { access: ['console', 'supervisor'], responseHeaders: { 200: STREAM_HEADERS } },
      schema: {
        tags: ['assignments'],
        operationId: 'streamAssignments',
        summary: 'Stream assignment changes to a console (Server-Sent Events)',
        description: STREAM_DOC,
        querystring: streamQuery,
        headers: z.looseObject({ 'last-event-id': z.string().max(64).optional().describe('The id of the last event received') }),
        response: {
          200: { description: 'A stream of `assignment` events; the schema is that of each event’s data', content: { 'text/event-stream': { schema: feedEventSchema } } },
          ...problemResponses(400, 401, 403, 429, 503),
        },
      },
    },
    async (req, reply) => {
      const p = principalOf(req)
      const scope = feedScope(p, req.query)
      const header = req.headers['last-event-id']
      const from = header
        ? decodePosition(header, 'headers.last-event-id')
        : req.query.lastEventId
          ? decodePosition(req.query.lastEventId, 'querystring.lastEventId')
          : undefined
      // Before the stream starts, so the refusal is an ordinary problem response.
      // Resuming consoles queue together for the catch-up connections, checked position included.
      if (from) await feed.catchUp((db) => checkPositionIssued(db, from, header ? 'headers.last-event-id' : 'querystring.lastEventId'))
      const hub = await feed.ready()
      // Where this stream starts, sent as the id of the connect block: a client that drops before
      // its first event resumes from here (an id-only block sets the last event id) instead of "now".
      const start = from ?? hub.position()!

      reply.hijack()
      const res = reply.raw
      // The console went away while the stream waited to start (its catch-up turn, the feed's
      // start): its 'close' has fired already, and nothing set up below would ever be taken down.
      if (res.destroyed || req.raw.destroyed) return
      const headers: Record<string, string> = {}
      for (const [k, v] of Object.entries(reply.getHeaders())) if (typeof v === 'string' || typeof v === 'number') headers[k] = String(v)
      res.writeHead(200, {
        ...headers,
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        'x-accel-buffering': 'no',
        'x-request-id': req.id,
      })
      open.add(res)

      // Pending while the socket is full (resolves on drain or close): one wait, and one pair of
      // listeners, per response however many writers find it full. `fullSince`: when it filled.
      let full: Promise<void> | undefined
      let fullSince = 0
      const drained = (): Promise<void> =>
        (full ??= new Promise<void>((resolve) => {
          fullSince = performance.now()
          const done = () => {
            res.off('drain', done)
            res.off('close', done)
            full = undefined
            resolve()
          }
          res.on('drain', done)
          res.on('close', done)
        }))
      /** Resolves when the socket can take more (catch-up waits for it; a live console falls back to catch-up). */
      const send = (text: string): void | Promise<void> => {
        if (res.writableEnded || res.destroyed) return
        // Pages and batches are written only once the socket has drained, so this much still unread
        // at a write means a console that does not read at all; it resumes by event id.
        if (res.writableLength > MAX_BUFFERED_BYTES) {
          req.log.warn({ buffered: res.writableLength }, 'assignment stream too slow; disconnected')
          res.destroy()
          return
        }
        if (res.write(text)) return
        return drained()
      }
      void send(`retry: ${RECONNECT_MS}\nid: ${encodePosition(start)}\n: connected\n\n`)
      const sub = subscribeFeed({ catchUp: feed.catchUp, hub, scope, from: start }, (events) => send(events.map(frame).join('')))
      // A stream outlives the request that authenticated it: a key revoked, expired or changed since
      // ends it, as soon as the change is heard (and at each heartbeat, should a notification be lost).
      // On the catch-up connections, one check at a time per stream: a listener that reconnects
      // makes every open stream check at once, and the service's pool is ingest's. A change heard
      // during a check is checked again after it: the check in flight may have read the old row.
      const checkKey = coalesced(async () => {
        if (res.writableEnded || res.destroyed) return
        try {
          if (!(await feed.catchUp((on) => keyUnchanged(on, p)))) res.end()
        } catch {
          // Postgres away: the next heartbeat checks again.
        }
      })
      const stopWatching = keys.onChange((keyId) => {
        if (keyId === undefined || keyId === p.keyId) void checkKey()
      })
      // A change made between the request's authentication and now was heard by nobody.
      void checkKey()
      const heartbeat = setInterval(() => {
        if (full) {
          // Nothing is written to a full socket (pages and batches wait for drain; a heartbeat would
          // only queue behind them). A console that has not read it empty for two heartbeats has
          // stopped reading: it is disconnected, and resumes by event id.
          const stalledMs = performance.now() - fullSince
          if (stalledMs >= 2 * feed.heartbeatMs) {
            req.log.warn({ buffered: res.writableLength, stalledMs: Math.round(stalledMs) }, 'assignment stream not read; disconnected')
            res.destroy()
            return
          }
        } else void send(': keep-alive\n\n')
        void checkKey()
      }, feed.heartbeatMs)
      res.on('close', () => {
        clearInterval(heartbeat)
        stopWatching()
        sub.close()
        open.delete(res)
      })
      sub.failed.catch((err) => {
        req.log.warn({ err: { message: (err as Error).message } }, 'assignment stream could not catch up; the client resumes by event id')
        res.end()
      })
    },
  )
}
