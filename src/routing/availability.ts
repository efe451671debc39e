/**
 * Whether CRU covers an agency at an instant, from the rule set's weekly schedule. Pure: the instant
 * is an argument, and the local weekday and time come from Intl, so DST changes are handled by the
 * time-zone database rather than by offsets we compute.
 */
import { DAYS, DEFAULT_TIME_ZONE, type Day, type RuleSet } from './rule-set.js'

export interface CruAvailability {
  available: boolean
  reason: string | null
}

interface Window {
  days: ReadonlySet<number> // 0 = Monday
  from: number // minutes after local midnight
  to: number // minutes; <= from means the window runs past midnight into the next day
}

interface Schedule {
  key: string // the cru entry: the agency's own, or "*"
  limit: number | null // maxOpenAssignments
  always: boolean
  windows: Window[]
  timeZone: string
  reason: string // why CRU is unavailable outside the windows (the agency is filled in per call)
}

const DAY_LABELS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'] as const
const SHORT_WEEKDAY: Readonly<Record<string, number>> = { Mon: 0, Tue: 1, Wed: 2, Thu: 3, Fri: 4, Sat: 5, Sun: 6 }

const minutes = (hhmm: string): number => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5))

/** "Mon–Fri", "Sat–Sun", "Mon, Wed": runs of consecutive days collapse to a range. */
export function describeDays(days: readonly Day[]): string {
  const idx = [...new Set(days.map((d) => DAYS.indexOf(d)))].sort((a, b) => a - b)
  const parts: string[] = []
  for (let i = 0; i < idx.length; ) {
    let j = i
    while (j + 1 < idx.length && idx[j + 1] === idx[j]! + 1) j++
    const a = DAY_LABELS[idx[i]!]!
    const b = DAY_LABELS[idx[j]!]!
    parts.push(i === j ? a : `${a}–${b}`)
    i = j + 1
  }
  return parts.join(', ')
}

// Compiled once per rule-set document: availability is asked on every call event.
const compiled = new WeakMap<RuleSet, Map<string, Schedule>>()
const formatters = new Map<string, Intl.DateTimeFormat>()

function scheduleFor(ruleSet: RuleSet, agency: string): Schedule {
  let byAgency = compiled.get(ruleSet)
  if (!byAgency) {
    byAgency = new Map()
    compiled.set(ruleSet, byAgency)
  }
  const key = Object.hasOwn(ruleSet.cru, agency) ? agency : '*'
  let schedule = byAgency.get(key)
  if (!schedule) {
    const entry = ruleSet.cru[key]
    // The schema guarantees a "*" entry; a document that skipped validation gets no CRU at all.
    const timeZone = entry?.timeZone ?? ruleSet.timeZone ?? DEFAULT_TIME_ZONE
    const windows = entry === undefined || entry.schedule === 'always' ? [] : entry.schedule
    const hours = windows.map((w) => `${describeDays(w.days)} ${w.from}–${w.to}`).join('; ')
    schedule = {
      key,
      limit: entry?.maxOpenAssignments ?? null,
      always: entry?.schedule === 'always',
      windows: windows.map((w) => ({ days: new Set(w.days.map((d) => DAYS.indexOf(d))), from: minutes(w.from), to: minutes(w.to) })),
      timeZone,
      reason: hours ? `(${hours} ${timeZone})` : `(no CRU hours, ${timeZone})`,
    }
    byAgency.set(key, schedule)
  }
  return schedule
}

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone)
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
    formatters.set(timeZone, f)
  }
  return f
}

/** The local weekday (0 = Monday) and minutes after midnight of an instant in a time zone. */
export function localTime(at: Date, timeZone: string): { day: number; minute: number } {
  let day = 0
  let hour = 0
  let minute = 0
  for (const part of formatter(timeZone).formatToParts(at)) {
    if (part.type === 'weekday') day = SHORT_WEEKDAY[part.value] ?? 0
    else if (part.type === 'hour') hour = Number(part.value) % 24 // some ICU versions say "24" at midnight
    else if (part.type === 'minute') minute = Number(part.value)
  }
  return { day, minute: hour * 60 + minute }
}

/** The time zone an agency's local time is read in: its cru entry's, else the rule set's. */
export function agencyTimeZone(ruleSet: RuleSet, agency: string): string {
  return scheduleFor(ruleSet, agency).timeZone
}

/** A time window of a rule condition, compiled: days (0 = Monday, all when absent) and minutes. */
export function compileWindow(w: { days?: readonly Day[]; from: string; to: string }): Window {
  return { days: new Set((w.days ?? DAYS).map((d) => DAYS.indexOf(d))), from: minutes(w.from), to: minutes(w.to) }
}

export type { Window as CompiledWindow }

export const inWindow = (w: Window, day: number, minute: number): boolean => {
  if (w.from < w.to) return w.days.has(day) && minute >= w.from && minute < w.to
  // Past midnight: the evening part on a listed day, the early part on the day after one.
  return (w.days.has(day) && minute >= w.from) || (w.days.has((day + 6) % 7) && minute < w.to)
}

/** Which open CRU assignments count against an agency's capacity, or null when it has no limit. */
export interface CruCapacity {
  limit: number
  /** The agencies whose open CRU assignments count: `agencies`, or (for the "*" entry) every agency except them. */
  agencies: string[]
  except: boolean
}

export function cruCapacity(ruleSet: RuleSet, agency: string): CruCapacity | null {
  const schedule = scheduleFor(ruleSet, agency)
  if (schedule.limit === null) return null
  // The "*" entry is one team (the county line) shared by every agency without an entry of its own.
  if (schedule.key === '*') return { limit: schedule.limit, agencies: Object.keys(ruleSet.cru).filter((k) => k !== '*'), except: true }
  return { limit: schedule.limit, agencies: [agency], except: false }
}

/** Agencies whose open CRU assignments count against the same limit share this key (one CRU team). */
export function cruTeamKey(c: CruCapacity): string {
  return c.except ? '*' : c.agencies.join(',')
}

/** How the reason of CRU closed by its hours starts: replay and shadow mode tell it by this (src/rule-sets/facts.ts). */
export const OUTSIDE_CRU_HOURS = 'outside CRU hours'

/**
 * CRU availability for an agency at an instant (DESIGN rule 7). An agency without its own entry
 * uses the "*" entry (the county CRU line, 24/7 in the default rule set). `openCruAssignments`
 * is the count that cruCapacity describes; with the entry's maxOpenAssignments or more open, CRU
 * takes no new call.
 */
export function cruAvailability(ruleSet: RuleSet, agency: string, at: Date, openCruAssignments?: number): CruAvailability {
  const schedule = scheduleFor(ruleSet, agency)
  if (!schedule.always) {
    const { day, minute } = localTime(at, schedule.timeZone)
    if (!schedule.windows.some((w) => inWindow(w, day, minute))) return { available: false, reason: `${OUTSIDE_CRU_HOURS} for ${agency} ${schedule.reason}` }
  }
  if (schedule.limit !== null && openCruAssignments !== undefined && openCruAssignments >= schedule.limit) {
    const team = schedule.key === '*' ? 'the county CRU line' : agency
    return { available: false, reason: `CRU at capacity for ${team} (${openCruAssignments} open CRU assignments, limit ${schedule.limit})` }
  }
  return { available: true, reason: null }
}
