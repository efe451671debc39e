import { performance } from 'node:perf_hooks'
import pg from 'pg'

const { DatabaseError } = pg

/**
 * Postgres did not answer a query within the bound (DATABASE_QUERY_TIMEOUT_MS): the network drops
 * packets, or the server's host is frozen. The connection was dropped; the caller answers 503.
 */
export class PostgresSilentError extends Error {
  override name = 'PostgresSilentError'
  constructor(readonly ms: number) {
    super(`no answer from Postgres within ${ms} ms: its connection was dropped`)
  }
}

/** The query bound of a pool whose statement timeout is `statementTimeoutMs`, when none is given: twice it (at most a timer's limit). */
export const defaultQueryTimeoutMs = (statementTimeoutMs: number): number => Math.min(2 * statementTimeoutMs, 2_147_483_647)

/** When Postgres last answered each wrapped client (performance.now()): its connect, then each query, an error of the server's included. */
const answered = new WeakMap<pg.Client, number>()

/** When Postgres last answered `client`; 0 for a client dropSilentQueries never wrapped. */
export const lastAnsweredAt = (client: pg.Client): number => answered.get(client) ?? 0

type QueryFn = (...args: unknown[]) => unknown

const isPromise = (v: unknown): v is Promise<unknown> => typeof (v as Promise<unknown> | undefined)?.then === 'function'

/**
 * Gives up on a query of `client` that has no answer after `ms`, and destroys the connection.
 *
 * statement_timeout is Postgres' own: it cannot end a query whose server cannot be reached, and the
 * socket waits while the kernel retransmits (a quarter of an hour on Linux's defaults). pg's own
 * `query_timeout` rejects the query but keeps the client, the query still on the wire: released to
 * the pool (Kysely releases after an error as after a success), the next user's statements would
 * queue behind it and, once the network returned, run in whatever transaction it left open. So the
 * client is ended here (pg destroys the socket of a client with a query in flight), which the pool
 * sees at release and drops; its later queries (Kysely's rollback) fail at once with the same
 * error, so the caller sees why rather than "Client was closed". Postgres, if it still has the
 * session, rolls it back when the close reaches it or its idle_in_transaction_session_timeout ends
 * it (createPool sets it).
 *
 * Only promise-style calls (Kysely's, and ours) are timed, and only they tell lastAnsweredAt that
 * Postgres answered; cursors and callbacks pass through.
 */
export function dropSilentQueries(client: pg.Client, ms: number, onDrop?: (err: PostgresSilentError, sentAt: number) => void): void {
  const query = client.query.bind(client) as QueryFn
  let dropped: PostgresSilentError | undefined
  answered.set(client, performance.now())
  ;(client as unknown as { query: QueryFn }).query = (...args: unknown[]) => {
    const last = args[args.length - 1]
    if (dropped && typeof last !== 'function') return Promise.reject(dropped)
    const sentAt = performance.now()
    const result = query(...args)
    if (!isPromise(result)) return result
    return new Promise((resolve, reject) => {
      let settled = false
      const giveUp = () => {
        if (settled) return
        if (dropped) return reject(dropped)
        dropped = new PostgresSilentError(ms)
        // It fails with "Connection terminated" once the socket is destroyed: nobody waits for that.
        result.catch(() => {})
        client.end().catch(() => {})
        onDrop?.(dropped, sentAt)
        reject(dropped)
      }
      // After the next poll for I/O: an event loop that stalled past the bound runs the timer before
      // it reads an answer already waiting on the socket, which is no silence of Postgres's.
      const timer = setTimeout(() => setImmediate(giveUp), ms)
      result.then(
        (v) => {
          settled = true
          clearTimeout(timer)
          answered.set(client, performance.now())
          resolve(v)
        },
        (err: unknown) => {
          settled = true
          clearTimeout(timer)
          if (err instanceof DatabaseError) answered.set(client, performance.now())
          reject(err)
        },
      )
    })
  }
}
