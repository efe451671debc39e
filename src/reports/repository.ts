import { sql, type RawBuilder } from 'kysely'
import { OPEN_STATUSES } from '../assignments/state-machine.js'
import type { Executor } from '../calls/repository.js'
// A mental-health call with DESIGN rule 1 facts is a safety call: police is primary by design.
import { SAFETY_FLAGS, SAFETY_NATURE_CODES } from '../routing/index.js'

/**
 * Report queries. Each one groups by GROUPING SETS so one round trip yields every cell a report
 * shows: per agency per bucket, per agency, all agencies per bucket, and overall.
 * Calls are placed in time by calls.created_at (when the service first saw the call), in the range's zone.
 */

export type Bucket = 'day' | 'week'

export interface ReportRange {
  from: Date
  to: Date // exclusive
  bucket: Bucket
  /** Only these agencies (a filter, or the caller's scope); undefined: all. */
  agencies?: readonly string[] | undefined
  /** The days and weeks of the buckets are this zone's (an IANA name); UTC when not given. */
  timeZone?: string | undefined
}

/** The zone of the range's buckets. */
export const zoneOf = (r: ReportRange): string => r.timeZone ?? 'UTC'

/** A cell key: agency null = all agencies; bucket null = the whole range. */
export interface CellKey {
  agency: string | null
  bucket: Date | null
}

/**
 * Statuses that mean a responder left the queue's hands: escalated or expired (a deadline passed),
 * or declined — a decline is handed along the fallback (or offered again) at once, so a declined
 * CRU call is no more captured than one CRU let expire.
 */
export const ESCALATION_STATUSES = ['escalated', 'expired', 'declined'] as const
/** Waiting for a responder: counted as the queue's depth. */
export const WAITING_STATUSES = ['queued', 'offered', 'reserved'] as const

const list = (xs: readonly string[]) => sql.join(xs.map((x) => sql.lit(x)))
const agencyFilter = (col: RawBuilder<unknown>, agencies: readonly string[] | undefined) => (agencies === undefined ? sql`true` : sql`${col} = any(${agencies})`)
// A day is the zone's: a county's supervisors read 'Tuesday' as from its midnight, not UTC's (18:00
// or 19:00 in Minnesota), across daylight saving time too.
const bucketOf = (col: RawBuilder<unknown>, r: ReportRange) => {
  const zone = zoneOf(r)
  return sql`(date_trunc(${sql.lit(r.bucket)}, ${col} at time zone ${zone}::text) at time zone ${zone}::text)`
}
const GROUPING = sql`grouping sets ((agency, bucket), (agency), (bucket), ())`

interface Keyed {
  agency: string | null
  bucket: Date | null
  g_agency: number
  g_bucket: number
}
const keyOf = (r: Keyed): CellKey => ({ agency: r.g_agency ? null : r.agency, bucket: r.g_bucket ? null : r.bucket })

export interface CallCounts {
  calls: number
  mentalHealth: number
  mentalHealthClosed: number
  diverted: number
  eligible: number
  captured: number
  policeOverride: number
  policeFallback: number
  escalated: number
  otherRoute: number
  routePolice: number
  routeCru: number
  routeCoResponse: number
  routeEms: number
  routeCaseManager: number
  cruClosed: number
  cruResolvedByPhone: number
}

