import { randomUUID } from 'node:crypto'
import type { FlagName } from '../../src/routing/index.js'

let n = 0

export interface EventInput {
  eventId?: string
  type?: 'call.created' | 'call.updated' | 'call.closed'
  occurredAt?: string
  callId?: string
  agency?: string
  natureCode?: string
  priority?: number
  flags?: Partial<Record<FlagName, boolean>>
  dispatcherOverride?: 'police' | 'cru' | 'co_response' | 'ems' | 'case_manager'
  disposition?: string
  personId?: string
  address?: string
}

/** A valid call event with realistic personal data, overridable field by field. */
export function callEvent(i: EventInput = {}) {
  n++
  return {
    eventId: i.eventId ?? `evt-${randomUUID()}`,
    type: i.type ?? 'call.created',
    occurredAt: i.occurredAt ?? new Date(Date.UTC(2026, 10, 23, 15, 0, n)).toISOString(),
    call: {
      callId: i.callId ?? `DC26-${randomUUID().slice(0, 8)}`,
      agency: i.agency ?? 'hastings-pd',
      natureCode: i.natureCode ?? 'EDP',
      priority: i.priority ?? 2,
      location: { address: i.address ?? '1200 Vermillion St', city: 'Hastings', lat: 44.73, lon: -92.85 },
      caller: { phone: '651-555-0142', name: 'Marta Lindqvist' },
      subject: { personId: i.personId ?? `P-${randomUUID().slice(0, 6)}`, name: 'Jonas Ekdahl', birthDate: '1987-04-12' },
      description: 'Caller reports her brother is pacing and talking about not wanting to live.',
      flags: i.flags ?? {},
      ...(i.dispatcherOverride ? { dispatcherOverride: i.dispatcherOverride } : {}),
      ...(i.disposition ? { disposition: i.disposition } : {}),
    },
  }
}
