import type { Migration } from 'kysely'
import * as m0001 from './0001_initial.js'
import * as m0004 from './0004_security.js'
import * as m0006 from './0006_reports.js'
import * as m0007 from './0007_rule_set_lifecycle.js'
import * as m0008 from './0008_lifecycle.js'
import * as m0009 from './0009_shadow.js'
import * as m0010 from './0010_feed.js'
import * as m0011 from './0011_outbox_notify.js'
import * as m0012 from './0012_outbox_trace_context.js'
import * as m0013 from './0013_api_key_notify.js'
import * as m0014 from './0014_outbox_resend.js'
import * as m0015 from './0015_personal_data_indexes.js'
import * as m0016 from './0016_typed_reasons.js'
import * as m0017 from './0017_api_key_notify_insert.js'
import * as m0018 from './0018_history_indexes.js'
import * as m0019 from './0019_feed_order.js'
import * as m0020 from './0020_assignment_case_manager.js'
import * as m0021 from './0021_audit_log_no_truncate.js'

/** Listed statically so the same code runs from TypeScript sources (tests) and from dist/ (production). */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0004_security': m0004,
  '0006_reports': m0006,
  '0007_rule_set_lifecycle': m0007,
  '0008_lifecycle': m0008,
  '0009_shadow': m0009,
  '0010_feed': m0010,
  '0011_outbox_notify': m0011,
  '0012_outbox_trace_context': m0012,
  '0013_api_key_notify': m0013,
  '0014_outbox_resend': m0014,
  '0015_personal_data_indexes': m0015,
  '0016_typed_reasons': m0016,
  '0017_api_key_notify_insert': m0017,
  '0018_history_indexes': m0018,
  '0019_feed_order': m0019,
  '0020_assignment_case_manager': m0020,
  '0021_audit_log_no_truncate': m0021,
}
