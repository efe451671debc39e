/**
 * Shadow mode: one candidate rule-set version decides every live call beside the active one, on the
 * same facts, and the difference is stored (one row per live decision). Nothing the shadow decides
 * reaches a queue or the CAD's answer.
 *
 * Ingest must not pay a query for this on every call, so each instance keeps the shadow version in
 * memory: a change made through this instance applies at once; other instances pick it up within
 * `refreshMs` (the next ingest after that re-reads the setting, without waiting for it).
 */
import { sql } from 'kysely'
import type { Db, Executor } from '../db/connect.js'
import type { CompiledRuleSet, Route, RoutingDecision, RoutingFacts } from '../routing/index.js'
import { withCruHoursOf } from './facts.js'
import type { RuleSetRegistry } from './registry.js'

export interface ShadowSetting {
  version: number
  name: string
  setBy: string
  reason: string | null
  setAt: string
}

export interface ShadowSource {
  /** The shadow version, compiled, or null; never waits. */
  current(): CompiledRuleSet | null
  /** Re-reads the setting now. */
  refresh(): Promise<void>
  setting(): Promise<ShadowSetting | null>
  /**
   * Makes `version` the shadow (replacing any other); the caller audits in the same transaction and
   * calls refresh() once it has committed, so this instance follows at once.
   */
  set(db: Executor, version: number, by: string, reason: string | null): Promise<ShadowSetting>
  /** Ends shadowing of `version`; false when it was not the shadow. Then refresh(), as for set(). */
  clear(db: Executor, version: number): Promise<boolean>
}

export async function createShadowSource(db: Db, ruleSets: RuleSetRegistry, opts: { refreshMs?: number } = {}): Promise<ShadowSource> {
  const refreshMs = opts.refreshMs ?? 1000
  let compiled: CompiledRuleSet | null = null
  let readAt = -Infinity
  let inFlight: Promise<void> | null = null

  async function load(): Promise<void> {
    const row = await db.selectFrom('shadow_rule_set').select('version').executeTakeFirst()
    compiled = row ? ((await ruleSets.version(row.version)) ?? null) : null
    readAt = performance.now()
  }

  function refresh(): Promise<void> {
    inFlight ??= load().finally(() => {
      inFlight = null
    })
    return inFlight
  }

  /** After a change committed here: wait for any older read, then read again (it may predate the change). */
  async function reload(): Promise<void> {
    await inFlight?.catch(() => {})
    await refresh()
  }

  async function setting(): Promise<ShadowSetting | null> {
    const row = await db
      .selectFrom('shadow_rule_set as s')
      .innerJoin('rule_sets as r', 'r.version', 's.version')
      .select(['s.version', 'r.name', 's.set_by', 's.reason', 's.set_at'])
      .executeTakeFirst()
    return row ? { version: row.version, name: row.name, setBy: row.set_by, reason: row.reason, setAt: row.set_at.toISOString() } : null
  }

  // A database that is not there yet must not stop the app from starting: the next ingest retries.
  await refresh().catch(() => {})

  return {
    current() {
      if (performance.now() - readAt > refreshMs && !inFlight) refresh().catch(() => {})
      return compiled
    },
    refresh: reload,
    setting,
    async set(exec, version, by, reason) {
      const target = await ruleSets.version(version)
      if (!target) throw new Error(`rule set version ${version} not found`)
      const row = await exec
        .insertInto('shadow_rule_set')
        .values({ singleton: true, version, set_by: by, reason, set_at: sql<Date>`now()` })
        .onConflict((oc) => oc.column('singleton').doUpdateSet({ version, set_by: by, reason, set_at: sql<Date>`now()` }))
        .returning(['version', 'set_by', 'reason', 'set_at'])
        .executeTakeFirstOrThrow()
      return { version: row.version, name: target.name, setBy: row.set_by, reason: row.reason, setAt: row.set_at.toISOString() }
    },
    async clear(exec, version) {
      const r = await exec.deleteFrom('shadow_rule_set').where('version', '=', version).executeTakeFirst()
      return Number(r.numDeletedRows) > 0
    },
  }
}

/** What ingest knows about the live decision it just stored. */
export interface LiveDecision {
  decisionId: string
  callId: string
  agency: string
  ruleSetVersion: number
  decision: RoutingDecision
}

/**
 * The ingest step: the shadow version decides the same facts, with its own CRU hours (none apply to
 * a call CRU already holds: `cruHoldsCall`); the row records both answers. Ingest writes it in the
 * statement that stores the live decision; null when there is nothing to record.
 */