/** Call-level figures: diversion, capture (with why eligible calls went elsewhere), route mix, phone resolution. */
export async function callFigures(db: Executor, r: ReportRange): Promise<Array<CellKey & CallCounts>> {
  const safetyFlags = sql.join(
    SAFETY_FLAGS.map((f) => sql`coalesce((c.flags->>${f})::boolean, false)`),
    sql` or `,
  )
  const safetyCodes = list([...SAFETY_NATURE_CODES])
  // DESIGN rule 1 applies to a call as escalation decides it (safetyFacts in
  // src/assignments/escalation.ts), from the call's latest decision: a safety flag (the call's flags
  // are that decision's), a safety nature code after the agency's map, or a principle-1 rule that
  // fired — or would have, had a dispatcher not overridden it — since a rule set may name more
  // (the default's `safety` holds DVNA, BOMB…). Asked of mental-health calls alone, the only ones
  // capture counts; a call without a decision (none is, once ingested) is judged by its own code.
  // A late close (a call.closed dated before the call's last applied event) closes the call but
  // leaves it the details of that later event, and its own decision saw the close's older ones:
  // the call is judged by the decision before it, the one that saw the details the call keeps:
  // the latest by its event's date, the order events apply in (a decision's created_at is its API's
  // clock, read before the call's lock was waited for: the later event's may read earlier).
  const detailsDecision = sql`coalesce((
      select (
        select p.id from decisions p join call_events pe on pe.event_id = p.event_id
        where p.call_id = c.call_id and p.id <> cd.id order by pe.occurred_at desc, p.created_at desc, p.id desc limit 1)
      from decisions cd join call_events ce on ce.event_id = cd.event_id
      where cd.id = c.decision_id and ce.type = 'call.closed' and ce.occurred_at < c.last_occurred_at
    ), c.decision_id)`
  const safety = sql`case
    when not c.mental_health then false
    when ${safetyFlags} then true
    else coalesce((
      select (d.rule_set_version, coalesce(d.outcome->'override'->>'overriddenRuleId', d.rule_id)) in (select version, rule_id from p1)
        or coalesce(d.outcome->'derived'->>'natureCode', d.facts->>'natureCode') in (${safetyCodes})
      from decisions d where d.id = ${detailsDecision}
    ), c.nature_code in (${safetyCodes}))
  end`
  // Every assignment, transition and decision of a call is written at or after the call itself.
  // Saying so bounds each subquery below to the range's days: Postgres hashes a subquery's whole
  // result, and without the bound that was every row of its kind ever written (bench/history.ts).
  // The day of margin covers clocks: now() is when each writing transaction began, and decisions
  // carry the API's clock.
  const since = sql`(${r.from}::timestamptz - interval '1 day')`
  const { rows } = await sql<Keyed & Record<string, number>>`
    with p1 as materialized (
      -- The principle-1 rules of every stored rule set version (versions are immutable): a few per version.
      select rs.version, rule->>'id' as rule_id
      from rule_sets rs cross join lateral jsonb_array_elements(case when jsonb_typeof(rs.document->'rules') = 'array' then rs.document->'rules' else '[]' end) rule
      where rule->>'principle' = '1'
    ), c as (
      select c.agency, c.route, c.status, c.mental_health, c.disposition,
        ${bucketOf(sql`c.created_at`, r)} as bucket,
        (${safety}) as safety,
        c.dispatcher_override is not null as overridden,
        -- a law-enforcement field response: a police assignment that was ever accepted
        exists (
          select 1 from assignments a
          where a.call_id = c.call_id and a.queue = 'police' and a.created_at >= ${since}
            and (a.status in ('accepted', 'completed')
                 or exists (select 1 from assignment_transitions t where t.assignment_id = a.id and t.to_status = 'accepted' and t.at >= ${since}))
        ) as police_field,
        -- DESIGN rule 7: a decision that sent the call to police because CRU was not available
        exists (
          select 1 from decisions d
          where d.call_id = c.call_id and d.route = 'police' and jsonb_typeof(d.outcome->'fallback') = 'object' and d.created_at >= ${since}
            -- the rule's own fallback was to police (not, say, to EMS on a call police already led)
            and coalesce(d.outcome->>'ruleRoute', 'police') = 'police'
        ) as fell_back,
        -- Police took the call over by escalation: a police primary made by escalating another
        -- queue's assignment (not acknowledged in time, or declined), or a police support the
        -- escalation made primary (a rule set whose CRU route has police beside it; ingest's own
        -- role changes are the router's). An assignment offered again in its own queue (EMS, say),
        -- or a case manager's handed to CRU, sends nobody to police; a support that declines, or a
        -- follow-up declined days after the close, makes no police primary.
        exists (
          select 1 from assignments p
          where p.call_id = c.call_id and p.queue = 'police' and p.created_at >= ${since}
            and (
              (p.role = 'primary' and exists (select 1 from assignments f where f.id = p.escalated_from and f.queue <> 'police'))
              or exists (
                select 1 from assignment_transitions t
                where t.assignment_id = p.id and t.role = 'primary' and t.from_status = t.to_status and t.actor <> 'router'
                  and t.reason like 'role support → primary:%' and t.at >= ${since}
              )
            )
        ) as escalated,
        exists (
          select 1 from assignments a
          where a.call_id = c.call_id and a.queue = 'cru' and a.role = 'primary' and a.created_at >= ${since}
        ) as cru_primary,
        exists (
          select 1 from assignments a
          where a.call_id = c.call_id and a.queue = 'cru' and a.disposition = 'resolved_by_phone' and a.created_at >= ${since}
        ) as cru_phone
      from calls c
      where c.created_at >= ${r.from} and c.created_at < ${r.to} and ${agencyFilter(sql`c.agency`, r.agencies)}
    ), e as (
      -- Each eligible call (mental-health indicator, DESIGN rule 1 does not apply) gets exactly one outcome, first match wins.
      select *,
        case
          when not mental_health or safety then null
          when overridden and route in ('police', 'co_response') then 'override'
          when fell_back and route = 'police' then 'fallback'
          when escalated then 'escalation'
          when route in ('cru', 'case_manager') then 'captured'
          else 'other'
        end as capture
      from c
    )
    select agency, bucket, grouping(agency) as g_agency, grouping(bucket) as g_bucket,
      count(*)::int as calls,
      (count(*) filter (where mental_health))::int as "mentalHealth",
      (count(*) filter (where mental_health and status = 'closed'))::int as "mentalHealthClosed",
      (count(*) filter (where mental_health and status = 'closed' and not police_field))::int as diverted,
      (count(*) filter (where capture is not null))::int as eligible,
      (count(*) filter (where capture = 'captured'))::int as captured,
      (count(*) filter (where capture = 'override'))::int as "policeOverride",
      (count(*) filter (where capture = 'fallback'))::int as "policeFallback",
      (count(*) filter (where capture = 'escalation'))::int as escalated,
      (count(*) filter (where capture = 'other'))::int as "otherRoute",
      (count(*) filter (where route = 'police'))::int as "routePolice",
      (count(*) filter (where route = 'cru'))::int as "routeCru",
      (count(*) filter (where route = 'co_response'))::int as "routeCoResponse",
      (count(*) filter (where route = 'ems'))::int as "routeEms",
      (count(*) filter (where route = 'case_manager'))::int as "routeCaseManager",
      (count(*) filter (where status = 'closed' and cru_primary))::int as "cruClosed",
      (count(*) filter (where status = 'closed' and cru_primary and (disposition = 'resolved_by_phone' or cru_phone)))::int as "cruResolvedByPhone"
    from e
    group by ${GROUPING}
  `.execute(db)
  return rows.map((row) => {
    const { agency: _a, bucket: _b, g_agency: _ga, g_bucket: _gb, ...counts } = row
    return { ...keyOf(row), ...(counts as unknown as CallCounts) }
  })
}

