/**
 * The assignment lifecycle. Consoles move an assignment forward; the router cancels it when the
 * call closes; the worker offers it when it reaches the responder pool.
 */
export const ASSIGNMENT_STATUSES = ['queued', 'offered', 'acknowledged', 'accepted', 'completed', 'declined', 'cancelled'] as const
export type AssignmentStatus = (typeof ASSIGNMENT_STATUSES)[number]

export const OPEN_STATUSES: readonly AssignmentStatus[] = ['queued', 'offered', 'acknowledged', 'accepted']

export const CONSOLE_ACTIONS = ['acknowledge', 'accept', 'decline', 'complete'] as const
export type ConsoleAction = (typeof CONSOLE_ACTIONS)[number]

export interface Move {
  from: readonly AssignmentStatus[]
  to: AssignmentStatus
}

export const MOVES: Record<ConsoleAction | 'offer' | 'cancel', Move> = {
  offer: { from: ['queued'], to: 'offered' },
  // A console may see an assignment in the listing a moment before the worker offers it.
  acknowledge: { from: ['queued', 'offered'], to: 'acknowledged' },
  accept: { from: ['queued', 'offered', 'acknowledged'], to: 'accepted' },
  decline: { from: ['queued', 'offered', 'acknowledged'], to: 'declined' },
  complete: { from: ['accepted'], to: 'completed' },
  cancel: { from: OPEN_STATUSES, to: 'cancelled' },
}

export function canMove(action: keyof typeof MOVES, status: AssignmentStatus): boolean {
  return MOVES[action].from.includes(status)
}

export const isOpen = (status: string): boolean => (OPEN_STATUSES as readonly string[]).includes(status)
