/**
 * Replay: decide a set of calls again with a rule-set version (and optionally a second one to
 * compare with) and report what the version would have done — route mix, capture, projected
 * diversion, and the calls whose route changes, by nature code. Pure: items carry their facts (the
 * facts stored with each decision), so the same input always gives the same report. CRU's hours in
 * them are each version's own (withCruHoursOf).
 */
import { ROUTES, type CompiledRuleSet, type Route, type RoutingDecision, type RoutingFacts } from '../routing/index.js'
import { withCruHoursOf } from './facts.js'

export interface ReplayItem {
  callId: string
  /** The stored facts, or — for call events without stored facts — facts built for each rule set. */
  facts: RoutingFacts | ((ruleSet: CompiledRuleSet) => RoutingFacts)
}

export type RouteMix = Record<Route, number>

export interface ReplayFigures {
  ruleSetVersion: number
  ruleSetName: string
  calls: number
  routeMix: RouteMix
  mentalHealthCalls: number
  /** Mental-health calls routed to CRU or a case manager (with CRU support). */
  capture: { captured: number; rate: number | null }
  /** Projected diversion: mental-health calls whose decision assigns no police at all. */
  diversion: { withoutPolice: number; rate: number | null }
  fallbacks: number
  overrides: number
  review: number
}

export interface RouteChange {
  callId: string
  natureCode: string
  agency: string
  from: Route
  to: Route
  fromRuleId: string
  toRuleId: string
}

export interface NatureCodeChanges {
  natureCode: string
  changed: number
  moves: Array<{ from: Route; to: Route; count: number }>
}

export interface ReplayReport {
  /** The version replayed. */
  candidate: ReplayFigures
  /** The version compared with (`against`), or null. */
  baseline: ReplayFigures | null
  changes: {
    total: number
    byNatureCode: NatureCodeChanges[]
    /** The changed calls, in input order, up to `changeLimit`. */
    calls: RouteChange[]
    truncated: boolean
  } | null
}

const rate = (n: number, d: number): number | null => (d === 0 ? null : Math.round((n / d) * 10_000) / 10_000)
const emptyMix = (): RouteMix => Object.fromEntries(ROUTES.map((r) => [r, 0])) as RouteMix

class Tally {
  calls = 0
  mix = emptyMix()
  mentalHealth = 0
  captured = 0
  withoutPolice = 0
  fallbacks = 0
  overrides = 0
  review = 0
  constructor(private readonly ruleSet: CompiledRuleSet) {}

  add(d: RoutingDecision): void {
    this.calls++
    this.mix[d.route]++
    if (d.fallback) this.fallbacks++
    if (d.override) this.overrides++
    if (d.review.length) this.review++
    if (d.derived.mentalHealthIndicator) {
      this.mentalHealth++
      if (d.route === 'cru' || d.route === 'case_manager') this.captured++
      if (!d.assignments.some((a) => a.queue === 'police')) this.withoutPolice++
    }
  }

  figures(): ReplayFigures {
    return {
      ruleSetVersion: this.ruleSet.version,
      ruleSetName: this.ruleSet.name,
      calls: this.calls,
      routeMix: { ...this.mix },
      mentalHealthCalls: this.mentalHealth,
      capture: { captured: this.captured, rate: rate(this.captured, this.mentalHealth) },
      diversion: { withoutPolice: this.withoutPolice, rate: rate(this.withoutPolice, this.mentalHealth) },
      fallbacks: this.fallbacks,
      overrides: this.overrides,
      review: this.review,
    }
  }
}