export function shadowDecisionRow(shadow: CompiledRuleSet, live: LiveDecision, facts: RoutingFacts, cruHoldsCall = false) {
  if (shadow.version === live.ruleSetVersion) return null // the shadow became the active version: nothing to compare
  let s: RoutingDecision
  try {
    s = shadow.decide(withCruHoursOf(shadow, facts, cruHoldsCall))
  } catch {
    // A candidate must never fail a live call; a version that cannot decide shows up as missing rows.
    return null
  }
  return {
    decision_id: live.decisionId,
    call_id: live.callId,
    agency: live.agency,
    event_type: facts.eventType,
    live_version: live.ruleSetVersion,
    shadow_version: shadow.version,
    nature_code: s.derived.natureCode,
    live_route: live.decision.route,
    shadow_route: s.route,
    live_rule_id: live.decision.ruleId,
    shadow_rule_id: s.ruleId,
    changed: s.route !== live.decision.route,
    mental_health: s.derived.mentalHealthIndicator,
    shadow_assignments: s.assignments,
  }
}

export interface ShadowReport {
  shadowVersion: number | null
  from: string
  to: string
  decisions: number
  calls: number
  changed: number
  changedCalls: number
  liveRouteMix: Record<Route, number>
  shadowRouteMix: Record<Route, number>
  byNatureCode: Array<{ natureCode: string; decisions: number; changed: number; moves: Array<{ from: Route; to: Route; count: number }> }>
}

/** Differences between live and shadow decisions made in [from, to) (closing events excluded: a close does not route). */
export async function shadowReport(db: Executor, range: { from: Date; to: Date; agencies: readonly string[] | null; version: number | null }): Promise<ShadowReport> {
  const zeroMix = (): Record<Route, number> => ({ police: 0, cru: 0, co_response: 0, ems: 0, case_manager: 0 })
  const report: ShadowReport = {
    shadowVersion: range.version,
    from: range.from.toISOString(),
    to: range.to.toISOString(),
    decisions: 0,
    calls: 0,
    changed: 0,
    changedCalls: 0,
    liveRouteMix: zeroMix(),
    shadowRouteMix: zeroMix(),
    byNatureCode: [],
  }
  if (range.agencies !== null && range.agencies.length === 0) return report
  let q = db
    .selectFrom('shadow_decisions')
    .select((eb) => [
      'nature_code',
      'live_route',
      'shadow_route',
      'changed',
      eb.fn.countAll<number>().as('n'),
    ])
    .where('created_at', '>=', range.from)
    .where('created_at', '<', range.to)
    .where('event_type', '<>', 'call.closed')
  if (range.version !== null) q = q.where('shadow_version', '=', range.version)
  if (range.agencies !== null) q = q.where('agency', 'in', [...range.agencies])
  const rows = await q.groupBy(['nature_code', 'live_route', 'shadow_route', 'changed']).execute()

  let totals = db
    .selectFrom('shadow_decisions')
    .select([sql<number>`count(distinct call_id)`.as('calls'), sql<number>`count(distinct call_id) filter (where changed)`.as('changed_calls')])
    .where('created_at', '>=', range.from)
    .where('created_at', '<', range.to)
    .where('event_type', '<>', 'call.closed')
  if (range.version !== null) totals = totals.where('shadow_version', '=', range.version)
  if (range.agencies !== null) totals = totals.where('agency', 'in', [...range.agencies])
  const t = await totals.executeTakeFirstOrThrow()
  report.calls = Number(t.calls)
  report.changedCalls = Number(t.changed_calls)

  const codes = new Map<string, ShadowReport['byNatureCode'][number]>()
  for (const r of rows) {
    const n = Number(r.n)
    report.decisions += n
    report.liveRouteMix[r.live_route as Route] += n
    report.shadowRouteMix[r.shadow_route as Route] += n
    const g = codes.get(r.nature_code) ?? { natureCode: r.nature_code, decisions: 0, changed: 0, moves: [] }
    g.decisions += n
    if (r.changed) {
      report.changed += n
      g.changed += n
      g.moves.push({ from: r.live_route as Route, to: r.shadow_route as Route, count: n })
    }
    codes.set(r.nature_code, g)
  }
  report.byNatureCode = [...codes.values()]
    .filter((g) => g.changed > 0)
    .map((g) => ({ ...g, moves: g.moves.sort((a, b) => b.count - a.count || a.from.localeCompare(b.from) || a.to.localeCompare(b.to)) }))
    .sort((a, b) => b.changed - a.changed || a.natureCode.localeCompare(b.natureCode))
  return report
}
