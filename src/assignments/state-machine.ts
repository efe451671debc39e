/**
 * The assignment lifecycle. Consoles move an assignment forward; the router cancels it when the
 * call closes; the worker offers it when it reaches the responder pool (a reserved follow-up when
 * its time comes); the acknowledgement deadline escalates or expires it.
 *
 *   reserved ─┐
 *   queued ───┴─▶ offered ─▶ acknowledged ─▶ accepted ─▶ completed
 *      declined (console) · cancelled (call closed) · escalated / expired (deadline passed)
 */
export const ASSIGNMENT_STATUSES = ['reserved', 'queued', 'offered', 'acknowledged', 'accepted', 'completed', 'declined', 'cancelled', 'escalated', 'expired'] as const
export type AssignmentStatus = (typeof ASSIGNMENT_STATUSES)[number]

export const OPEN_STATUSES: readonly AssignmentStatus[] = ['reserved', 'queued', 'offered', 'acknowledged', 'accepted']
/**
 * A CRU assignment in these holds its call and takes a place in its team's capacity (DESIGN rule 7):
 * ingest, escalation and evaluate count them alike, and a call CRU holds stays CRU's after hours.
 */
export const CRU_HOLDING_STATUSES = ['queued', 'offered', 'acknowledged', 'accepted'] as const satisfies readonly AssignmentStatus[]
const CRU_HOLDING: ReadonlySet<string> = new Set(CRU_HOLDING_STATUSES)
/** A CRU assignment in one of CRU_HOLDING_STATUSES: `status`, or the status it is moving from. */
export const cruHolding = (queue: string, status: string): boolean => queue === 'cru' && CRU_HOLDING.has(status)
/** Nobody has taken it yet: the acknowledgement deadline applies. */
export const UNACKNOWLEDGED_STATUSES: readonly AssignmentStatus[] = ['queued', 'offered']

export const CONSOLE_ACTIONS = ['acknowledge', 'accept', 'decline', 'complete'] as const
export type ConsoleAction = (typeof CONSOLE_ACTIONS)[number]

export interface Move {
  from: readonly AssignmentStatus[]
  to: AssignmentStatus
}

export const MOVES: Record<ConsoleAction | 'offer' | 'cancel' | 'escalate' | 'expire', Move> = {
  // A reserved follow-up is offered when it becomes due.
  offer: { from: ['queued', 'reserved'], to: 'offered' },
  // A console may see an assignment in the listing a moment before the worker offers it, and a
  // follow-up team may take a reserved follow-up early.
  acknowledge: { from: ['reserved', 'queued', 'offered'], to: 'acknowledged' },
  accept: { from: ['reserved', 'queued', 'offered', 'acknowledged'], to: 'accepted' },
  decline: { from: ['reserved', 'queued', 'offered', 'acknowledged'], to: 'declined' },
  complete: { from: ['accepted'], to: 'completed' },
  cancel: { from: OPEN_STATUSES, to: 'cancelled' },
  // Not acknowledged in time: handed along the rule set's fallback (escalated), or offered again
  // as a new assignment where the fallback has nothing further (expired).
  escalate: { from: UNACKNOWLEDGED_STATUSES, to: 'escalated' },
  expire: { from: UNACKNOWLEDGED_STATUSES, to: 'expired' },
}

export function canMove(action: keyof typeof MOVES, status: AssignmentStatus): boolean {
  return MOVES[action].from.includes(status)
}

export const isOpen = (status: string): boolean => (OPEN_STATUSES as readonly string[]).includes(status)
