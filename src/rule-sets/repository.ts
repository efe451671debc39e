import type { Kysely, Transaction } from 'kysely'
import type { Database, RuleSetStatus } from '../db/schema.js'

type Executor = Kysely<Database> | Transaction<Database>

/** NOTIFY channel: the payload is the version just activated. */
export const RULE_SET_CHANNEL = 'cad_router_rule_set'
/** Advisory lock serialising rule-set writes (new versions, activations) across instances. */
export const RULE_SET_LOCK = 7_202_611

export async function activeVersion(db: Executor): Promise<number | undefined> {
  const row = await db.selectFrom('rule_sets').select('version').where('status', '=', 'active').executeTakeFirst()
  return row?.version
}

export async function loadDocument(db: Executor, version: number): Promise<unknown> {
  const row = await db.selectFrom('rule_sets').select('document').where('version', '=', version).executeTakeFirst()
  return row?.document
}

const summaryColumns = ['version', 'name', 'status', 'created_at', 'created_by', 'activated_at'] as const

export interface RuleSetSummaryRow {
  version: number
  name: string
  status: RuleSetStatus
  created_at: Date
  created_by: string
  activated_at: Date | null
}

export function listRuleSets(db: Executor): Promise<RuleSetSummaryRow[]> {
  return db.selectFrom('rule_sets').select(summaryColumns).orderBy('version', 'desc').execute()
}

export function findRuleSet(db: Executor, version: number) {
  return db.selectFrom('rule_sets').select([...summaryColumns, 'document']).where('version', '=', version).executeTakeFirst()
}

export async function latestVersion(db: Executor): Promise<number> {
  const row = await db.selectFrom('rule_sets').select((eb) => eb.fn.max('version').as('max')).executeTakeFirst()
  return Number(row?.max ?? 0)
}

export function listActivations(db: Executor, limit = 100) {
  return db
    .selectFrom('rule_set_activations')
    .select(['id', 'at', 'kind', 'from_version', 'to_version', 'actor', 'reason'])
    .orderBy('id', 'desc')
    .limit(limit)
    .execute()
}

export function lastActivation(db: Executor) {
  return db.selectFrom('rule_set_activations').select(['id', 'kind', 'from_version', 'to_version']).orderBy('id', 'desc').limit(1).executeTakeFirst()
}
