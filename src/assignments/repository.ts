import { sql, type RawBuilder, type Selectable, type Transaction } from 'kysely'
import type { Db } from '../db/connect.js'
import { fixed, prepared } from '../db/prepared.js'
import type { AssignmentsTable, Database } from '../db/schema.js'
import { AppError, notFound } from '../http/errors.js'
import { canActForAgency, canSeeQueue } from '../auth/principal.js'
import type { QueueName, Role } from '../routing/index.js'
import type { AssignmentView } from './schemas.js'
import { MOVES, OPEN_STATUSES, isOpen, type AssignmentStatus } from './state-machine.js'

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null)

const ASSIGNMENT_COLUMNS = [
  'id', 'seq', 'call_id', 'decision_id', 'agency', 'queue', 'role', 'status', 'disposition',
  'due_at', 'reserved_until', 'ack_deadline_at', 'escalated_from', 'case_manager', 'created_at', 'updated_at',
] as const satisfies readonly (keyof AssignmentsTable)[]

export function assignmentColumns(alias: string): RawBuilder<unknown> {
  return fixed(`assignment columns ${alias}`, () => sql.join(ASSIGNMENT_COLUMNS.map((c) => sql.ref(`${alias}.${c}`))))
}

/** `now` decides the overdue flag: an open assignment past the time it must be done by. */
export function toAssignmentView(a: Selectable<AssignmentsTable>, now: Date = new Date()): AssignmentView {
  return {
    id: a.id,
    callId: a.call_id,
    agency: a.agency,
    decisionId: a.decision_id,
    queue: a.queue as QueueName,
    role: a.role as Role,
    status: a.status as AssignmentStatus,
    disposition: a.disposition,
    dueAt: iso(a.due_at),
    overdue: a.due_at !== null && isOpen(a.status) && a.due_at.getTime() < now.getTime(),
    reservedUntil: iso(a.reserved_until),
    ackDeadlineAt: iso(a.ack_deadline_at),
    escalatedFrom: a.escalated_from,
    caseManager: a.case_manager,
    createdAt: a.created_at.toISOString(),
    updatedAt: a.updated_at.toISOString(),
  }
}

export const encodeCursor = (seq: number): string => Buffer.from(`s${seq}`).toString('base64url')

export function decodeCursor(cursor: string): number {
  const text = Buffer.from(cursor, 'base64url').toString()
  const seq = /^s(\d{1,15})$/.exec(text)?.[1]
  if (seq === undefined) {
    throw new AppError('validation-failed', 'the cursor is not one this service issued', { invalidParams: [{ name: 'querystring.cursor', reason: 'unknown cursor' }] })
  }
  return Number(seq)
}

export interface ListFilter {
  queue?: QueueName | undefined
  agency?: string | undefined
  /** The caller's scope (null: all). */
  agencies?: readonly string[] | null
  queues?: readonly string[] | null
  status?: AssignmentStatus[] | undefined
  after?: number | undefined
  /** true: only open assignments past their due time (overdue follow-ups). */
  overdue?: boolean | undefined
  limit: number
  now?: Date
}

/**
 * Oldest first, by a sequence that never changes, so paging never repeats an assignment nor skips
 * one committed before the first page was read. One inserted earlier but committed later (its seq
 * below the cursor) is on no later page: the stream from the first page's Feed-Position carries it.
 */
export async function listAssignments(db: Db, f: ListFilter): Promise<{ items: AssignmentView[]; nextCursor: string | null }> {
  let q = db.selectFrom('assignments').selectAll().orderBy('seq').limit(f.limit + 1)
  if (f.queue) q = q.where('queue', '=', f.queue)
  if (f.agency) q = q.where('agency', '=', f.agency)
  if (f.agencies) q = f.agencies.length ? q.where('agency', 'in', [...f.agencies]) : q.where(sql<boolean>`false`)
  if (f.queues) q = f.queues.length ? q.where('queue', 'in', [...f.queues]) : q.where(sql<boolean>`false`)
  if (f.status?.length) q = q.where('status', 'in', f.status)
  if (f.after !== undefined) q = q.where('seq', '>', f.after)
  const now = f.now ?? new Date()
  if (f.overdue) q = q.where('due_at', '<', now).where('status', 'in', OPEN_STATUSES)
  const rows = await q.execute()
  const page = rows.slice(0, f.limit)
  const last = page[page.length - 1]
  return { items: page.map((a) => toAssignmentView(a, now)), nextCursor: rows.length > f.limit && last ? encodeCursor(last.seq) : null }
}

/**
 * Where a console's words lie in a transition's reason (migration 0016), for the retention scrub:
 * from `from` (counted from 1) to the end. Postgres counts characters (code points), which a
 * JavaScript string's length does not. No words: no span.
 */
