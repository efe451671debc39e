import type { FastifyRequest } from 'fastify'
import type { Kysely, Transaction } from 'kysely'
import type { Database } from '../db/schema.js'

export interface AuditEntry {
  action: string
  targetType: string
  targetId?: string | null
  agency?: string | null
  /** Ids and names only: never personal data. */
  details?: Record<string, unknown>
}

/**
 * Appends to the audit log who did what, when and from where. Written in the caller's transaction
 * where there is one, so an action and its record stand or fall together.
 */
export async function audit(db: Kysely<Database> | Transaction<Database>, req: FastifyRequest | null, entry: AuditEntry, actor?: string): Promise<void> {
  const p = req?.principal ?? null
  await db
    .insertInto('audit_log')
    .values({
      actor: actor ?? p?.name ?? 'system',
      key_id: p?.keyId ?? null,
      role: p?.role ?? null,
      action: entry.action,
      target_type: entry.targetType,
      target_id: entry.targetId ?? null,
      agency: entry.agency ?? null,
      source_ip: req?.ip ?? null,
      request_id: req?.id ?? null,
      details: entry.details ? JSON.stringify(entry.details) : null,
    })
    .execute()
}
