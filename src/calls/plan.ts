import { ROUTES, type AssignmentSpec, type EventType, type QueueName, type Role, type Route, type RoutingDecision } from '../routing/index.js'
import { isOpen, type AssignmentStatus } from '../assignments/state-machine.js'

export interface ExistingAssignment {
  id: string
  queue: QueueName
  role: Role
  status: AssignmentStatus
}

/** An assignment of the decision: one that exists already (id) or one to create (id undefined). */
export interface PlannedAssignment {
  id: string | undefined
  queue: QueueName
  role: Role
  status: AssignmentStatus
  dueAt: Date | null
  /** A reserved follow-up is offered at this time. */
  reservedUntil?: Date | null
}

export interface AssignmentPlan {
  /** The decision's assignments, in order: reused, kept and new ones. */
  assignments: PlannedAssignment[]
  roleChanges: { id: string; from: Role; to: Role; reason: string }[]
  cancellations: { id: string; from: AssignmentStatus }[]
  /**
   * The call's route after the plan (created/updated; null on close, where the call keeps its own):
   * the rule's, unless an earlier, more protective primary stays in charge. Then it is the route of
   * the rule set's table that the call's responders amount to, so that a call police still lead is
   * never counted as CRU's.
   */
  route: Route | null
  notes: string[]
}

// When an update brings a new primary, the more protective responder stays in charge.
const PRIMACY: Record<QueueName, number> = { police: 4, ems: 3, cru: 2, case_management: 1, follow_up: 0 }

/** The route table of a rule set: the responders each route names. */
export type RouteTable = Readonly<Record<Route, readonly AssignmentSpec[]>>

const LED_BY: Record<Exclude<QueueName, 'police' | 'follow_up'>, Route> = { ems: 'ems', cru: 'cru', case_management: 'case_manager' }

/**
 * The route a call led by `assignments`' primary amounts to: of the rule set's routes with that
 * primary, the largest whose responders the call all has, else the one it has the most of; when
 * none or several tie, the shipped names (police with CRU beside them a co-response, police without
 * CRU police, else the primary's own route). Never a route with another primary.
 */
export function routeLedBy(assignments: readonly { queue: QueueName; role: Role }[], routes: RouteTable): Route | null {
  const primary = assignments.find((a) => a.role === 'primary' && a.queue !== 'follow_up')
  if (!primary || primary.queue === 'follow_up') return null
  const has = new Set(assignments.map((a) => a.queue))
  const led = ROUTES.filter((r) => routes[r].some((s) => s.role === 'primary' && s.queue === primary.queue))
  const overlap = (r: Route) => routes[r].filter((s) => has.has(s.queue)).length
  const pick = (of: Route[]): Route | undefined => {
    const most = Math.max(0, ...of.map(overlap))
    const best = of.filter((r) => overlap(r) === most)
    return best.length === 1 ? best[0] : undefined
  }
  // First the routes whose responders the call all has, then the one it has the most of.
  const found = pick(led.filter((r) => overlap(r) === routes[r].length)) ?? pick(led)
  if (found) return found
  if (primary.queue === 'police') return has.has('cru') ? 'co_response' : 'police'
  return LED_BY[primary.queue]
}

const ROUTE_WORDS: Record<Route, string> = {
  police: 'police lead it',
  co_response: 'police lead it with CRU beside them (a co-response)',
  ems: 'EMS lead it',
  cru: 'CRU leads it',
  case_manager: 'the case manager leads it',
}

/**
 * What a routing decision changes in a call's assignments. Pure: the service applies the plan.
 *
 * - created/updated: what the decision needs and the call lacks is added; what is already assigned
 *   is never silently withdrawn (it is kept, and listed); exactly one open primary remains — the
 *   decision's, unless an earlier primary is more protective (police > EMS > CRU > case manager)
 *   and no dispatcher overrode the route.
 * - closed: every open assignment is cancelled; a call that ever carried a mental-health
 *   indicator gets its follow-up (DESIGN rule 8).
 */
