import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { Executor } from '../db/connect.js'
import { listenToChannel, type ChannelListener, type Notifications } from '../db/listener.js'
import { API_KEY_CHANNEL, findKeyByHash, hashKey, isUsable, looksLikeKey, type StoredKey } from './keys.js'
import type { Principal } from './principal.js'

export interface KeyCacheOptions {
  db: Executor
  /** How long a looked-up key is trusted without asking Postgres again; 0: never (every request asks). */
  ttlMs: number
  /** At most this many keys are held; the least recently used goes first. */
  maxEntries: number
  /** The process's LISTEN connection, which hears of key changes. */
  notifications?: Notifications
  /** Else a LISTEN connection of the cache's own; without either only the TTL bounds a change's delay. */
  databaseUrl?: string
  log?: Pick<FastifyBaseLogger, 'info' | 'warn'>
  /** Monotonic milliseconds (tests). */
  clock?: () => number
}

/** Runs the lookup of a key the process does not know (see `authenticate`). */
export type UnknownKeyGate = <T>(lookup: () => Promise<T>) => Promise<T>

export interface KeyCache {
  /**
   * The principal behind a presented key, or undefined when it is unknown, expired or revoked.
   * A key this process does not know (never found valid, no answer held, no lookup of it in flight)
   * is looked up through `whenUnknown`, which may hold or refuse it (src/auth/plugin.ts): a CAD's key
   * whose entry has lapsed is looked up again at once, never behind guesses.
   */
  authenticate(key: string, whenUnknown?: UnknownKeyGate): Promise<Principal | undefined>
  /** Forgets a key (by id), or every key: call it once a change of a key has committed. */
  invalidate(keyId?: string): void
  /**
   * Calls `fn` when a key may have changed (revoked, expired early, narrowed): with its id, or
   * with undefined for any key (a change of every key, or the LISTEN connection (re)connected, so
   * notifications may have been lost). New keys are not changes. Returns the function that stops it.
   */
  onChange(fn: (keyId: string | undefined) => void): () => void
  /** Keys held now. */
  size(): number
  /** Whether the LISTEN connection is up (false when nothing has needed it yet). */
  listening(): boolean
  close(): Promise<void>
}

interface Entry {
  key: StoredKey
  until: number
}

const silent = { info: () => {}, warn: () => {} }

/**
 * Every request presents a key; asking Postgres each time costs a round trip per request. Keys
 * that were found are held for `ttlMs`, keyed by the key's hash (the key itself is never kept),
 * in a Map used as an LRU (a Map iterates in insertion order; a hit moves its entry to the end).
 *
 * - Refused keys (unknown, revoked or expired) are held apart, by hash, for `ttlMs` too, in a
 *   map of their own with the same bound: a client that keeps retrying with a stale key costs one
 *   lookup per `ttlMs`, not one per request, and guesses cannot push real keys out (only keys
 *   that exist enter the other map). Any change of any key, and any new key (migration 0017's
 *   NOTIFY on insert), forgets every refusal.
 * - Expiry and revocation are checked at every use, against the held row and the clock.
 * - A change of a key (revocation or any update) reaches every process through the NOTIFY of
 *   migration 0013's trigger; the process that made it also calls `invalidate` at once. While the
 *   LISTEN connection is down, the TTL bounds how long a change can go unseen, and a reconnect
 *   drops everything held (notifications sent meanwhile are lost).
 * - A lookup that was in flight when a key changed is not stored: it may have read the old row.
 *
 * The LISTEN connection opens on first use (or first `onChange`), so an app that serves no request
 * opens none. With `ttlMs` 0 nothing is held and only `onChange` needs it.
 */