export function typedSpan(words: string | undefined, from = 1): { typed_from: number | null; typed_length: number | null } {
  return words ? { typed_from: from, typed_length: [...words].length } : { typed_from: null, typed_length: null }
}

export interface MoveInput {
  actor: string
  /** What the console typed: free text about a person, which the retention scrub removes. */
  reason?: string | undefined
  disposition?: string | undefined
  /** With offer: when the offer escalates unless acknowledged (null: never). */
  ackDeadlineAt?: Date | null
}

/**
 * Moves an assignment along the state machine and records who, when and why — atomically.
 * `ifAlready`: when the assignment already has the target status, answer it unchanged instead of
 * refusing (a worker offering a job delivered twice).
 */
export interface MoveOptions {
  ifAlready?: 'ok'
  /** The caller's scope (null: any): an assignment outside it is answered as unknown and not moved. */
  scope?: { agencies: readonly string[] | null; queues: readonly string[] | null }
  /** The audit record written with the move (as src/auth/audit.ts writes one); its details are the assignment's ids and new status. */
  audit?: { actor: string; keyId: string | null; role: string | null; action: string; sourceIp: string | null; requestId: string | null }
}

/**
 * A CTE `held` that takes a share lock on the assignment's call before the assignment is locked.
 * The feed orders changes by the writing transaction's id, which ingest takes when it locks the
 * call; a move that committed while ingest held the call would have a later id than ingest's own
 * change of the same assignment written after it, and the feed would hand a console the two in the
 * wrong order (a close's `offered → cancelled` before the offer). Waiting for the call puts the move
 * after ingest's transaction, which it then sees. Call, then assignment: the order ingest and
 * escalation lock in, so none of them deadlocks.
 */
function callFirst(id: string): RawBuilder<unknown> {
  return sql`held as materialized (${shareLockOfCall(id)})`
}

const shareLockOfCall = (id: string) => sql`select 1 from calls where call_id = (select call_id from assignments where id = ${id}) for share`

/** The same lock for a transaction that then locks the assignment itself (see callFirst). */
export async function lockCallOfAssignment(trx: Transaction<Database>, id: string): Promise<void> {
  await shareLockOfCall(id).execute(trx)
}

/**
 * The responder worker's move, queued (or reserved) → offered, in one statement and no transaction
 * of its own: it runs for every assignment, so it takes one round trip, not five. The row is locked
 * and read as it was, moved only from a status the offer may leave, and the transition recorded in
 * the same statement. `holdReservedUntilAfter`: a reserved follow-up whose time is later stays
 * reserved. Undefined: no such assignment.
 */
export async function offerInOneStatement(
  db: Db,
  id: string,
  input: { actor: string; reason: string; ackDeadlineAt: Date | null; holdReservedUntilAfter?: Date },
): Promise<{ before: { status: AssignmentStatus; reservedUntil: Date | null; dueAt: Date | null }; view: AssignmentView; changed: boolean } | undefined> {
  const hold = input.holdReservedUntilAfter ?? null
  // The locked row as it is, with what the move changed beside it (null when it did not move): a
  // plain join plans in a fraction of the time a union would, and this runs for every assignment.
  const { rows } = await prepared(sql<Selectable<AssignmentsTable> & { moved_status: AssignmentStatus | null; moved_updated_at: Date | null; moved_ack_deadline_at: Date | null }>`
    with ${callFirst(id)},
    old as (select ${assignmentColumns('assignments')} from assignments where id = ${id} and exists (select from held) for update),
    moved as (
      update assignments a set status = 'offered', updated_at = now(), ack_deadline_at = ${input.ackDeadlineAt}
      from old
      where a.id = old.id and old.status = any(${MOVES.offer.from as readonly string[]})
        and not (old.status = 'reserved' and coalesce(old.reserved_until > ${hold}::timestamptz, false))
      returning a.id, a.status, a.updated_at, a.ack_deadline_at, a.role, a.agency, a.queue, old.status as from_status),
    t as (
      insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason, feed_agency, feed_queue)
      select id, from_status, status, role, ${input.actor}, ${input.reason}, agency, queue from moved)
    select o.*, m.status as moved_status, m.updated_at as moved_updated_at, m.ack_deadline_at as moved_ack_deadline_at
    from old o left join moved m on m.id = o.id`).execute(db)
  const row = rows[0]
  if (!row) return undefined
  const { moved_status, moved_updated_at, moved_ack_deadline_at, ...before } = row
  const after = moved_status ? { ...before, status: moved_status, updated_at: moved_updated_at!, ack_deadline_at: moved_ack_deadline_at } : before
  return { before: { status: before.status as AssignmentStatus, reservedUntil: before.reserved_until, dueAt: before.due_at }, view: toAssignmentView(after), changed: moved_status !== null }
}