export function planAssignments(input: {
  eventType: EventType
  decision: Pick<RoutingDecision, 'route' | 'assignments' | 'followUp' | 'override'>
  existing: readonly ExistingAssignment[]
  mentalHealthCall: boolean
  now: Date
  defaultFollowUpHours: number
  /** Hours after closing when the follow-up is offered; until then it is reserved (0 or absent: at once). */
  followUpOfferHours?: number
  /** The rule set's route table, to name the route of a call whose primary the plan kept. */
  routes: RouteTable
}): AssignmentPlan {
  const { decision, existing, now } = input
  const open = existing.filter((a) => isOpen(a.status))

  if (input.eventType === 'call.closed') {
    const plan: AssignmentPlan = {
      assignments: [],
      roleChanges: [],
      cancellations: open.map((a) => ({ id: a.id, from: a.status })),
      route: null,
      notes: [],
    }
    const hours = decision.followUp?.dueWithinHours ?? (input.mentalHealthCall ? input.defaultFollowUpHours : null)
    if (hours !== null) {
      const offerHours = Math.min(input.followUpOfferHours ?? 0, hours)
      const dueAt = new Date(now.getTime() + hours * 3600_000)
      plan.assignments.push(
        offerHours > 0
          ? { id: undefined, queue: 'follow_up', role: 'primary', status: 'reserved', dueAt, reservedUntil: new Date(now.getTime() + offerHours * 3600_000) }
          : { id: undefined, queue: 'follow_up', role: 'primary', status: 'queued', dueAt },
      )
      if (!decision.followUp) plan.notes.push('an earlier event of this call carried a mental-health indicator, so it gets a follow-up')
    }
    return plan
  }

  const wanted: AssignmentSpec[] = decision.assignments.filter((a) => a.queue !== 'follow_up')
  const wantedPrimary = wanted.find((a) => a.role === 'primary')
  const openByQueue = new Map(open.filter((a) => a.queue !== 'follow_up').map((a) => [a.queue, a]))
  const currentPrimary = open.find((a) => a.role === 'primary' && a.queue !== 'follow_up')

  let primaryQueue = wantedPrimary?.queue
  const notes: string[] = []
  if (currentPrimary && primaryQueue && currentPrimary.queue !== primaryQueue && !decision.override) {
    if (PRIMACY[currentPrimary.queue] > PRIMACY[primaryQueue]) {
      notes.push(`${currentPrimary.queue} stays primary: an update does not hand a call from ${currentPrimary.queue} to ${primaryQueue} (a dispatcher override can)`)
      primaryQueue = currentPrimary.queue
    }
  }

  const roleOf = (queue: QueueName): Role => (queue === primaryQueue ? 'primary' : 'support')
  const assignments: PlannedAssignment[] = []
  const roleChanges: AssignmentPlan['roleChanges'] = []
  const seen = new Set<QueueName>()
  const place = (queue: QueueName) => {
    if (seen.has(queue)) return
    seen.add(queue)
    const role = roleOf(queue)
    const have = openByQueue.get(queue)
    if (have) {
      if (have.role !== role) roleChanges.push({ id: have.id, from: have.role, to: role, reason: role === 'primary' ? 'becomes primary' : `${primaryQueue} is now primary` })
      assignments.push({ id: have.id, queue, role, status: have.status, dueAt: null })
    } else {
      assignments.push({ id: undefined, queue, role, status: 'queued', dueAt: null })
    }
  }
  for (const a of wanted) place(a.queue)
  const kept = [...openByQueue.keys()].filter((q) => !seen.has(q))
  for (const q of kept) place(q)
  if (kept.length) notes.push(`kept from earlier decisions: ${kept.join(', ')}`)

  // Only a primary kept over the rule's changes the route: responders merely kept beside the rule's
  // primary are listed above. (A dispatcher's override moves the primary itself.)
  const led = wantedPrimary && primaryQueue !== wantedPrimary.queue ? routeLedBy(assignments, input.routes) : null
  const route = led ?? decision.route
  if (route !== decision.route) notes.push(`so the call's route is ${route}, not ${decision.route}: ${ROUTE_WORDS[route]}`)
  return { assignments, roleChanges, cancellations: [], route, notes }
}
