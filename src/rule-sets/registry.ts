import type { FastifyBaseLogger } from 'fastify'
import { sql } from 'kysely'
import type { Db } from '../db/connect.js'
import { listenToChannel, type Notifications } from '../db/listener.js'
import { compileRuleSet, loadDefaultRuleSet, type CompiledRuleSet, type RuleSet } from '../routing/index.js'
import { activeVersion, loadDocument, RULE_SET_CHANNEL, RULE_SET_LOCK } from './repository.js'

/** Where the service gets the rule set it routes with. */
export interface RuleSetRegistry {
  /**
   * The active rule set, compiled. Synchronous (ingest asks on every event) and swapped as one
   * reference: a caller that takes it once and routes with it never mixes two versions.
   */
  active(): CompiledRuleSet
  /** A stored version, compiled (decisions record their version; replay needs the same one). */
  version(version: number): Promise<CompiledRuleSet | undefined>
  /** Reads which version is active now and switches to it (after an activation, a NOTIFY, the timer). */
  refresh(): Promise<CompiledRuleSet>
  close(): Promise<void>
}

export interface RuleSetRegistryOptions {
  /** The process's LISTEN connection. */
  notifications?: Notifications
  /** Else a LISTEN connection of the registry's own (not from the pool); without either only the timer switches. */
  databaseUrl?: string
  /** The safety net behind LISTEN/NOTIFY: how often to check which version is active. */
  checkEveryMs?: number
  log?: Pick<FastifyBaseLogger, 'info' | 'warn'>
  /** Stored as version 1 (active) when the database holds no rule set yet. */
  defaultDocument?: RuleSet
}

const silent = { info: () => {}, warn: () => {} }

/**
 * On first start stores the shipped default rule set as the active version; afterwards routes with
 * whatever version is active in the database, and follows activations made by any instance:
 * NOTIFY from the activating transaction switches every instance within milliseconds, and a
 * periodic check covers a lost listener connection.
 */
export async function createRuleSetRegistry(db: Db, opts: RuleSetRegistryOptions = {}): Promise<RuleSetRegistry> {
  const log = opts.log ?? silent
  await ensureInitialRuleSet(db, opts.defaultDocument ?? loadDefaultRuleSet())

  const cache = new Map<number, CompiledRuleSet>()
  async function version(v: number): Promise<CompiledRuleSet | undefined> {
    const hit = cache.get(v)
    if (hit) return hit
    const document = await loadDocument(db, v)
    if (document === undefined) return undefined
    const compiled = compileRuleSet(document as RuleSet)
    cache.set(v, compiled)
    return compiled
  }

  const first = await activeVersion(db)
  if (first === undefined) throw new Error('no active rule set')
  let current = (await version(first))!
  let issued = 0
  let applied = 0
  let closed = false

  async function refresh(): Promise<CompiledRuleSet> {
    // A refresh that started later saw a later state: an earlier one that ends last must not win.
    const ticket = ++issued
    const v = await activeVersion(db)
    const next = v === undefined ? current : ((await version(v)) ?? current)
    if (ticket > applied) {
      applied = ticket
      if (next !== current) {
        log.info({ from: current.version, to: next.version }, 'rule set switched')
        current = next
      }
    }
    return current
  }

  const safeRefresh = () => {
    if (!closed) refresh().catch((err: Error) => log.warn({ err: { message: err.message } }, 'rule set check failed; routing on with the current version'))
  }

  const timer = setInterval(safeRefresh, opts.checkEveryMs ?? 5000)
  timer.unref()

  // NOTIFY from an activation switches at once; each (re)connect catches up on what it missed.
  const listener = listenToChannel({ notifications: opts.notifications, databaseUrl: opts.databaseUrl, applicationName: 'cad-router-rule-sets', log }, RULE_SET_CHANNEL, {
    onNotify: safeRefresh,
    onListening: safeRefresh,
  })
  await listener?.started()

  return {
    active: () => current,
    version,
    refresh,
    async close() {
      if (closed) return
      closed = true
      clearInterval(timer)
      await listener?.close()
    },
  }
}

/** First start: the shipped default becomes the active version (once, whichever instance is first). */
async function ensureInitialRuleSet(db: Db, document: RuleSet): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${RULE_SET_LOCK})`.execute(trx)
    if ((await activeVersion(trx)) !== undefined) return
    const any = await trx.selectFrom('rule_sets').select('version').limit(1).executeTakeFirst()
    if (any) throw new Error('rule sets are stored but none is active: activate one (see README, Rule sets)')
    await trx
      .insertInto('rule_sets')
      .values({ version: document.version, name: document.name, document: JSON.stringify(document), status: 'active', activated_at: new Date() })
      .execute()
    await trx
      .insertInto('rule_set_activations')
      .values({ kind: 'initial', from_version: null, to_version: document.version, actor: 'system', key_id: null, reason: 'the shipped default rule set, loaded on first start' })
      .execute()
  })
}

/** A registry that always routes with one compiled rule set and stores nothing (tools, tests without a database). */
export function staticRuleSetRegistry(compiled: CompiledRuleSet): RuleSetRegistry {
  return { active: () => compiled, version: async (v) => (v === compiled.version ? compiled : undefined), refresh: async () => compiled, close: async () => {} }
}
