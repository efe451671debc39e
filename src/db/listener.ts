import type { FastifyBaseLogger } from 'fastify'
import type pg from 'pg'
import { dedicatedClient } from './connect.js'

export interface ChannelHandlers {
  onNotify: (payload: string) => void
  /**
   * Each time the LISTEN is in place again, after the first connect or a reconnect: notifications
   * sent while no connection listened are lost, so whoever relies on them catches up here.
   */
  onListening: () => void
  /** The connection was lost (after onListening): nothing is heard until the next onListening. */
  onLost?: () => void
}

export interface ChannelListener {
  /** Whether a connection listens on the channel right now. */
  listening(): boolean
  /** Settles once the first attempt to listen has succeeded or failed (retries go on after). */
  started(): Promise<void>
  close(): Promise<void>
}

/**
 * One LISTEN connection for every channel a process follows. Postgres (15) signals every backend
 * that listens in the database at each commit that notifies, whatever the channel: each extra
 * listening connection costs every notifying commit 25–38 µs of Postgres CPU (bench/README.md).
 */
export interface Notifications {
  subscribe(channel: string, handlers: ChannelHandlers): ChannelListener
  close(): Promise<void>
}

export interface NotificationsOptions {
  /** The LISTEN connection is a client of its own: a pooled one would be handed to queries. */
  databaseUrl: string
  applicationName: string
  log: Pick<FastifyBaseLogger, 'info' | 'warn'>
  /** Close the connection with the last subscription: for a consumer that made this one for itself. */
  closeWhenEmpty?: boolean
}

/** The application_name of a process's shared LISTEN connection (pg_stat_activity). */
export const LISTEN_APPLICATION_NAME = 'cad-router-listen'

const RECONNECT_MS = 1000
const MAX_RECONNECT_MS = 10_000
const IDENTIFIER = /^[a-z_][a-z0-9_]*$/

interface Subscription extends ChannelHandlers {
  channel: string
  up: boolean
  settled: boolean
  settle(): void
}

/**
 * Connects on the first subscription and reconnects after errors: 1 s after a lost connection,
 * doubling to 10 s while Postgres stays away; each reconnect LISTENs again on every channel and
 * tells every subscriber (`onListening`).
 */
