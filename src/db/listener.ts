import type { FastifyBaseLogger } from 'fastify'
import pg from 'pg'

export interface ChannelListenerOptions {
  /** The LISTEN connection is a client of its own: a pooled one would be handed to queries. */
  databaseUrl: string
  /** A NOTIFY channel: a plain identifier, named in the migration whose trigger sends it. */
  channel: string
  applicationName: string
  onNotify: (payload: string) => void
  /**
   * Each time the LISTEN is in place again, after the first connect or a reconnect: notifications
   * sent while no connection listened are lost, so whoever relies on them catches up here.
   */
  onListening: () => void
  log: Pick<FastifyBaseLogger, 'info' | 'warn'>
}

export interface ChannelListener {
  /** Whether a connection listens right now. */
  listening(): boolean
  /** Settles once the first attempt to listen has succeeded or failed (retries go on after). */
  started(): Promise<void>
  close(): Promise<void>
}

const RECONNECT_MS = 1000
const MAX_RECONNECT_MS = 10_000
const IDENTIFIER = /^[a-z_][a-z0-9_]*$/

/**
 * LISTENs on a channel on a connection of its own and reconnects after errors: 1 s after a lost
 * connection, doubling to 10 s while Postgres stays away. (The outbox relay holds its own copy
 * of this loop, with its polling tied in.)
 */
export function listenToChannel(opts: ChannelListenerOptions): ChannelListener {
  if (!IDENTIFIER.test(opts.channel)) throw new Error(`not a channel name: ${opts.channel}`)
  const { log } = opts
  let client: pg.Client | undefined
  let failures = 0
  let closed = false
  let timer: NodeJS.Timeout | undefined

  const retry = () => {
    if (closed) return
    const wait = Math.min(RECONNECT_MS * 2 ** failures++, MAX_RECONNECT_MS)
    timer = setTimeout(() => void listen(), wait)
    timer.unref()
  }

  async function listen(): Promise<void> {
    if (closed) return
    const c = new pg.Client({ connectionString: opts.databaseUrl, application_name: opts.applicationName })
    c.on('notification', (n) => {
      if (n.channel === opts.channel) opts.onNotify(n.payload ?? '')
    })
    // Each client schedules at most one reconnect, whether its loss comes as an event or a rejection.
    let gone = false
    const drop = (err: Error | undefined, what: string) => {
      if (gone) return
      gone = true
      if (client === c) client = undefined
      c.end().catch(() => {})
      if (!closed) log.warn({ channel: opts.channel, failures, err: { message: err?.message ?? 'connection ended' } }, what)
      retry()
    }
    c.on('error', (err) => drop(err, 'listener lost its connection; reconnecting'))
    c.on('end', () => drop(undefined, 'listener lost its connection; reconnecting'))
    try {
      await c.connect()
      await c.query(`listen ${opts.channel}`)
    } catch (err) {
      drop(err as Error, 'listener could not connect; retrying')
      return
    }
    if (closed) {
      gone = true
      await c.end().catch(() => {})
      return
    }
    client = c
    failures = 0
    opts.onListening()
  }
  const first = listen()

  return {
    listening: () => client !== undefined,
    started: () => first,
    async close() {
      if (closed) return
      closed = true
      clearTimeout(timer)
      const c = client
      client = undefined
      await c?.end().catch(() => {})
    },
  }
}