/**
 * Why an assignment left its queue's hands, as a report groups it. The stored reasons are written
 * for one assignment's history: `not acknowledged by 2026-03-10T10:05:00.000Z; escalated to
 * co_response; new: police primary, cru support`, or a decline with the responder's own words.
 * Grouped as they are, every row would be a cause of its own, and typed words would reach the
 * report; so the report names the cause alone, one of these.
 */
export const ESCALATION_CAUSES = ['not acknowledged in time', 'declined', 'not recorded', 'other'] as const
export type EscalationCauseName = (typeof ESCALATION_CAUSES)[number]

/**
 * The cause of a stored reason, in SQL so rows stored before this report existed group the same
 * way. The prefixes are the ones src/assignments/escalation.ts writes (its `why`, before the
 * outcome); test/reports/escalation-causes.test.ts drives real escalations to keep them in step.
 */
const causeOf = (status: RawBuilder<unknown>, reason: RawBuilder<unknown>) => sql<EscalationCauseName>`case
  -- A decline stored before migration 0008 holds the console's words alone.
  when ${status} = 'declined' or ${reason} like 'declined%' then 'declined'
  when ${reason} like 'not acknowledged %' then 'not acknowledged in time'
  when coalesce(${reason}, '') = '' then 'not recorded'
  else 'other'
end`

export interface EscalationCause {
  status: (typeof ESCALATION_STATUSES)[number]
  reason: EscalationCauseName
  count: number
}