export function createNotifications(opts: NotificationsOptions): Notifications {
  const { log } = opts
  const subs = new Set<Subscription>()
  /** The connection, once it is connected; `listened`: the channels LISTENed on it. */
  let client: pg.Client | undefined
  let listened = new Set<string>()
  let connecting = false
  let syncing = false
  let syncAgain = false
  let failures = 0
  let closed = false
  let timer: NodeJS.Timeout | undefined
  let retryPending = false
  /** Drops the current connection (a failed LISTEN) and schedules the reconnect. */
  let dropCurrent: ((err: Error) => void) | undefined

  // One subscriber's throw must not keep the others from hearing, nor break the connection's loop.
  const guard = (f: () => void) => {
    try {
      f()
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'a notification handler failed')
    }
  }

  const channels = () => new Set([...subs].map((s) => s.channel))

  const retry = () => {
    if (closed || !subs.size) return
    const wait = Math.min(RECONNECT_MS * 2 ** failures++, MAX_RECONNECT_MS)
    retryPending = true
    timer = setTimeout(() => {
      retryPending = false
      start()
    }, wait)
    timer.unref()
  }

  // A failed attempt settles the first wait of everyone waiting; retries go on.
  const settleAll = () => {
    for (const s of subs) s.settle()
  }

  // connect() reports its own failures; this catches what escapes it (a malformed URL throws in the constructor).
  const start = () =>
    void connect().catch((err: unknown) => {
      connecting = false
      log.warn({ err: { message: (err as Error).message } }, 'listener could not start; retrying')
      settleAll()
      retry()
    })

  async function connect(): Promise<void> {
    if (closed || connecting || client || !subs.size) return
    connecting = true
    // A vanished peer is found, and a connect never answered given up (then retried): dedicatedClient.
    const c = dedicatedClient({ databaseUrl: opts.databaseUrl, applicationName: opts.applicationName })
    c.on('notification', (n) => {
      for (const s of subs) if (s.up && s.channel === n.channel) guard(() => s.onNotify(n.payload ?? ''))
    })
    // Each client schedules at most one reconnect, whether its loss comes as an event or a rejection.
    let gone = false
    const drop = (err: Error | undefined, what: string) => {
      if (gone) return
      gone = true
      if (client === c) {
        client = undefined
        listened = new Set()
        for (const s of subs) {
          if (!s.up) continue
          s.up = false
          if (s.onLost) guard(s.onLost)
        }
      }
      c.end().catch(() => {})
      if (!closed) log.warn({ channels: [...channels()], failures, err: { message: err?.message ?? 'connection ended' } }, what)
      settleAll()
      retry()
    }
    dropCurrent = (err) => drop(err, 'listener could not LISTEN; reconnecting')
    c.on('error', (err) => drop(err, 'listener lost its connection; reconnecting'))
    c.on('end', () => drop(undefined, 'listener lost its connection; reconnecting'))
    try {
      await c.connect()
    } catch (err) {
      connecting = false
      drop(err as Error, 'listener could not connect; retrying')
      return
    }
    connecting = false
    if (closed || !subs.size) {
      gone = true
      await c.end().catch(() => {})
      return
    }
    client = c
    // Only a connection that LISTENs counts as back: one that fails its LISTEN keeps backing off.
    if (await sync()) failures = 0
  }

  /**
   * Makes the connection's LISTENs match the subscriptions, and tells the new ones they listen.
   * False when the connection was lost or its LISTEN failed (the reconnect syncs again).
   */
  async function sync(): Promise<boolean> {
    if (syncing) {
      syncAgain = true
      return true
    }
    syncing = true
    try {
      do {
        syncAgain = false
        const c = client
        if (!c) return false
        const wanted = channels()
        const add = [...wanted].filter((ch) => !listened.has(ch))
        const remove = [...listened].filter((ch) => !wanted.has(ch))
        if (add.length || remove.length) {
          try {
            // Quoted: an identifier that is also a keyword (user) would not parse bare.
            await c.query([...add.map((ch) => `listen "${ch}"`), ...remove.map((ch) => `unlisten "${ch}"`)].join('; '))
          } catch (err) {
            // The connection is broken (or about to be): the reconnect LISTENs again.
            if (client === c) dropCurrent?.(err as Error)
            return false
          }
          if (client !== c) return false
          for (const ch of add) listened.add(ch)
          for (const ch of remove) listened.delete(ch)
        }
        for (const s of subs) {
          if (s.up || !listened.has(s.channel)) continue
          s.up = true
          s.settle()
          guard(() => s.onListening())
        }
      } while (syncAgain)
      return true
    } finally {
      syncing = false
    }
  }

  async function close(): Promise<void> {
    if (closed) return
    closed = true
    clearTimeout(timer)
    settleAll()
    for (const s of subs) s.up = false
    subs.clear()
    const c = client
    client = undefined
    await c?.end().catch(() => {})
  }

  return {
    subscribe(channel, handlers) {
      if (!IDENTIFIER.test(channel)) throw new Error(`not a channel name: ${channel}`)
      if (closed) throw new Error('notifications are closed')
      let settle!: () => void
      const first = new Promise<void>((resolve) => (settle = resolve))
      const sub: Subscription = {
        channel,
        ...handlers,
        up: false,
        settled: false,
        settle() {
          if (this.settled) return
          this.settled = true
          settle()
        },
      }
      subs.add(sub)
      // After the caller has its ChannelListener: onListening may run at once when the channel listens already.
      if (client) queueMicrotask(() => void sync())
      // A failure was just seen: the first wait ends now, rather than after the backoff.
      else if (retryPending) sub.settle()
      else start()
      return {
        listening: () => sub.up,
        started: () => first,
        async close() {
          if (!subs.delete(sub)) return
          sub.up = false
          sub.settle()
          if (opts.closeWhenEmpty && !subs.size) return close()
          if (client) await sync()
        },
      }
    },
    close,
  }
}

/**
 * A subscription on the process's shared connection when there is one, else on a connection of the
 * consumer's own (closed with the subscription); undefined without either (a consumer that then
 * relies on its timer alone).
 */
export function listenToChannel(
  o: { notifications?: Notifications | undefined; databaseUrl?: string | undefined; applicationName: string; log: NotificationsOptions['log'] },
  channel: string,
  handlers: ChannelHandlers,
): ChannelListener | undefined {
  const notifications = o.notifications ?? (o.databaseUrl ? createNotifications({ databaseUrl: o.databaseUrl, applicationName: o.applicationName, log: o.log, closeWhenEmpty: true }) : undefined)
  return notifications?.subscribe(channel, handlers)
}