/** An accumulating replay: add items (in batches, from a file or the database), then report. */
export function createReplay(candidate: CompiledRuleSet, against: CompiledRuleSet | null = null, opts: { changeLimit?: number } = {}) {
  const changeLimit = opts.changeLimit ?? 200
  const mine = new Tally(candidate)
  const theirs = against ? new Tally(against) : null
  const byCode = new Map<string, Map<string, number>>()
  const changed: RouteChange[] = []
  let total = 0

  // Stored facts carry the deciding version's CRU hours: each version replays with its own.
  const factsOf = (item: ReplayItem, rs: CompiledRuleSet): RoutingFacts => (typeof item.facts === 'function' ? item.facts(rs) : withCruHoursOf(rs, item.facts))

  return {
    add(item: ReplayItem): void {
      const d = candidate.decide(factsOf(item, candidate))
      mine.add(d)
      if (!against || !theirs) return
      const facts = factsOf(item, against)
      const b = against.decide(facts)
      theirs.add(b)
      if (b.route === d.route) return
      total++
      const code = d.derived.natureCode
      const moves = byCode.get(code) ?? new Map<string, number>()
      const key = `${b.route}>${d.route}`
      moves.set(key, (moves.get(key) ?? 0) + 1)
      byCode.set(code, moves)
      if (changed.length < changeLimit) {
        changed.push({ callId: item.callId, natureCode: code, agency: facts.agency, from: b.route, to: d.route, fromRuleId: b.ruleId, toRuleId: d.ruleId })
      }
    },

    report(): ReplayReport {
      const byNatureCode: NatureCodeChanges[] = [...byCode.entries()]
        .map(([natureCode, moves]) => ({
          natureCode,
          changed: [...moves.values()].reduce((s, n) => s + n, 0),
          moves: [...moves.entries()]
            .map(([k, count]) => {
              const [from, to] = k.split('>') as [Route, Route]
              return { from, to, count }
            })
            .sort((a, b) => b.count - a.count || a.from.localeCompare(b.from) || a.to.localeCompare(b.to)),
        }))
        .sort((a, b) => b.changed - a.changed || a.natureCode.localeCompare(b.natureCode))
      return {
        candidate: mine.figures(),
        baseline: theirs ? theirs.figures() : null,
        changes: against ? { total, byNatureCode, calls: changed, truncated: total > changed.length } : null,
      }
    },
  }
}

/** The whole replay at once, for inputs already in memory. */
export function replay(items: Iterable<ReplayItem>, candidate: CompiledRuleSet, against: CompiledRuleSet | null = null, opts: { changeLimit?: number } = {}): ReplayReport {
  const r = createReplay(candidate, against, opts)
  for (const item of items) r.add(item)
  return r.report()
}

const pct = (r: number | null): string => (r === null ? '—' : `${(r * 100).toFixed(1)}%`)

/** The report as text for a terminal. */
export function formatReplayReport(report: ReplayReport): string {
  const { candidate: c, baseline: b } = report
  const col = (f: ReplayFigures) => `v${f.ruleSetVersion}`
  const lines: string[] = []
  lines.push(`Replay of rule set ${c.ruleSetVersion} (${c.ruleSetName})${b ? ` against ${b.ruleSetVersion} (${b.ruleSetName})` : ''}: ${c.calls} call(s)`)
  const row = (label: string, a: string, z?: string) => lines.push(`  ${label.padEnd(24)}${a.padStart(16)}${z === undefined ? '' : z.padStart(16)}`)
  row('', col(c), b ? col(b) : undefined)
  for (const r of ROUTES) row(r, String(c.routeMix[r]), b ? String(b.routeMix[r]) : undefined)
  row('mental-health calls', String(c.mentalHealthCalls), b ? String(b.mentalHealthCalls) : undefined)
  row('capture rate', `${pct(c.capture.rate)} (${c.capture.captured})`, b ? `${pct(b.capture.rate)} (${b.capture.captured})` : undefined)
  row('projected diversion', `${pct(c.diversion.rate)} (${c.diversion.withoutPolice})`, b ? `${pct(b.diversion.rate)} (${b.diversion.withoutPolice})` : undefined)
  row('CRU fallbacks', String(c.fallbacks), b ? String(b.fallbacks) : undefined)
  row('dispatcher overrides', String(c.overrides), b ? String(b.overrides) : undefined)
  if (report.changes) {
    lines.push(`Route changes: ${report.changes.total}`)
    for (const g of report.changes.byNatureCode) {
      lines.push(`  ${g.natureCode.padEnd(12)}${String(g.changed).padStart(6)}  ${g.moves.map((m) => `${m.from} → ${m.to} ×${m.count}`).join(', ')}`)
    }
  }
  return `${lines.join('\n')}\n`
}
