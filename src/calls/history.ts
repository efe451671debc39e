import type { Executor } from '../db/connect.js'
import { sha256 } from '../lib/canonical-json.js'
import type { RoutingFacts } from '../routing/index.js'
import { readCallContexts, type CallContext } from './repository.js'
import type { CallEvent } from './schemas.js'

/** DESIGN rule 6 looks back this far for prior calls. */
export const HISTORY_WINDOW_MS = 30 * 24 * 3600_000

/**
 * Addresses are compared, not read: the key is a hash of the normalised address and city. Each is
 * normalised on its own, so punctuation or a space at its end changes nothing; an accent on a Latin
 * letter written or left out is the same letter (CADs drop them); letters of other scripts are
 * kept whole, marks included (й is not и). Before, every letter outside a-z became a space: two
 * streets named in another script could share a key and each other's prior calls. An ASCII address
 * keeps the key it had unless it ended with a character other than a letter or digit, its city
 * began with one, or it held a '|': those keys met only the same spelling.
 */
export function addressKey(location: CallEvent['call']['location']): string | null {
  if (!location?.address) return null
  return sha256(`${addressPart(location.address)}|${addressPart(location.city ?? '')}`)
}

const LATIN_FOLDS: Record<string, string> = { ß: 'ss', ı: 'i', ø: 'o', ł: 'l', đ: 'd', æ: 'ae', œ: 'oe', þ: 'th' }

const addressPart = (s: string): string =>
  s
    // A fraction is a number of its own: 12½ is 12 1/2, not 121/2 (NFKD writes ½ as 1⁄2).
    .replace(/[\u00BC-\u00BE\u2150-\u215E]/g, ' $&')
    .normalize('NFKD')
    .replace(/(\p{Script=Latin})\p{M}+/gu, '$1')
    .normalize('NFC')
    // After NFKD, which can make capitals (№ is No).
    .toLowerCase()
    // Latin letters that are not a letter and a mark, so NFKD leaves them: as they are spelt in ASCII.
    .replace(/[ßıøłđæœþ]/g, (c) => LATIN_FOLDS[c]!)
    .replace(/[^\p{L}\p{M}\p{N}]+/gu, ' ')
    .trim()

/** The keys a call's history is looked up by, and where the window starts at `at`. */
export function historyKeys(call: CallEvent['call'], at: Date): { personId: string | null; addressKey: string | null; since: Date } {
  return { personId: call.subject?.personId ?? null, addressKey: addressKey(call.location), since: new Date(at.getTime() - HISTORY_WINDOW_MS) }
}

export function historyOf(context: CallContext): RoutingFacts['history'] {
  const history: RoutingFacts['history'] = { priorCallsForSubject30d: context.priorSubject, priorCallsAtAddress30d: context.priorAddress, caseManagerActive: context.caseManagerActive }
  // Only with an active link: whom a case-management assignment is for, stored with the decision.
  if (context.caseManager !== null) history.caseManager = context.caseManager
  return history
}

/**
 * Whom an assignment in `queue` is for, by the history its decision saw: the active link's case
 * manager for a case-management assignment (DESIGN rule 6), else nobody. `history` may be stored
 * facts of any age (those stored before the case manager was recorded have none).
 */
export function caseManagerFor(queue: string, history: { caseManager?: unknown } | null | undefined): string | null {
  return queue === 'case_management' && typeof history?.caseManager === 'string' ? history.caseManager : null
}

/**
 * The history facts of a call at `at` (prior calls of its subject and at its address in the 30 days
 * before it, an active case link and its case manager), as ingest reads them. For evaluate and replay; ingest reads many
 * calls at once. Calls made after `at` are not prior ones: a what-if at last Tuesday must not count
 * today's calls. The case link is as it is now (its past is not kept).
 */
export async function lookupHistory(db: Executor, call: CallEvent['call'], at: Date): Promise<RoutingFacts['history']> {
  const [context] = await readCallContexts(db, [{ callId: call.callId, ...historyKeys(call, at), until: at, exclude: [], capacity: null, assignments: false }])
  return historyOf(context!)
}
