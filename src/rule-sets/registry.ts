import { compileRuleSet, loadDefaultRuleSet, type CompiledRuleSet, type RuleSet } from '../routing/index.js'
import type { Db } from '../db/connect.js'
import { canonicalJson } from '../lib/canonical-json.js'

/** Where the service gets the rule set it routes with. Versioned rule sets build on this. */
export interface RuleSetRegistry {
  active(): CompiledRuleSet
  /** A stored version, compiled (decisions record their version; replay needs the same one). */
  version(version: number): Promise<CompiledRuleSet | undefined>
}

/**
 * Stores the shipped default rule set (once; a version is immutable) and routes with it. Every
 * decision references its rule_sets row, so it can be replayed from what is stored.
 */
export async function createRuleSetRegistry(db: Db, document: RuleSet = loadDefaultRuleSet()): Promise<RuleSetRegistry> {
  const active = compileRuleSet(document)
  await db
    .insertInto('rule_sets')
    .values({ version: document.version, name: document.name, document: JSON.stringify(document) })
    .onConflict((oc) => oc.column('version').doNothing())
    .execute()
  const stored = await db.selectFrom('rule_sets').select('document').where('version', '=', document.version).executeTakeFirstOrThrow()
  if (canonicalJson(stored.document) !== canonicalJson(document)) {
    // Old decisions point at the stored text; routing with different rules under the same number
    // would make them impossible to replay.
    throw new Error(`rule set version ${document.version} differs from the stored version ${document.version}: give the changed rule set a new version`)
  }
  const cache = new Map<number, CompiledRuleSet>([[active.version, active]])
  return {
    active: () => active,
    async version(version) {
      const hit = cache.get(version)
      if (hit) return hit
      const row = await db.selectFrom('rule_sets').select('document').where('version', '=', version).executeTakeFirst()
      if (!row) return undefined
      const compiled = compileRuleSet(row.document as RuleSet)
      cache.set(version, compiled)
      return compiled
    },
  }
}