export async function moveAssignment(db: Db, id: string, action: keyof typeof MOVES, input: MoveInput, opts: MoveOptions = {}): Promise<{ view: AssignmentView; changed: boolean }> {
  const move = MOVES[action]
  const agencies = opts.scope?.agencies ?? null
  const queues = opts.scope?.queues ?? null
  const au = opts.audit
  const span = typedSpan(input.reason)
  // One statement, as the offer: consoles move an assignment or two per call, and a transaction of
  // lock, update, transition and audit record took six round trips. The row is locked and read as
  // it was; it moves only from a status the action may leave and inside the caller's scope.
  const { rows } = await prepared(sql<
    Selectable<AssignmentsTable> & { moved_status: AssignmentStatus | null; moved_updated_at: Date | null; moved_disposition: string | null; moved_ack_deadline_at: Date | null }
  >`
    with ${callFirst(id)},
    old as (select ${assignmentColumns('assignments')} from assignments where id = ${id} and exists (select from held) for update),
    moved as (
      update assignments a
      set status = ${move.to}, updated_at = now(),
          disposition = coalesce(${input.disposition ?? null}::text, a.disposition),
          ack_deadline_at = case when ${input.ackDeadlineAt !== undefined}::boolean then ${input.ackDeadlineAt ?? null}::timestamptz else a.ack_deadline_at end
      from old
      where a.id = old.id and old.status = any(${move.from as readonly string[]}::text[])
        and (${agencies}::text[] is null or old.agency = any(${agencies}::text[]))
        and (${queues}::text[] is null or old.queue = any(${queues}::text[]))
      returning a.id, a.call_id, a.status, a.updated_at, a.disposition, a.ack_deadline_at, a.role, a.agency, a.queue, old.status as from_status),
    t as (
      insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason, typed_from, typed_length, feed_agency, feed_queue)
      select id, from_status, status, role, ${input.actor}, ${input.reason ?? null}::text, ${span.typed_from}::int, ${span.typed_length}::int, agency, queue
      from moved),
    au as (
      insert into audit_log (actor, key_id, role, action, target_type, target_id, agency, source_ip, request_id, details)
      select ${au?.actor ?? null}, ${au?.keyId ?? null}::uuid, ${au?.role ?? null}, ${au?.action ?? null}, 'assignment', id::text, agency,
             ${au?.sourceIp ?? null}, ${au?.requestId ?? null}, jsonb_build_object('callId', call_id, 'queue', queue, 'status', status)
      from moved where ${au !== undefined}::boolean)
    select o.*, m.status as moved_status, m.updated_at as moved_updated_at, m.disposition as moved_disposition, m.ack_deadline_at as moved_ack_deadline_at
    from old o left join moved m on m.id = o.id`).execute(db)
  const row = rows[0]
  if (!row || !canActForAgency({ agencies }, row.agency) || !canSeeQueue({ queues }, row.queue)) throw notFound(`assignment ${id}`)
  const { moved_status, moved_updated_at, moved_disposition, moved_ack_deadline_at, ...before } = row
  if (moved_status !== null) {
    return { view: toAssignmentView({ ...before, status: moved_status, updated_at: moved_updated_at!, disposition: moved_disposition, ack_deadline_at: moved_ack_deadline_at }), changed: true }
  }
  const status = before.status as AssignmentStatus
  if (opts.ifAlready === 'ok' && status === move.to) return { view: toAssignmentView(before), changed: false }
  throw new AppError('illegal-transition', `cannot ${action} an assignment that is ${status}`, { extra: { currentStatus: status, allowedFrom: move.from } })
}

/**
 * The assignments that took over from this one and are still open, oldest first: those `scope` may
 * see. Followed down the chain (declined, its replacement escalated, and so on), through
 * assignments the key may not see, within the call (its index): a replacement is on the same call.
 */
export async function replacementsOf(db: Db, id: string, scope: { agencies: readonly string[] | null; queues: readonly string[] | null }): Promise<string[]> {
  const { rows } = await sql<{ id: string; agency: string; queue: string; status: AssignmentStatus }>`
    with recursive of_call as (
      select a.id, a.agency, a.queue, a.status, a.seq, a.escalated_from from assignments a
       where a.call_id = (select call_id from assignments where id = ${id})),
    chain as (
      select * from of_call where escalated_from = ${id}
      union
      select o.* from of_call o join chain c on o.escalated_from = c.id)
    select id, agency, queue, status from chain order by seq`.execute(db)
  return rows.filter((r) => isOpen(r.status) && canActForAgency(scope, r.agency) && canSeeQueue(scope, r.queue)).map((r) => r.id)
}
