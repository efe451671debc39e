/**
 * A stream of call events shaped like a CAD feed: mostly new calls, updates and closes of calls
 * already posted, and a few exact re-sends (a CAD retrying after a lost answer), each about 1 KB
 * with personal data. Per call, occurredAt only grows and nothing follows a close, so a correct
 * service answers every one of them with a 2xx.
 */
import { randomUUID } from 'node:crypto'
import { FLAG_NAMES, type FlagName } from '../../src/routing/index.js'
import { AGENCIES, FLAG_RATE, NATURE_BAG, pickWith, seededRandom } from './mix.js'

export interface CallEventBody {
  eventId: string
  type: 'call.created' | 'call.updated' | 'call.closed'
  occurredAt: string
  call: Record<string, unknown> & { callId: string; agency: string }
}

/** Shares of the mix; the rest are new calls. */
export const MIX = { update: 0.2, close: 0.15, resend: 0.02 }

const STREETS = ['Vermillion St', 'Pleasant Dr', 'Cedar Ave', 'Robert St', 'Diffley Rd', 'Galaxie Ave', 'Concord St', 'Hwy 55', 'Pilot Knob Rd', 'County Rd 42']
const CITIES = ['Hastings', 'Rosemount', 'Apple Valley', 'West St. Paul', 'South St. Paul', 'Eagan', 'Example City']
const DESCRIPTIONS = [
  'Caller reports her brother is pacing and talking about not wanting to live.',
  'Neighbour reports loud music and shouting from the apartment upstairs for the last hour.',
  'Driver reports a two-car collision at the intersection, no visible injuries, cars blocking a lane.',
  'Caller says an elderly man fell in the parking lot and cannot get up; he is conscious and talking.',
  'Store employee reports a man who appears confused and is refusing to leave the entrance.',
  'Caller reports a suspicious vehicle parked with its lights off in front of the school since midnight.',
]

export interface EventStreamOptions {
  seed?: number
  /** Distinct people and addresses: smaller pools give more history facts (repeat callers). */
  people?: number
  addresses?: number
  /** Prefix for call and event ids, so runs against the same database never collide. */
  runId?: string
}

export function createEventStream(opts: EventStreamOptions = {}) {
  const random = seededRandom(opts.seed)
  const pick = pickWith(random)
  const runId = opts.runId ?? randomUUID().slice(0, 8)
  const people = opts.people ?? 5000
  const addresses = opts.addresses ?? 3000
  // Calls that may still get an update or a close; bounded so the pool stays fresh.
  const open: { callId: string; call: Record<string, unknown> & { callId: string; agency: string } }[] = []
  const recent: CallEventBody[] = []
  let seq = 0
  // A strictly increasing occurredAt across the stream keeps every call's events in order.
  const base = Date.UTC(2026, 10, 23, 8, 0, 0)

  const flags = (): Partial<Record<FlagName, boolean>> => {
    const f: Partial<Record<FlagName, boolean>> = {}
    for (const name of FLAG_NAMES) if (random() < FLAG_RATE[name]) f[name] = true
    return f
  }

  function newCall(): CallEventBody['call'] {
    const n = Math.floor(random() * addresses)
    return {
      callId: `B${runId}-${++seq}`,
      agency: pick(AGENCIES),
      natureCode: pick(NATURE_BAG),
      priority: 1 + Math.floor(random() * 5),
      location: { address: `${100 + (n % 900)} ${STREETS[n % STREETS.length]}`, city: CITIES[n % CITIES.length], lat: 44.7 + (n % 100) / 1000, lon: -93.1 + (n % 97) / 1000 },
      caller: { phone: `651-555-${String(1000 + Math.floor(random() * 9000))}`, name: 'Marta Lindqvist' },
      subject: { personId: `P-${Math.floor(random() * people)}`, name: 'Jonas Ekdahl', birthDate: '1987-04-12' },
      description: pick(DESCRIPTIONS),
      flags: flags(),
    }
  }

  function event(type: CallEventBody['type'], call: CallEventBody['call']): CallEventBody {
    return { eventId: `e${runId}-${++seq}`, type, occurredAt: new Date(base + seq * 10).toISOString(), call }
  }

  function remember(e: CallEventBody): CallEventBody {
    recent.push(e)
    if (recent.length > 200) recent.shift()
    return e
  }

  return {
    next(): CallEventBody {
      const r = random()
      if (r < MIX.resend && recent.length) return pick(recent)
      if (r < MIX.resend + MIX.close && open.length) {
        const i = Math.floor(random() * open.length)
        const { call } = open[i]!
        open.splice(i, 1)
        return remember(event('call.closed', { ...call, disposition: pick(['resolved_by_phone', 'field_response', 'transported', 'no_contact']) }))
      }
      if (r < MIX.resend + MIX.close + MIX.update && open.length) {
        const entry = open[Math.floor(random() * open.length)]!
        // What a call-taker learns a minute later: a new flag, a changed priority.
        entry.call = { ...entry.call, priority: 1 + Math.floor(random() * 5), flags: { ...(entry.call.flags as object), ...flags() } }
        return remember(event('call.updated', entry.call))
      }
      const call = newCall()
      open.push({ callId: call.callId, call })
      if (open.length > 500) open.shift()
      return remember(event('call.created', call))
    },
  }
}
