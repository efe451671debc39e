import { randomUUID } from 'node:crypto'
import type { Db } from '../../src/db/connect.js'

/**
 * A small, hand-checked world for the report tests and the dashboard test, written straight into
 * the tables so every timestamp is chosen. Times are offsets from `t0` (a UTC midnight; a Monday in
 * the report test): `at(day, hour, minute, second)`.
 *
 * Calls (H = hastings-pd, R = rosemount-pd; MH = mental-health indicator):
 *   H0  day -10  police        not MH              closed   subject P1                   (before the range)
 *   H1  day 0 10h cru          MH                  closed   resolved_by_phone   P1
 *   H2  day 0 12h police       MH, CRU fallback    closed   field_response      P1
 *   H3  day 1  9h co_response  MH + weapons        closed   field_response      P1
 *   H4  day 8  9h police       not MH              open                         P2
 *   H5  day 8 10h cru          MH, escalated       closed   field_response
 *   R1  day 0 15h police       MH, override police closed   field_response      P3
 *   R2  day 7  8h case_manager MH                  closed   no_contact          P3
 *   R3  day 9  8h ems          not MH              open
 *   X   day 14 1h cru          MH                  open                          (after the range)
 *
 * Assignments (created when the call was, unless said) and their moves:
 *   H1: cru primary: ack +60 s, accepted, completed (resolved_by_phone).
 *       follow_up created day 0 11h, reserved until day 0 23h, due day 3 11h: accepted day 1 9h (+22 h; +10 h
 *       after its reservation), completed day 1 10h (on time).
 *   H2: police primary: ack +120 s, accepted, completed. follow_up created day 0 13h, due day 3 13h: still queued (overdue).
 *   H3: police primary: accepted +30 s (no acknowledge first), completed. cru support: ack +180 s, accepted.
 *   H4: police primary: queued; expired at +10 min (not acknowledged), queued again; still waiting.
 *   H5: cru primary: escalated at +5 min (not acknowledged), cancelled.
 *   Their reasons are written as the service writes them: the deadline, then what followed.
 *       police primary created day 8 10:05 (escalated from the cru primary): ack +60 s, accepted, completed.
 *   R1: police primary: ack +600 s, accepted, completed.
 *   R2: case_management primary: ack +300 s, accepted. cru support: never acknowledged, cancelled.
 *       follow_up created day 7 9h, reserved until day 8 9h, due day 10 9h: accepted day 11 8h (+95 h; +71 h
 *       after its reservation), completed day 11 9h (late).
 *   R3: ems primary: queued, waiting.
 *   X:  cru primary: queued, waiting.
 */
