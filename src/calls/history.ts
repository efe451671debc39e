import type { Executor } from '../db/connect.js'
import { sha256 } from '../lib/canonical-json.js'
import type { RoutingFacts } from '../routing/index.js'
import { historyFacts } from './repository.js'
import type { CallEvent } from './schemas.js'

/** DESIGN rule 6 looks back this far for prior calls. */
export const HISTORY_WINDOW_MS = 30 * 24 * 3600_000

/** Addresses are compared, not read: the key is a hash of the normalised address. */
export function addressKey(location: CallEvent['call']['location']): string | null {
  if (!location?.address) return null
  const norm = `${location.address}|${location.city ?? ''}`.toLowerCase().replace(/[^a-z0-9|]+/g, ' ').trim()
  return sha256(norm)
}

/**
 * The history facts of a call at `at` (prior calls of its subject and at its address, an active
 * case link), with the keys they were looked up by. Ingest, evaluate and replay all use this.
 */
export async function lookupHistory(db: Executor, call: CallEvent['call'], at: Date): Promise<{ personId: string | null; addressKey: string | null; history: RoutingFacts['history'] }> {
  const personId = call.subject?.personId ?? null
  const key = addressKey(call.location)
  const since = new Date(at.getTime() - HISTORY_WINDOW_MS)
  const { priorSubject, priorAddress, caseManagerActive } = await historyFacts(db, { personId, addressKey: key, callId: call.callId, since })
  return { personId, addressKey: key, history: { priorCallsForSubject30d: priorSubject, priorCallsAtAddress30d: priorAddress, caseManagerActive } }
}
