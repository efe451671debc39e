import type { Executor } from '../calls/repository.js'
import { QUEUES } from '../routing/index.js'
import {
  ackFigures,
  callFigures,
  escalationFigures,
  followUpFigures,
  repeatCallerFigures,
  type CallCounts,
  type CellKey,
  type EscalationCause,
  type ReportRange,
  zoneOf,
} from './repository.js'

const rate = (n: number, d: number): number | null => (d === 0 ? null : Math.round((n / d) * 10_000) / 10_000)

export interface Figures {
  calls: number
  mentalHealthCalls: number
  diversion: { closedMentalHealthCalls: number; withoutPoliceFieldResponse: number; rate: number | null }
  capture: {
    eligible: number
    captured: number
    rate: number | null
    toPolice: { fallback: number; override: number; escalation: number }
    otherRoute: number
  }
  routeMix: { police: number; cru: number; co_response: number; ems: number; case_manager: number }
  coResponseShare: number | null
  escalations: { total: number; causes: EscalationCause[] }
  timeToAcknowledge: Record<string, { acknowledged: number; p50Seconds: number | null; p90Seconds: number | null }>
  cruPhoneResolution: { closedCruCalls: number; resolvedByPhone: number; share: number | null }
  followUps: { created: number; completedOnTime: number; overdue: number }
}

export interface Cell extends Figures {
  agency: string | null
  bucketStart: string | null
}

export interface Summary {
  from: string
  to: string
  bucket: ReportRange['bucket']
  /** The zone whose days and weeks the buckets are. */
  timeZone: string
  generatedAt: string
  overall: Cell & { repeatCallers: RepeatCallerCounts }
  byAgency: Array<Cell & { repeatCallers: RepeatCallerCounts }>
  /** All agencies, one cell per bucket, oldest first. */
  series: Cell[]
  /** One cell per agency per bucket. */
  seriesByAgency: Cell[]
}

export interface RepeatCallerCounts {
  threshold: number
  windowDays: 30
  subjects: number
  calls: number
}

const ZERO_CALLS: CallCounts = {
  calls: 0, mentalHealth: 0, mentalHealthClosed: 0, diverted: 0, eligible: 0, captured: 0, policeOverride: 0, policeFallback: 0,
  escalated: 0, otherRoute: 0, routePolice: 0, routeCru: 0, routeCoResponse: 0, routeEms: 0, routeCaseManager: 0, cruClosed: 0, cruResolvedByPhone: 0,
}

const keyString = (k: CellKey) => `${k.agency ?? '*'}|${k.bucket ? k.bucket.toISOString() : '*'}`

/** Runs the report queries and assembles one cell per (agency or all) × (bucket or whole range). */
export async function buildSummary(db: Executor, range: ReportRange, opts: { asOf: Date; repeatThreshold: number }): Promise<Summary> {
  const [calls, escalations, acks, followUps, repeats] = await Promise.all([
    callFigures(db, range),
    escalationFigures(db, range),
    ackFigures(db, range),
    followUpFigures(db, range, opts.asOf),
    repeatCallerFigures(db, range, opts.repeatThreshold),
  ])
  const keys = new Map<string, CellKey>()
  for (const row of [...calls, ...escalations, ...acks, ...followUps]) keys.set(keyString(row), { agency: row.agency, bucket: row.bucket })
  keys.set(keyString({ agency: null, bucket: null }), { agency: null, bucket: null })

  const cell = (key: CellKey): Cell => {
    const k = keyString(key)
    const c = calls.find((r) => keyString(r) === k) ?? ZERO_CALLS
    const causes = escalations.filter((r) => keyString(r) === k).map(({ status, reason, count }) => ({ status, reason, count }))
    const ack = Object.fromEntries(
      QUEUES.map((q) => {
        const a = acks.find((r) => r.queue === q && keyString(r) === k)
        return [q, { acknowledged: a?.acknowledged ?? 0, p50Seconds: a?.p50Seconds ?? null, p90Seconds: a?.p90Seconds ?? null }]
      }),
    )
    const f = followUps.find((r) => keyString(r) === k)
    return {
      agency: key.agency,
      bucketStart: key.bucket ? key.bucket.toISOString() : null,
      calls: c.calls,
      mentalHealthCalls: c.mentalHealth,
      diversion: { closedMentalHealthCalls: c.mentalHealthClosed, withoutPoliceFieldResponse: c.diverted, rate: rate(c.diverted, c.mentalHealthClosed) },
      capture: {
        eligible: c.eligible,
        captured: c.captured,
        rate: rate(c.captured, c.eligible),
        toPolice: { fallback: c.policeFallback, override: c.policeOverride, escalation: c.escalated },
        otherRoute: c.otherRoute,
      },
      routeMix: { police: c.routePolice, cru: c.routeCru, co_response: c.routeCoResponse, ems: c.routeEms, case_manager: c.routeCaseManager },
      coResponseShare: rate(c.routeCoResponse, c.calls),
      escalations: { total: causes.reduce((s, x) => s + x.count, 0), causes },
      timeToAcknowledge: ack,
      cruPhoneResolution: { closedCruCalls: c.cruClosed, resolvedByPhone: c.cruResolvedByPhone, share: rate(c.cruResolvedByPhone, c.cruClosed) },
      followUps: { created: f?.created ?? 0, completedOnTime: f?.completedOnTime ?? 0, overdue: f?.overdue ?? 0 },
    }
  }
  const repeatFor = (agency: string | null): RepeatCallerCounts => {
    const r = repeats.find((x) => x.agency === agency)
    return { threshold: opts.repeatThreshold, windowDays: 30, subjects: r?.subjects ?? 0, calls: r?.calls ?? 0 }
  }
  const all = [...keys.values()]
  const byTime = (a: CellKey, b: CellKey) => (a.bucket?.getTime() ?? 0) - (b.bucket?.getTime() ?? 0) || (a.agency ?? '').localeCompare(b.agency ?? '')
  return {
    from: range.from.toISOString(),
    to: range.to.toISOString(),
    bucket: range.bucket,
    timeZone: zoneOf(range),
    generatedAt: opts.asOf.toISOString(),
    overall: { ...cell({ agency: null, bucket: null }), repeatCallers: repeatFor(null) },
    byAgency: all
      .filter((k) => k.agency !== null && k.bucket === null)
      .sort(byTime)
      .map((k) => ({ ...cell(k), repeatCallers: repeatFor(k.agency) })),
    series: all.filter((k) => k.agency === null && k.bucket !== null).sort(byTime).map(cell),
    seriesByAgency: all.filter((k) => k.agency !== null && k.bucket !== null).sort(byTime).map(cell),
  }
}

