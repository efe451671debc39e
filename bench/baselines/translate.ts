/**
 * The default rule set, translated mechanically for the two engines it is compared with, so all
 * three decide the same table: first rule (in document order) whose `when` holds. The baselines
 * get the derived facts (mapped nature code, mental-health indicator) computed for them in plain
 * JS, and they record no trace — both are in their favour.
 */
import { FLAG_NAMES, MENTAL_HEALTH_NATURE_CODES, type Condition, type RoutingDecision, type RoutingFacts, type RuleSet } from '../../src/routing/index.js'

export type FlatFacts = Record<string, string | number | boolean>

export function flattener(doc: RuleSet): (f: RoutingFacts) => FlatFacts {
  const known = new Set(doc.natureCodes)
  const maps = doc.natureCodeMaps ?? {}
  return (f) => {
    const code = maps[f.agency]?.[f.natureCode] ?? f.natureCode
    const out: FlatFacts = {
      eventType: f.eventType,
      agency: f.agency,
      natureCode: code,
      priority: f.priority,
      mentalHealthIndicator: f.flags.mentalHealth || f.flags.suicidalIdeation || MENTAL_HEALTH_NATURE_CODES.has(code),
      cruAvailable: f.cru.available,
      unknownNatureCode: !known.has(code),
      caseManagerActive: f.history.caseManagerActive,
      priorCallsForSubject30d: f.history.priorCallsForSubject30d,
      priorCallsAtAddress30d: f.history.priorCallsAtAddress30d,
    }
    for (const name of FLAG_NAMES) out[name] = f.flags[name]
    return out
  }
}

/** The rule our engine's decision names: the overridden rule when a dispatcher override won. */
export const ruleOf = (d: RoutingDecision): string => d.override?.overriddenRuleId ?? d.ruleId

type JreCondition = Record<string, unknown>

/** json-rules-engine's condition tree (refs inlined). */
export function toJre(c: Condition, defs: Record<string, Condition>): JreCondition {
  if ('all' in c) return { all: c.all.map((x) => toJre(x, defs)) }
  if ('any' in c) return { any: c.any.map((x) => toJre(x, defs)) }
  if ('not' in c) return { not: toJre(c.not, defs) }
  if ('ref' in c) return toJre(defs[c.ref]!, defs)
  if ('flag' in c) return { fact: c.flag, operator: 'equal', value: true }
  if ('natureCode' in c) return { fact: 'natureCode', operator: 'in', value: c.natureCode }
  if ('agency' in c) return { fact: 'agency', operator: 'in', value: c.agency }
  if ('eventType' in c) return { fact: 'eventType', operator: 'in', value: c.eventType }
  if ('time' in c) throw new Error('time-of-day conditions have no baseline translation')
  if ('gte' in c || 'lte' in c) {
    const n = c as { fact: string; gte?: number; lte?: number }
    const parts: JreCondition[] = []
    if (n.gte !== undefined) parts.push({ fact: n.fact, operator: 'greaterThanInclusive', value: n.gte })
    if (n.lte !== undefined) parts.push({ fact: n.fact, operator: 'lessThanInclusive', value: n.lte })
    return { all: parts }
  }
  return { fact: c.fact, operator: 'equal', value: true }
}

const str = (xs: readonly string[]): string => `[${xs.map((x) => JSON.stringify(x)).join(', ')}]`

/** A ZEN expression (refs inlined). */
export function toZen(c: Condition, defs: Record<string, Condition>): string {
  if ('all' in c) return c.all.length ? `(${c.all.map((x) => toZen(x, defs)).join(' and ')})` : 'true'
  if ('any' in c) return `(${c.any.map((x) => toZen(x, defs)).join(' or ')})`
  if ('not' in c) return `(not ${toZen(c.not, defs)})`
  if ('ref' in c) return toZen(defs[c.ref]!, defs)
  if ('flag' in c) return `${c.flag} == true`
  if ('natureCode' in c) return `natureCode in ${str(c.natureCode)}`
  if ('agency' in c) return `agency in ${str(c.agency)}`
  if ('eventType' in c) return `eventType in ${str(c.eventType)}`
  if ('time' in c) throw new Error('time-of-day conditions have no baseline translation')
  if ('gte' in c || 'lte' in c) {
    const n = c as { fact: string; gte?: number; lte?: number }
    const parts = [n.gte !== undefined ? `${n.fact} >= ${n.gte}` : '', n.lte !== undefined ? `${n.fact} <= ${n.lte}` : ''].filter(Boolean)
    return `(${parts.join(' and ')})`
  }
  return `${c.fact} == true`
}

/** A one-table JDM graph: first hit, one standalone-expression column, the rule id as output. */
export function zenGraph(doc: RuleSet): object {
  const defs = doc.definitions ?? {}
  return {
    nodes: [
      { id: 'in', type: 'inputNode', name: 'request', position: { x: 0, y: 0 } },
      {
        id: 'table',
        type: 'decisionTableNode',
        name: 'rules',
        position: { x: 200, y: 0 },
        content: {
          hitPolicy: 'first',
          inputs: [{ id: 'when', name: 'when' }],
          outputs: [{ id: 'rule', name: 'ruleId', field: 'ruleId' }],
          rules: doc.rules.map((r) => ({ _id: r.id, when: toZen(r.when, defs), rule: JSON.stringify(r.id) })),
        },
      },
      { id: 'out', type: 'outputNode', name: 'response', position: { x: 400, y: 0 } },
    ],
    edges: [
      { id: 'e1', sourceId: 'in', targetId: 'table', type: 'edge' },
      { id: 'e2', sourceId: 'table', targetId: 'out', type: 'edge' },
    ],
  }
}
