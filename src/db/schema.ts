import type { ColumnType, Generated, Insertable, Selectable } from 'kysely'

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>
type CreatedAt = ColumnType<Date, Date | string | undefined, never>
type Json<T> = ColumnType<T, string, string>

export type RuleSetStatus = 'draft' | 'active' | 'retired'

export interface RuleSetsTable {
  version: number
  name: string
  document: Json<unknown>
  created_at: CreatedAt
  status: ColumnType<RuleSetStatus, RuleSetStatus | undefined, RuleSetStatus>
  created_by: ColumnType<string, string | undefined, never>
  activated_at: Timestamp | null
}

export interface RuleSetActivationsTable {
  id: Generated<number>
  at: CreatedAt
  kind: 'initial' | 'activate' | 'rollback'
  from_version: number | null
  to_version: number
  actor: string
  key_id: string | null
  reason: string
}

export interface CallsTable {
  call_id: string
  agency: string
  status: 'open' | 'closed'
  nature_code: string
  priority: number
  flags: Json<Record<string, boolean>>
  location: Json<unknown> | null
  caller: Json<unknown> | null
  subject: Json<unknown> | null
  description: string | null
  subject_person_id: string | null
  address_key: string | null
  dispatcher_override: string | null
  disposition: string | null
  mental_health: ColumnType<boolean, boolean | undefined, boolean>
  route: string
  decision_id: string | null
  last_occurred_at: Timestamp
  created_at: CreatedAt
  updated_at: Timestamp
  closed_at: Timestamp | null
}

export interface CallEventsTable {
  event_id: string
  call_id: string
  type: string
  occurred_at: Timestamp
  received_at: CreatedAt
  body_hash: string
  body: Json<unknown>
  applied: boolean
  decision_id: string | null
}

export interface DecisionsTable {
  id: string
  call_id: string
  event_id: string
  route: string
  rule_set_version: number
  rule_id: string
  explanation: string
  facts: Json<unknown>
  outcome: Json<unknown>
  created_at: Timestamp
}

export interface AssignmentsTable {
  id: string
  seq: Generated<number>
  call_id: string
  decision_id: string
  agency: string
  queue: string
  role: string
  status: string
  disposition: string | null
  /** Follow-ups: the time the follow-up must be done by. */
  due_at: Timestamp | null
  /** A reserved follow-up is offered at this time. */
  reserved_until: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>
  ack_deadline_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>
  escalated_from: ColumnType<string | null, string | null | undefined, string | null>
  /** Case management: the case manager its decision saw (the case link's case_manager; migration 0020). */
  case_manager: ColumnType<string | null, string | null | undefined, string | null>
  created_at: CreatedAt
  updated_at: Timestamp
}

export interface AssignmentTransitionsTable {
  id: Generated<number>
  assignment_id: string
  from_status: string | null
  to_status: string
  role: string
  actor: string
  reason: string | null
  /** Where in `reason` the text a console typed lies (migration 0016): its first character, from 1, and its length. Null: the service wrote it all. */
  typed_from: number | null
  typed_length: number | null
  at: CreatedAt
  /** Stamped by trigger (migration 0010); a writer that creates the assignment in the same statement gives them. */
  feed_agency: ColumnType<string | null, string | undefined, never>
  feed_queue: ColumnType<string | null, string | undefined, never>
}

export interface OutboxTable {
  id: Generated<number>
  assignment_id: string
  queue: string
  job_id: string
  payload: Json<unknown>
  created_at: CreatedAt
  sent_at: Timestamp | null
  attempts: ColumnType<number, number | undefined, number>
  last_error: string | null
  /** W3C trace context of the request that wrote the row (tracing on), for the relay to continue. */
  trace_context: ColumnType<string | null, string | null | undefined, string | null>
  /** 0 for the first send; n for the n-th re-send of an assignment whose job was lost (src/queue/resend.ts). */
  resend: ColumnType<number, number | undefined, number>
}

export interface CaseLinksTable {
  person_id: string
  case_manager: string
  active: boolean
  updated_at: Timestamp
}

export interface ApiKeysTable {
  id: string
  name: string
  role: string
  agencies: string[] | null
  queues: string[] | null
  key_hash: string
  key_prefix: string
  created_by: string
  created_at: CreatedAt
  expires_at: Timestamp | null
  revoked_at: Timestamp | null
}

export interface AuditLogTable {
  id: Generated<number>
  at: CreatedAt
  actor: string
  key_id: string | null
  role: string | null
  action: string
  target_type: string
  target_id: string | null
  agency: string | null
  source_ip: string | null
  request_id: string | null
  details: Json<unknown> | null
}

export interface ShadowRuleSetTable {
  singleton: ColumnType<boolean, boolean | undefined, boolean>
  version: number
  set_by: string
  reason: string | null
  set_at: Timestamp
}

export interface ShadowDecisionsTable {
  id: Generated<number>
  decision_id: string
  call_id: string
  agency: string
  event_type: string
  live_version: number
  shadow_version: number
  nature_code: string
  live_route: string
  shadow_route: string
  live_rule_id: string
  shadow_rule_id: string
  changed: boolean
  mental_health: boolean
  shadow_assignments: Json<unknown>
  created_at: Timestamp
}

export interface Database {
  rule_sets: RuleSetsTable
  rule_set_activations: RuleSetActivationsTable
  calls: CallsTable
  call_events: CallEventsTable
  decisions: DecisionsTable
  assignments: AssignmentsTable
  assignment_transitions: AssignmentTransitionsTable
  outbox: OutboxTable
  case_links: CaseLinksTable
  api_keys: ApiKeysTable
  audit_log: AuditLogTable
  shadow_rule_set: ShadowRuleSetTable
  shadow_decisions: ShadowDecisionsTable
}

export type CallRow = Selectable<CallsTable>
export type AssignmentRow = Selectable<AssignmentsTable>
export type NewAssignment = Insertable<AssignmentsTable>