/** Escalation records (transitions to escalated, expired or declined) by cause, placed in time by when they happened. */
export async function escalationFigures(db: Executor, r: ReportRange): Promise<Array<CellKey & EscalationCause>> {
  const { rows } = await sql<Keyed & EscalationCause>`
    with x as (
      select a.agency, ${bucketOf(sql`t.at`, r)} as bucket, t.to_status as status, ${causeOf(sql`t.to_status`, sql`t.reason`)} as reason
      from assignment_transitions t join assignments a on a.id = t.assignment_id
      where t.to_status in (${list(ESCALATION_STATUSES)}) and t.at >= ${r.from} and t.at < ${r.to}
        and ${agencyFilter(sql`a.agency`, r.agencies)}
    )
    select agency, bucket, grouping(agency) as g_agency, grouping(bucket) as g_bucket, status, reason, count(*)::int as count
    from x
    group by grouping sets ((agency, bucket, status, reason), (agency, status, reason), (bucket, status, reason), (status, reason))
    order by count desc, status, reason
  `.execute(db)
  return rows.map((row) => ({ ...keyOf(row), status: row.status, reason: row.reason, count: row.count }))
}

export interface AckTimes {
  queue: string
  acknowledged: number
  p50Seconds: number | null
  p90Seconds: number | null
}

/**
 * Time to acknowledge per queue: from the assignment's creation to its first move to acknowledged
 * (or straight to accepted, which a console may do), for assignments created in the range. A
 * follow-up is held back until its `reserved_until` (a day after the close, by default) and offered
 * then: its time runs from there, or every follow-up's would include that day; one a console took
 * up before that (a reserved follow-up may be acknowledged) waited no time at all.
 */
export async function ackFigures(db: Executor, r: ReportRange): Promise<Array<CellKey & AckTimes>> {
  const { rows } = await sql<Keyed & AckTimes>`
    with x as (
      select a.agency, a.queue, ${bucketOf(sql`a.created_at`, r)} as bucket,
        extract(epoch from ack.at - least(greatest(a.created_at, a.reserved_until), ack.at))::float8 as secs
      from assignments a
      cross join lateral (
        select min(t.at) as at from assignment_transitions t
        where t.assignment_id = a.id and t.to_status in ('acknowledged', 'accepted')
      ) ack
      where a.created_at >= ${r.from} and a.created_at < ${r.to} and ${agencyFilter(sql`a.agency`, r.agencies)}
    )
    select agency, bucket, grouping(agency) as g_agency, grouping(bucket) as g_bucket, queue,
      count(secs)::int as acknowledged,
      -- Rounded to the millisecond: interpolation leaves float noise (456.0000000000001).
      round(percentile_cont(0.5) within group (order by secs)::numeric, 3)::float8 as "p50Seconds",
      round(percentile_cont(0.9) within group (order by secs)::numeric, 3)::float8 as "p90Seconds"
    from x
    group by grouping sets ((agency, bucket, queue), (agency, queue), (bucket, queue), (queue))
  `.execute(db)
  return rows.map((row) => ({ ...keyOf(row), queue: row.queue, acknowledged: row.acknowledged, p50Seconds: row.p50Seconds, p90Seconds: row.p90Seconds }))
}

export interface FollowUpCounts {
  created: number
  completedOnTime: number
  overdue: number
}

/**
 * Follow-ups made in the range, each counted once: a follow-up declined (or not acknowledged) is
 * offered again as a new assignment, escalated_from the one before it, due when the first was due
 * (src/assignments/escalation.ts). So a follow-up is its first offer (escalated_from null), placed
 * in time by when that was made; on time = some offer in its chain completed by the due time;
 * overdue = an offer in its chain still open past it at `asOf`. The chain is followed within the
 * call (its index): the offers made again are the same call's, and may be made after the range.
 */
export async function followUpFigures(db: Executor, r: ReportRange, asOf: Date): Promise<Array<CellKey & FollowUpCounts>> {
  const { rows } = await sql<Keyed & FollowUpCounts>`
    with recursive chain as (
      select a.id as first_id, a.agency, ${bucketOf(sql`a.created_at`, r)} as bucket, a.due_at, a.id, a.call_id, a.status
      from assignments a
      where a.queue = 'follow_up' and a.escalated_from is null and a.created_at >= ${r.from} and a.created_at < ${r.to} and ${agencyFilter(sql`a.agency`, r.agencies)}
      union all
      select c.first_id, c.agency, c.bucket, c.due_at, a.id, a.call_id, a.status
      from chain c join assignments a on a.call_id = c.call_id and a.escalated_from = c.id and a.queue = 'follow_up'
    ), x as (
      select first_id, agency, bucket,
        bool_or(exists (select 1 from assignment_transitions t where t.assignment_id = chain.id and t.to_status = 'completed' and t.at <= chain.due_at)) as on_time,
        bool_or(status in (${list(OPEN_STATUSES)}) and due_at < ${asOf}) as overdue
      from chain
      group by first_id, agency, bucket
    )
    select agency, bucket, grouping(agency) as g_agency, grouping(bucket) as g_bucket,
      count(*)::int as created,
      (count(*) filter (where on_time))::int as "completedOnTime",
      (count(*) filter (where overdue))::int as overdue
    from x
    group by ${GROUPING}
  `.execute(db)
  return rows.map((row) => ({ ...keyOf(row), created: row.created, completedOnTime: row.completedOnTime, overdue: row.overdue }))
}

