/**
 * The rule-set lifecycle: drafts are stored only after they pass verification, activation
 * re-verifies, switches the active version in one transaction, records who, when and why, and
 * tells every instance (NOTIFY). Rollback is an activation of the version active before.
 */
import type { FastifyRequest } from 'fastify'
import { sql } from 'kysely'
import { audit } from '../auth/audit.js'
import type { Db } from '../db/connect.js'
import { AppError, notFound } from '../http/errors.js'
import { formatReport, verifyRuleSetAsync, type VerificationReport } from '../routing/index.js'
import type { RuleSetRegistry } from './registry.js'
import { activeVersion, findRuleSet, lastActivation, latestVersion, loadDocument, RULE_SET_CHANNEL, RULE_SET_LOCK } from './repository.js'
import type { ShadowSource } from './shadow.js'

export interface ActivationResult {
  fromVersion: number | null
  toVersion: number
  kind: 'activate' | 'rollback'
  at: Date
}

/** A refusal carrying the verification report (422). */
export function verificationFailed(report: VerificationReport): AppError {
  return new AppError('verification-failed', formatReport(report), { extra: { version: report.version, findings: report.findings } })
}

const MAX_VERSION_STEP = 1000

/** `shadow`: this instance's shadow setting, which an activation of the version in shadow ends (others follow within its refresh). */
export function createRuleSetLifecycle(deps: { db: Db; registry: RuleSetRegistry; shadow: Pick<ShadowSource, 'clear' | 'refresh'>; now?: () => Date }) {
  const { db, registry } = deps
  const clock = deps.now ?? (() => new Date())
  // Stored versions never change, so neither does their report (a few hundred ms to compute).
  // Promises, so that two requests for one version share one proof.
  const reports = new Map<number, Promise<VerificationReport>>()

  async function verification(version: number): Promise<VerificationReport | undefined> {
    const hit = reports.get(version)
    if (hit) return hit
    const document = await loadDocument(db, version)
    if (document === undefined) return undefined
    const report = verifyRuleSetAsync(document)
    reports.set(version, report)
    return report
  }

  async function storedVerification(version: number): Promise<VerificationReport | undefined> {
    const document = await loadDocument(db, version)
    return document === undefined ? undefined : verifyRuleSetAsync(document, { asStored: true })
  }

  /**
   * Stores a verified draft. The document's version must be above every stored one, and at most
   * MAX_VERSION_STEP above: drafts are never deleted, so one mistyped 2147483647 would otherwise
   * leave no version to publish under.
   */
  async function createDraft(req: FastifyRequest, body: unknown) {
    const report = await verifyRuleSetAsync(body)
    if (!report.ok) throw verificationFailed(report)
    const doc = body as { version: number; name: string }
    const row = await db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${RULE_SET_LOCK})`.execute(trx)
      const latest = await latestVersion(trx)
      if (doc.version <= latest) {
        throw new AppError('rule-set-conflict', `version ${doc.version} is taken or older than the latest (${latest}): give the new rule set version ${latest + 1}`, {
          extra: { nextVersion: latest + 1 },
        })
      }
      if (doc.version > latest + MAX_VERSION_STEP) {
        throw new AppError('rule-set-conflict', `version ${doc.version} is more than ${MAX_VERSION_STEP} above the latest (${latest}): give the new rule set version ${latest + 1}`, {
          extra: { nextVersion: latest + 1 },
        })
      }
      const inserted = await trx
        .insertInto('rule_sets')
        .values({ version: doc.version, name: doc.name, document: JSON.stringify(body), status: 'draft', created_by: req.principal?.name ?? 'system' })
        .returning(['version', 'name', 'status', 'created_at', 'created_by', 'activated_at'])
        .executeTakeFirstOrThrow()
      await audit(trx, req, { action: 'rule-set.create', targetType: 'rule_set', targetId: String(doc.version), details: { name: doc.name } })
      return inserted
    })
    reports.set(row.version, Promise.resolve(report))
    return { row, report }
  }

  /** `undoing`: the version a rollback undoes, which must still be the active one under the lock. */
  async function switchTo(req: FastifyRequest, version: number, reason: string, kind: 'activate' | 'rollback', undoing?: number): Promise<ActivationResult> {
    // Verify before taking the lock: the stored document cannot change, and proving takes a moment.
    // A rollback, the emergency path, is not held up by checks added since its version was stored
    // (escalation ignores what they refuse): it is proved as stored, DESIGN's invariants included.
    const report = kind === 'rollback' ? await storedVerification(version) : await verification(version)
    if (!report) throw notFound(`rule set ${version}`)
    if (!report.ok) throw verificationFailed(report)
    const at = clock()
    let shadowEnded = false
    const result = await db.transaction().execute(async (trx): Promise<ActivationResult> => {
      await sql`select pg_advisory_xact_lock(${RULE_SET_LOCK})`.execute(trx)
      const target = await findRuleSet(trx, version)
      if (!target) throw notFound(`rule set ${version}`)
      if (target.status === 'active') throw new AppError('rule-set-conflict', `rule set ${version} is already active`)
      const from = (await activeVersion(trx)) ?? null
      // The target was read before the lock: another supervisor's activation that committed since
      // would be rolled over, to a version older than the one being undone.
      if (undoing !== undefined && from !== undoing) {
        throw new AppError('rule-set-conflict', `version ${from} was activated meanwhile: this rollback would undo it too, to version ${version}; look at the activations and roll back again`)
      }
      await trx.updateTable('rule_sets').set({ status: 'retired' }).where('status', '=', 'active').execute()
      await trx.updateTable('rule_sets').set({ status: 'active', activated_at: at }).where('version', '=', version).execute()
      await trx
        .insertInto('rule_set_activations')
        .values({ at, kind, from_version: from, to_version: version, actor: req.principal?.name ?? 'system', key_id: req.principal?.keyId ?? null, reason })
        .execute()
      await audit(trx, req, { action: `rule-set.${kind}`, targetType: 'rule_set', targetId: String(version), details: { fromVersion: from, toVersion: version, reason } })
      // The candidate in shadow is now live: shadowing ends, or it would start again, stale, beside
      // whichever version is activated after it.
      shadowEnded = await deps.shadow.clear(trx, version)
      if (shadowEnded) {
        await audit(trx, req, { action: 'rule-set.shadow.clear', targetType: 'rule_set', targetId: String(version), details: { reason: `version ${version} activated` } })
      }
      // Delivered at commit, to every instance listening (this one included).
      await sql`select pg_notify(${RULE_SET_CHANNEL}, ${String(version)})`.execute(trx)
      return { fromVersion: from, toVersion: version, kind, at }
    })
    // Committed: a failed re-read here is caught up by NOTIFY or the periodic check, not an error.
    await registry.refresh().catch((err: Error) => req.log.warn({ err: { message: err.message } }, 'rule set activated; this instance switches on its next check'))
    if (shadowEnded) await deps.shadow.refresh().catch((err: Error) => req.log.warn({ err: { message: err.message } }, 'shadow mode ended; this instance follows on its next read'))
    return result
  }

  const activate = (req: FastifyRequest, version: number, reason: string) => switchTo(req, version, reason, 'activate')

  /** Back to the version that was active before the current one (or to `toVersion`). */
  async function rollback(req: FastifyRequest, reason: string, toVersion?: number): Promise<ActivationResult> {
    if (toVersion !== undefined) return switchTo(req, toVersion, reason, 'rollback')
    const last = await lastActivation(db)
    if (!last || last.from_version === null) throw new AppError('rule-set-conflict', 'there is no earlier active version to roll back to')
    return switchTo(req, last.from_version, reason, 'rollback', last.to_version)
  }

  return { verification, createDraft, activate, rollback }
}

export type RuleSetLifecycle = ReturnType<typeof createRuleSetLifecycle>