/** CSV columns: one row per cell, scope first. Escalation causes and repeat callers are summed or left to JSON. */
const COLUMNS: Array<[string, (c: Cell & { repeatCallers?: RepeatCallerCounts }) => string | number | null]> = [
  ['agency', (c) => c.agency ?? 'all'],
  ['bucket_start', (c) => c.bucketStart ?? 'all'],
  ['calls', (c) => c.calls],
  ['mental_health_calls', (c) => c.mentalHealthCalls],
  ['mh_closed', (c) => c.diversion.closedMentalHealthCalls],
  ['mh_closed_without_police_field_response', (c) => c.diversion.withoutPoliceFieldResponse],
  ['diversion_rate', (c) => c.diversion.rate],
  ['capture_eligible', (c) => c.capture.eligible],
  ['captured', (c) => c.capture.captured],
  ['capture_rate', (c) => c.capture.rate],
  ['to_police_fallback', (c) => c.capture.toPolice.fallback],
  ['to_police_override', (c) => c.capture.toPolice.override],
  ['to_police_escalation', (c) => c.capture.toPolice.escalation],
  ['capture_other_route', (c) => c.capture.otherRoute],
  ['route_police', (c) => c.routeMix.police],
  ['route_cru', (c) => c.routeMix.cru],
  ['route_co_response', (c) => c.routeMix.co_response],
  ['route_ems', (c) => c.routeMix.ems],
  ['route_case_manager', (c) => c.routeMix.case_manager],
  ['co_response_share', (c) => c.coResponseShare],
  ['escalations', (c) => c.escalations.total],
  ...QUEUES.flatMap((q): typeof COLUMNS => [
    [`ack_${q}_p50_s`, (c) => c.timeToAcknowledge[q]?.p50Seconds ?? null],
    [`ack_${q}_p90_s`, (c) => c.timeToAcknowledge[q]?.p90Seconds ?? null],
  ]),
  ['cru_closed', (c) => c.cruPhoneResolution.closedCruCalls],
  ['cru_resolved_by_phone', (c) => c.cruPhoneResolution.resolvedByPhone],
  ['cru_phone_share', (c) => c.cruPhoneResolution.share],
  ['follow_ups_created', (c) => c.followUps.created],
  ['follow_ups_completed_on_time', (c) => c.followUps.completedOnTime],
  ['follow_ups_overdue', (c) => c.followUps.overdue],
  ['repeat_caller_subjects', (c) => c.repeatCallers?.subjects ?? null],
  ['repeat_caller_calls', (c) => c.repeatCallers?.calls ?? null],
]

function csvField(v: string | number | null): string {
  if (v === null) return ''
  const s = String(v)
  // Quote when needed; a leading =, +, - or @ is prefixed so a spreadsheet never runs it as a formula.
  const safe = /^[=+\-@]/.test(s) && typeof v === 'string' ? `'${s}` : s
  return /[",\n\r]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe
}

function csvLines(rows: Array<Cell & { repeatCallers?: RepeatCallerCounts }>): string {
  const lines = [COLUMNS.map(([h]) => h).join(','), ...rows.map((r) => COLUMNS.map(([, f]) => csvField(f(r))).join(','))]
  return `${lines.join('\r\n')}\r\n`
}

export function summaryCsv(s: Summary): string {
  return csvLines([s.overall, ...s.byAgency, ...s.series, ...s.seriesByAgency])
}

/**
 * For the OpenAPI document: the header and an overall row, written by the same columns as the
 * answer, so the example cannot drift from it.
 */
export function summaryCsvExample(): string {
  const overall: Cell & { repeatCallers: RepeatCallerCounts } = {
    agency: null,
    bucketStart: null,
    calls: 8,
    mentalHealthCalls: 6,
    diversion: { closedMentalHealthCalls: 6, withoutPoliceFieldResponse: 2, rate: 0.3333 },
    capture: { eligible: 5, captured: 2, rate: 0.4, toPolice: { fallback: 1, override: 1, escalation: 1 }, otherRoute: 0 },
    routeMix: { police: 3, cru: 2, co_response: 1, ems: 1, case_manager: 1 },
    coResponseShare: 0.125,
    escalations: { total: 2, causes: [{ status: 'escalated', reason: 'not acknowledged in time', count: 2 }] },
    timeToAcknowledge: Object.fromEntries(QUEUES.map((q) => [q, q === 'ems' ? { acknowledged: 0, p50Seconds: null, p90Seconds: null } : { acknowledged: 2, p50Seconds: 90, p90Seconds: 456 }])),
    cruPhoneResolution: { closedCruCalls: 2, resolvedByPhone: 1, share: 0.5 },
    followUps: { created: 3, completedOnTime: 1, overdue: 1 },
    repeatCallers: { threshold: 3, windowDays: 30, subjects: 1, calls: 4 },
  }
  return csvLines([overall])
}