export interface RepeatCallers {
  agency: string | null
  subjects: number
  calls: number
}

/**
 * Subjects (by county person id) with at least `threshold` calls in the 30 days before `to`:
 * counts only, never who. Per agency counts a subject's calls in that agency.
 */
export async function repeatCallerFigures(db: Executor, r: ReportRange, threshold: number): Promise<RepeatCallers[]> {
  const since = new Date(r.to.getTime() - 30 * 24 * 3600_000)
  const { rows } = await sql<{ agency: string | null; g_agency: number; subjects: number; calls: number }>`
    with s as (
      select agency, grouping(agency) as g_agency, count(*) as n
      from calls
      where subject_person_id is not null and created_at >= ${since} and created_at < ${r.to} and ${agencyFilter(sql`agency`, r.agencies)}
      group by grouping sets ((agency, subject_person_id), (subject_person_id))
      having count(*) >= ${threshold}
    )
    select agency, g_agency, count(*)::int as subjects, sum(n)::int as calls
    from s group by agency, g_agency
  `.execute(db)
  return rows.map((row) => ({ agency: row.g_agency ? null : row.agency, subjects: row.subjects, calls: row.calls }))
}

export interface QueueNow {
  queue: string
  agency: string
  waiting: number
  /** Since when the longest-waiting one could have been offered (may be ahead of now: a reserved follow-up). */
  oldestWaitingSince: Date | null
}

/**
 * What is waiting in each queue right now (for the dashboard and /metrics): Postgres is the system
 * of record. A reserved follow-up counts in the depth, and waits from its reservedUntil, not its
 * creation, also once offered: counted from the close, the follow_up queue's age grew through
 * every reservation.
 */
export async function queueDepths(db: Executor): Promise<QueueNow[]> {
  return db
    .selectFrom('assignments')
    .select((eb) => [
      'queue',
      'agency',
      eb.fn.countAll<number>().as('waiting'),
      // Not on the status alone: offered at its time, a follow-up keeps its reservedUntil, and has
      // waited from then, not from the close (its age would jump by the whole reservation).
      eb.fn.min<Date>(sql`greatest(created_at, coalesce(reserved_until, created_at))`).as('oldestWaitingSince'),
    ])
    .where('status', 'in', WAITING_STATUSES)
    .groupBy(['queue', 'agency'])
    .execute()
    .then((rows) => rows.map((r) => ({ ...r, waiting: Number(r.waiting) })))
}

/** Follow-ups past their due time and still open, per agency. */
export async function overdueFollowUps(db: Executor, asOf: Date): Promise<Array<{ agency: string; overdue: number }>> {
  const rows = await db
    .selectFrom('assignments')
    .select((eb) => ['agency', eb.fn.countAll<number>().as('overdue')])
    .where('queue', '=', 'follow_up')
    .where('status', 'in', OPEN_STATUSES)
    .where('due_at', '<', asOf)
    .groupBy('agency')
    .execute()
  return rows.map((r) => ({ agency: r.agency, overdue: Number(r.overdue) }))
}

/** Outbox rows not yet relayed: how many and how old the oldest is. */
export async function outboxLag(db: Executor): Promise<{ pending: number; oldestCreatedAt: Date | null }> {
  const row = await db
    .selectFrom('outbox')
    .select((eb) => [eb.fn.countAll<number>().as('pending'), eb.fn.min<Date>('created_at').as('oldest')])
    .where('sent_at', 'is', null)
    .executeTakeFirstOrThrow()
  return { pending: Number(row.pending), oldestCreatedAt: row.oldest ?? null }
}