export function createKeyCache(opts: KeyCacheOptions): KeyCache {
  const { db, ttlMs } = opts
  const log = opts.log ?? silent
  const clock = opts.clock ?? (() => performance.now())
  const maxEntries = Math.max(1, opts.maxEntries)
  const entries = new Map<string, Entry>()
  // Refused hashes → until when (clock()), oldest first.
  const refused = new Map<string, number>()
  // Hashes of keys found valid at some time, least recently found first (see knows()).
  const everValid = new Map<string, true>()
  // Lookups in flight, shared by concurrent requests with the same key (when a busy key's entry
  // lapses, its requests make one query, not one each).
  const inflight = new Map<string, Promise<StoredKey | undefined>>()
  // Bumped by every invalidation; a lookup started under an older generation is not stored.
  let generation = 0
  // Bumped whenever refusals are forgotten (any change, or a new key); a refusal found by a lookup
  // started before is not kept.
  let refusals = 0
  let listener: ChannelListener | undefined
  const watchers = new Set<(keyId: string | undefined) => void>()
  let closed = false

  function changed(keyId?: string): void {
    invalidate(keyId)
    for (const fn of watchers) fn(keyId)
  }

  function invalidate(keyId?: string): void {
    generation++
    inflight.clear()
    // A change may make a refused key usable again (revocation undone, expiry moved), and a
    // notification names the key's id, which refusals do not keep.
    forgetRefusals()
    if (keyId === undefined) {
      entries.clear()
      return
    }
    for (const [hash, e] of entries) if (e.key.principal.keyId === keyId) entries.delete(hash)
  }

  /** Puts `value` last in `map` (the most recent), dropping the oldest beyond `maxEntries`. */
  function putLast<V>(map: Map<string, V>, hash: string, value: V): void {
    map.delete(hash)
    map.set(hash, value)
    while (map.size > maxEntries) map.delete(map.keys().next().value as string)
  }

  function store(hash: string, key: StoredKey): void {
    putLast(entries, hash, { key, until: clock() + ttlMs })
    putLast(everValid, hash, true)
  }

  function forgetRefusals(): void {
    refusals++
    refused.clear()
  }

  function refuse(hash: string): void {
    putLast(refused, hash, clock() + ttlMs)
  }

  function startListening(): void {
    if (listener || closed) return
    listener = listenToChannel({ notifications: opts.notifications, databaseUrl: opts.databaseUrl, applicationName: 'cad-router-keys', log }, API_KEY_CHANNEL, {
      // '+id': a key was stored (migration 0017). Nothing held can be it, but it may have been
      // refused (ADMIN_API_KEY presented to this process before another one stored it), and its
      // first use must not wait behind unknown keys: learnt as the keys read at start are.
      onNotify: (payload) => {
        if (!payload.startsWith('+')) return changed(payload === '' ? undefined : payload)
        forgetRefusals()
        void learnKey(payload.slice(1))
      },
      onListening: () => {
        changed()
        void learnValidKeys()
      },
    })
  }

  // The hashes of the keys usable now, so that a process that has just started (a restart, a
  // deploy) knows its CADs' and consoles' keys before their first request: they never wait behind
  // unknown keys (src/auth/plugin.ts). Read on each (re)connect of the listener; a small table.
  async function learnValidKeys(): Promise<void> {
    try {
      const rows = await db
        .selectFrom('api_keys')
        .select('key_hash')
        .where('revoked_at', 'is', null)
        .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', new Date())]))
        .orderBy('created_at', 'desc')
        .limit(maxEntries)
        .execute()
      for (const r of rows.reverse()) putLast(everValid, r.key_hash, true)
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'API keys: could not read the valid keys; each is learned at its first use')
    }
  }

  /** A key just stored, by its id: known from now on (see learnValidKeys). */
  async function learnKey(id: string): Promise<void> {
    try {
      const row = await db.selectFrom('api_keys').select('key_hash').where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst()
      if (row) putLast(everValid, row.key_hash, true)
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'API keys: could not read a new key; it is learned at its first use')
    }
  }

  async function lookup(hash: string): Promise<StoredKey | undefined> {
    const pending = inflight.get(hash)
    if (pending) return pending
    const startedIn = generation
    const refusalsIn = refusals
    const p = findKeyByHash(db, hash).then(
      (found) => {
        if (startedIn === generation) {
          inflight.delete(hash)
          if (found && isUsable(found, new Date())) store(hash, found)
          else if (refusalsIn === refusals) refuse(hash)
        }
        return found
      },
      (err: unknown) => {
        if (startedIn === generation) inflight.delete(hash)
        throw err
      },
    )
    inflight.set(hash, p)
    return p
  }

  /** Whether this process knows the key by its hash (see KeyCache.authenticate). */
  function knows(hash: string): boolean {
    const refusedUntil = refused.get(hash)
    return entries.has(hash) || everValid.has(hash) || inflight.has(hash) || (refusedUntil !== undefined && clock() < refusedUntil)
  }

  /** authenticate's answer, by the key's hash. */
  async function principalOf(hash: string): Promise<Principal | undefined> {
    if (ttlMs === 0) {
      const found = await findKeyByHash(db, hash)
      if (!found || !isUsable(found, new Date())) return undefined
      putLast(everValid, hash, true)
      return found.principal
    }
    const held = entries.get(hash)
    if (held && clock() < held.until) {
      putLast(entries, hash, held)
      return isUsable(held.key, new Date()) ? held.key.principal : undefined
    }
    if (held) entries.delete(hash)
    const refusedUntil = refused.get(hash)
    if (refusedUntil !== undefined) {
      if (clock() < refusedUntil) return undefined
      refused.delete(hash)
    }
    const found = await lookup(hash)
    return found && isUsable(found, new Date()) ? found.principal : undefined
  }

  return {
    async authenticate(key, whenUnknown) {
      if (!looksLikeKey(key)) return undefined
      const hash = hashKey(key)
      if (ttlMs !== 0) startListening()
      // Once through the gate, held entries are read again: the key may have been found meanwhile.
      return whenUnknown && !knows(hash) ? whenUnknown(() => principalOf(hash)) : principalOf(hash)
    },
    invalidate,
    onChange(fn) {
      startListening()
      watchers.add(fn)
      return () => void watchers.delete(fn)
    },
    size: () => entries.size,
    listening: () => listener?.listening() ?? false,
    async close() {
      closed = true
      watchers.clear()
      invalidate()
      await listener?.close()
    },
  }
}
