import { randomBytes, randomUUID } from 'node:crypto'
import { sha256 } from '../lib/canonical-json.js'
import type { Db, Executor } from '../db/connect.js'
import { audit } from './audit.js'
import type { QueueName } from '../routing/index.js'
import type { ApiRole, Principal } from './principal.js'

/** A key's id, as listed: anything else is no key, and Postgres would refuse to compare it. */
export const KEY_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * The scope rules the CLI and POST /v1/keys both apply: a cad or console key names its agencies or
 * says "every agency" explicitly (a forgotten one must not grant the whole county), and only a
 * console key is narrowed to queues.
 */
export const mustNameAgencies = (role: ApiRole): boolean => role === 'cad' || role === 'console'
export const takesQueues = (role: ApiRole): boolean => role === 'console'
/** The audit log is read county-wide only: an auditor key limited to some agencies could read nothing. */
export const takesAgencies = (role: ApiRole): boolean => role !== 'auditor'

const KEY_PREFIX = 'cadr_'

/** 256 random bits: a plain SHA-256 is enough to store it (no dictionary to guess from). */
export function generateKey(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url')
}

export const hashKey = (key: string): string => sha256(key)

export interface NewKey {
  name: string
  role: ApiRole
  agencies: string[] | null
  queues: QueueName[] | null
  expiresAt: Date | null
  createdBy: string
}

export interface KeyView {
  id: string
  name: string
  role: ApiRole
  agencies: string[] | null
  queues: QueueName[] | null
  keyPrefix: string
  createdBy: string
  createdAt: string
  expiresAt: string | null
  revokedAt: string | null
}

type KeyRow = Awaited<ReturnType<typeof selectKeys>>[number]
const selectKeys = (db: Executor) => db.selectFrom('api_keys').select(['id', 'name', 'role', 'agencies', 'queues', 'key_prefix', 'created_by', 'created_at', 'expires_at', 'revoked_at']).execute()

function toView(r: KeyRow): KeyView {
  return {
    id: r.id,
    name: r.name,
    role: r.role as ApiRole,
    agencies: r.agencies,
    queues: r.queues as QueueName[] | null,
    keyPrefix: r.key_prefix,
    createdBy: r.created_by,
    createdAt: r.created_at.toISOString(),
    expiresAt: r.expires_at ? r.expires_at.toISOString() : null,
    revokedAt: r.revoked_at ? r.revoked_at.toISOString() : null,
  }
}

/** Stores a new key and returns it — the only time the key itself is ever seen. */
export async function createKey(db: Executor, input: NewKey, key: string = generateKey()): Promise<{ key: string; view: KeyView }> {
  const id = randomUUID()
  await db
    .insertInto('api_keys')
    .values({
      id,
      name: input.name,
      role: input.role,
      // A scope is a set: the same agency or queue named twice is stored once.
      agencies: input.agencies && [...new Set(input.agencies)],
      queues: input.queues && [...new Set(input.queues)],
      key_hash: hashKey(key),
      key_prefix: key.slice(0, KEY_PREFIX.length + 6),
      created_by: input.createdBy,
      expires_at: input.expiresAt,
    })
    .execute()
  const row = (await db.selectFrom('api_keys').select(['id', 'name', 'role', 'agencies', 'queues', 'key_prefix', 'created_by', 'created_at', 'expires_at', 'revoked_at']).where('id', '=', id).executeTakeFirstOrThrow())
  return { key, view: toView(row) }
}

export async function listKeys(db: Executor): Promise<KeyView[]> {
  return (await selectKeys(db)).sort((a, b) => a.created_at.getTime() - b.created_at.getTime()).map(toView)
}

export async function revokeKey(db: Executor, id: string): Promise<KeyView | undefined> {
  const row = await db
    .updateTable('api_keys')
    .set({ revoked_at: new Date() })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .returning(['id', 'name', 'role', 'agencies', 'queues', 'key_prefix', 'created_by', 'created_at', 'expires_at', 'revoked_at'])
    .executeTakeFirst()
  if (row) return toView(row)
  const existing = await db.selectFrom('api_keys').select(['id', 'name', 'role', 'agencies', 'queues', 'key_prefix', 'created_by', 'created_at', 'expires_at', 'revoked_at']).where('id', '=', id).executeTakeFirst()
  return existing ? toView(existing) : undefined
}

/** NOTIFY channel: a key changed (payload: its id; empty: any key). Sent by migration 0013's trigger. */
export const API_KEY_CHANNEL = 'cad_router_api_keys'

/** What authentication needs to know of a stored key. */
export interface StoredKey {
  principal: Principal
  expiresAt: Date | null
  revokedAt: Date | null
}

/** Whether a presented string can be a key at all (nothing else is looked up). */
export const looksLikeKey = (key: string): boolean => key.startsWith(KEY_PREFIX) && key.length <= 128

/** Checked at every use, cached or not: a key expires at its time, not at the next lookup. */
export const isUsable = (k: StoredKey, now: Date): boolean => !k.revokedAt && !(k.expiresAt && k.expiresAt <= now)

/** The stored key with this hash; the API asks through the key cache (key-cache.ts). */
export async function findKeyByHash(db: Executor, keyHash: string): Promise<StoredKey | undefined> {
  const row = await db
    .selectFrom('api_keys')
    .select(['id', 'name', 'role', 'agencies', 'queues', 'expires_at', 'revoked_at'])
    .where('key_hash', '=', keyHash)
    .executeTakeFirst()
  if (!row) return undefined
  // Frozen: a cached principal is shared by every request that presents the key.
  const principal: Principal = Object.freeze({
    keyId: row.id,
    name: row.name,
    role: row.role as ApiRole,
    agencies: row.agencies ? Object.freeze([...row.agencies]) : null,
    queues: row.queues ? Object.freeze([...(row.queues as QueueName[])]) : null,
  })
  return { principal, expiresAt: row.expires_at, revokedAt: row.revoked_at }
}

/**
 * ADMIN_API_KEY at start: make sure that key exists as an admin key (the first key of a fresh install).
 * Recorded in the audit log like every key created, in the same transaction.
 */
export async function ensureBootstrapKey(db: Db, key: string): Promise<boolean> {
  const existing = await db.selectFrom('api_keys').select('id').where('key_hash', '=', hashKey(key)).executeTakeFirst()
  if (existing) return false
  try {
    await db.transaction().execute(async (trx) => {
      const { view } = await createKey(trx, { name: 'bootstrap-admin', role: 'admin', agencies: null, queues: null, expiresAt: null, createdBy: 'ADMIN_API_KEY' }, key)
      await audit(trx, null, { action: 'key.create', targetType: 'api_key', targetId: view.id, details: { name: view.name, role: view.role, agencies: view.agencies, queues: view.queues } }, 'ADMIN_API_KEY')
    })
  } catch (err) {
    // Several processes started together with the same key: one stores it, the others find it stored.
    if ((err as { code?: string }).code === '23505') return false
    throw err
  }
  return true
}