export async function seedReportWorld(db: Db, t0: Date): Promise<void> {
  const at = (day: number, hour = 0, minute = 0, second = 0) => new Date(t0.getTime() + (((day * 24 + hour) * 60 + minute) * 60 + second) * 1000)
  const { version } = await db.selectFrom('rule_sets').select('version').orderBy('version', 'desc').executeTakeFirstOrThrow()

  interface Move {
    to: string
    at: Date
    reason?: string
  }
  interface A {
    queue: string
    role: 'primary' | 'support'
    status: string
    createdAt?: Date
    dueAt?: Date
    disposition?: string
    moves?: Move[]
    /** The index, in its call's list, of the assignment this one was escalated from. */
    escalatedFrom?: number
    /** A follow-up held back until then (FOLLOW_UP_DUE_HOURS after the close), then offered. */
    reservedUntil?: Date
  }
  interface C {
    id: string
    agency: string
    createdAt: Date
    route: string
    mh: boolean
    flags?: Record<string, boolean>
    closed: boolean
    disposition?: string
    override?: string
    fallback?: boolean
    person?: string
    assignments?: A[]
  }

  const s = (day: number, hour: number, sec: number) => at(day, hour, 0, sec)
  const calls: C[] = [
    { id: 'H0', agency: 'hastings-pd', createdAt: at(-10, 9), route: 'police', mh: false, closed: true, person: 'P1' },
    {
      id: 'H1', agency: 'hastings-pd', createdAt: at(0, 10), route: 'cru', mh: true, flags: { mentalHealth: true }, closed: true, disposition: 'resolved_by_phone', person: 'P1',
      assignments: [
        { queue: 'cru', role: 'primary', status: 'completed', disposition: 'resolved_by_phone', moves: [{ to: 'acknowledged', at: s(0, 10, 60) }, { to: 'accepted', at: s(0, 10, 120) }, { to: 'completed', at: at(0, 10, 30) }] },
        { queue: 'follow_up', role: 'primary', status: 'completed', createdAt: at(0, 11), reservedUntil: at(0, 23), dueAt: at(3, 11), moves: [{ to: 'accepted', at: at(1, 9) }, { to: 'completed', at: at(1, 10) }] },
      ],
    },
    {
      id: 'H2', agency: 'hastings-pd', createdAt: at(0, 12), route: 'police', mh: true, flags: { mentalHealth: true }, closed: true, disposition: 'field_response', fallback: true, person: 'P1',
      assignments: [
        { queue: 'police', role: 'primary', status: 'completed', moves: [{ to: 'acknowledged', at: s(0, 12, 120) }, { to: 'accepted', at: s(0, 12, 180) }, { to: 'completed', at: at(0, 12, 40) }] },
        { queue: 'follow_up', role: 'primary', status: 'queued', createdAt: at(0, 13), dueAt: at(3, 13) },
      ],
    },
    {
      id: 'H3', agency: 'hastings-pd', createdAt: at(1, 9), route: 'co_response', mh: true, flags: { mentalHealth: true, weapons: true }, closed: true, disposition: 'field_response', person: 'P1',
      assignments: [
        { queue: 'police', role: 'primary', status: 'completed', moves: [{ to: 'accepted', at: s(1, 9, 30) }, { to: 'completed', at: at(1, 10) }] },
        { queue: 'cru', role: 'support', status: 'accepted', moves: [{ to: 'acknowledged', at: s(1, 9, 180) }, { to: 'accepted', at: s(1, 9, 240) }] },
      ],
    },
    {
      id: 'H4', agency: 'hastings-pd', createdAt: at(8, 9), route: 'police', mh: false, closed: false, person: 'P2',
      assignments: [{ queue: 'police', role: 'primary', status: 'queued', moves: [{ to: 'expired', at: at(8, 9, 10), reason: `not acknowledged by ${at(8, 9, 9).toISOString()}; offered again to police (no fallback beyond police); new: police primary` }, { to: 'queued', at: at(8, 9, 10), reason: 'requeued' }] }],
    },
    {
      id: 'H5', agency: 'hastings-pd', createdAt: at(8, 10), route: 'cru', mh: true, flags: { mentalHealth: true }, closed: true, disposition: 'field_response',
      assignments: [
        { queue: 'cru', role: 'primary', status: 'cancelled', moves: [{ to: 'escalated', at: at(8, 10, 5), reason: `not acknowledged by ${at(8, 10, 4).toISOString()}; escalated to police; new: police primary` }, { to: 'cancelled', at: at(8, 11) }] },
        { queue: 'police', role: 'primary', status: 'completed', createdAt: at(8, 10, 5), escalatedFrom: 0, moves: [{ to: 'acknowledged', at: at(8, 10, 6) }, { to: 'accepted', at: at(8, 10, 6) }, { to: 'completed', at: at(8, 11) }] },
      ],
    },
    {
      id: 'R1', agency: 'rosemount-pd', createdAt: at(0, 15), route: 'police', mh: true, flags: { mentalHealth: true }, closed: true, disposition: 'field_response', override: 'police', person: 'P3',
      assignments: [{ queue: 'police', role: 'primary', status: 'completed', moves: [{ to: 'acknowledged', at: s(0, 15, 600) }, { to: 'accepted', at: s(0, 15, 660) }, { to: 'completed', at: at(0, 16) }] }],
    },
    {
      id: 'R2', agency: 'rosemount-pd', createdAt: at(7, 8), route: 'case_manager', mh: true, flags: { suicidalIdeation: true }, closed: true, disposition: 'no_contact', person: 'P3',
      assignments: [
        { queue: 'case_management', role: 'primary', status: 'accepted', moves: [{ to: 'acknowledged', at: s(7, 8, 300) }, { to: 'accepted', at: s(7, 8, 360) }] },
        { queue: 'cru', role: 'support', status: 'cancelled', moves: [{ to: 'cancelled', at: at(7, 12) }] },
        { queue: 'follow_up', role: 'primary', status: 'completed', createdAt: at(7, 9), reservedUntil: at(8, 9), dueAt: at(10, 9), moves: [{ to: 'accepted', at: at(11, 8) }, { to: 'completed', at: at(11, 9) }] },
      ],
    },
    { id: 'R3', agency: 'rosemount-pd', createdAt: at(9, 8), route: 'ems', mh: false, closed: false, assignments: [{ queue: 'ems', role: 'primary', status: 'queued' }] },
    { id: 'X', agency: 'hastings-pd', createdAt: at(14, 1), route: 'cru', mh: true, flags: { mentalHealth: true }, closed: false, assignments: [{ queue: 'cru', role: 'primary', status: 'queued' }] },
  ]

  for (const c of calls) {
    const decisionId = randomUUID()
    const eventId = `seed-${c.id}-${randomUUID()}`
    const flags = { mentalHealth: false, weapons: false, ...c.flags }
    await db.transaction().execute(async (trx) => {
      await trx
        .insertInto('calls')
        .values({
          call_id: c.id, agency: c.agency, status: c.closed ? 'closed' : 'open', nature_code: c.mh ? 'EDP' : 'SUSP', priority: 2, flags: JSON.stringify(flags),
          subject_person_id: c.person ?? null, dispatcher_override: c.override ?? null, disposition: c.disposition ?? null, mental_health: c.mh, route: c.route,
          last_occurred_at: c.createdAt, created_at: c.createdAt, updated_at: c.createdAt, closed_at: c.closed ? c.createdAt : null,
        })
        .execute()
      await trx.insertInto('call_events').values({ event_id: eventId, call_id: c.id, type: 'call.created', occurred_at: c.createdAt, received_at: c.createdAt, body_hash: 'seed', body: '{}', applied: true }).execute()
      const outcome = {
        assignmentIds: [],
        fallback: c.fallback ? { fromRoute: 'cru', reason: 'CRU is outside its hours' } : null,
        override: c.override ? { route: c.override, overriddenRuleId: 'seed' } : null,
        review: [], followUp: null, trace: [], derived: { natureCode: 'EDP', unknownNatureCode: false, mentalHealthIndicator: c.mh }, notes: [],
      }
      await trx
        .insertInto('decisions')
        .values({ id: decisionId, call_id: c.id, event_id: eventId, route: c.route, rule_set_version: version, rule_id: 'seed', explanation: 'seeded', facts: JSON.stringify({ flags }), outcome: JSON.stringify(outcome), created_at: c.createdAt })
        .execute()
      await trx.updateTable('calls').set({ decision_id: decisionId }).where('call_id', '=', c.id).execute()
      const ids = (c.assignments ?? []).map(() => randomUUID())
      for (const [i, a] of (c.assignments ?? []).entries()) {
        const id = ids[i]!
        const createdAt = a.createdAt ?? c.createdAt
        const escalatedFrom = a.escalatedFrom === undefined ? null : ids[a.escalatedFrom]!
        await trx
          .insertInto('assignments')
          .values({ id, call_id: c.id, decision_id: decisionId, agency: c.agency, queue: a.queue, role: a.role, status: a.status, disposition: a.disposition ?? null, due_at: a.dueAt ?? null, escalated_from: escalatedFrom, reserved_until: a.reservedUntil ?? null, created_at: createdAt, updated_at: createdAt })
          .execute()
        let from: string | null = null
        for (const m of [{ to: 'queued', at: createdAt } as Move, ...(a.moves ?? [])]) {
          await trx.insertInto('assignment_transitions').values({ assignment_id: id, from_status: from, to_status: m.to, role: a.role, actor: 'seed', reason: m.reason ?? null, at: m.at }).execute()
          from = m.to
        }
      }
    })
  }
}
