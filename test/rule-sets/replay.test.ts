/** Replay on the fixed, hand-checked data set: the pure report, the CLI and POST /v1/rule-sets/{version}/replay. */
import { execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { compileRuleSet, loadDefaultRuleSet } from '../../src/routing/index.js'
import { replay } from '../../src/rule-sets/replay.js'
import { runReplayCommand, UsageError } from '../../src/rule-sets/replay-command.js'
import { callEvent } from '../helpers/events.js'
import { childEnv, programEntry } from '../helpers/service-process.js'
import { createWorld } from '../helpers/world.js'
import { replayCalls, REPLAY_CALLS_PATH, V1_FIGURES, V2_AGAINST_V1_CHANGES, V2_FIGURES } from './fixtures/replay-data.js'
import { CANDIDATE_PATH, candidateV2, storeRuleSet } from './fixtures/store.js'

const v1 = compileRuleSet(loadDefaultRuleSet())
const v2 = compileRuleSet(candidateV2())

// Made before the first subtest: see test/package/top-level-awaits.test.ts.
const world = await createWorld(t)
const { app, db } = world
await storeRuleSet(db, candidateV2())

t.test('the report on the fixed data set, by hand', async (t) => {
  const alone = replay(replayCalls, v2)
  t.same(alone, { candidate: V2_FIGURES, baseline: null, changes: null })
  const compared = replay(replayCalls, v2, v1)
  t.same(compared, { candidate: V2_FIGURES, baseline: V1_FIGURES, changes: V2_AGAINST_V1_CHANGES })
  t.same(replay(replayCalls, v2, v1), compared, 'the same input gives the same report')
  const self = replay(replayCalls, v1, v1)
  t.equal(self.changes?.total, 0, 'a version against itself changes nothing')
  const limited = replay(replayCalls, v2, v1, { changeLimit: 1 })
  t.equal(limited.changes?.calls.length, 1)
  t.equal(limited.changes?.total, 2, 'the counts cover every change')
  t.equal(limited.changes?.truncated, true)
})

const exec = promisify(execFile)
/** The real CLI, as a process. */
const cliProcess = (args: string[]) =>
  exec(process.execPath, [...programEntry('src/rule-sets/replay-cli.ts'), ...args], {
    cwd: new URL('../../', import.meta.url).pathname,
    env: childEnv({ DATABASE_URL: world.databaseUrl }),
  })
/** The same command in-process (faster), its output as text. */
const cli = async (args: string[]): Promise<string> => {
  let out = ''
  await runReplayCommand(args, (s) => (out += s), () => world.databaseUrl)
  return out
}

t.test('the CLI as a process: stored versions and files, JSON; exit code 2 on a mistake', async (t) => {
  const json = await cliProcess(['--rules', CANDIDATE_PATH, '--against', '1', '--calls', REPLAY_CALLS_PATH, '--json'])
  t.same(JSON.parse(json.stdout), { candidate: V2_FIGURES, baseline: V1_FIGURES, changes: V2_AGAINST_V1_CHANGES })
  await t.rejects(cliProcess(['--rules', '77', '--calls', REPLAY_CALLS_PATH]), { code: 2, stderr: /no stored rule set version 77/ })
})

t.test('the replay command: text, call events, mistakes', async (t) => {
  const text = await cli(['--rules', '2', '--against', '1', '--calls', REPLAY_CALLS_PATH])
  t.match(text, /Replay of rule set 2 \(dakota-county-candidate\) against 1 \(dakota-county-default\): 10 call\(s\)/)
  t.match(text, /capture rate\s+50\.0% \(4\)\s+37\.5% \(3\)/)
  t.match(text, /projected diversion\s+62\.5% \(5\)\s+50\.0% \(4\)/)
  t.match(text, /Route changes: 2\n\s+EDP\s+1\s+case_manager → cru ×1\n\s+TRESPASS\s+1\s+co_response → cru ×1/)

  // Call events (no stored facts): facts built at occurredAt, CRU from each rule set's schedule.
  const dir = await mkdtemp(join(tmpdir(), 'replay-'))
  const events = join(dir, 'events.jsonl')
  const repeat = { ...callEvent({ natureCode: 'EDP', callId: 'E1' }), history: { priorCallsForSubject30d: 1, priorCallsAtAddress30d: 0, caseManagerActive: true } }
  const night = callEvent({ natureCode: 'EDP', callId: 'E2', agency: 'example-city-pd', occurredAt: '2026-11-22T09:00:00Z' })
  await writeFile(events, `${JSON.stringify(repeat)}\n\n${JSON.stringify(night)}\n`)
  const fromEvents = JSON.parse(await cli(['--rules', CANDIDATE_PATH, '--against', '1', '--calls', events, '--json']))
  t.same(fromEvents.candidate.routeMix, { police: 1, cru: 1, co_response: 0, ems: 0, case_manager: 0 })
  t.same(fromEvents.baseline.routeMix, { police: 1, cru: 0, co_response: 0, ems: 0, case_manager: 1 })
  t.equal(fromEvents.candidate.fallbacks, 1, 'outside example-city-pd CRU hours')
  t.same(fromEvents.changes.calls.map((c: { callId: string }) => c.callId), ['E1'])

  // Mistakes are named.
  const bad = join(dir, 'bad.json')
  await writeFile(bad, JSON.stringify({ ...candidateV2(), rules: [] }))
  await t.rejects(cli(['--rules', bad, '--calls', REPLAY_CALLS_PATH]), { name: 'UsageError', message: /not a valid rule set/ })
  await t.rejects(cli(['--rules', '1']), { name: 'UsageError', message: /give --calls/ })
  await t.rejects(cli(['--rule', '1']), { name: 'UsageError', message: /Unknown option '--rule'[\s\S]*usage: npm run replay/ }, 'an unknown option names itself and the usage')
  t.match(await cli(['--help']), /^usage: npm run replay -- --rules/, '--help prints the usage')
  await t.rejects(cli(['--rules', '1', '--from', 'last tuesday', '--to', '2026-11-02T00:00:00Z']), { name: 'UsageError', message: /^--from: .*RFC 3339/ }, 'a range end that is not a date-time')
  await t.rejects(cli(['--rules', '1', '--from', '2026-11-01T00:00:00Z', '--to', '2026-11-01']), { name: 'UsageError', message: /^--to: / }, 'a date without a time')
  await t.rejects(cli(['--rules', '1', '--from', '2026-11-02T00:00:00Z', '--to', '2026-11-01T00:00:00z']), { name: 'UsageError', message: '--from must be before --to' })
  // A range beside --calls, or half a range, used to be ignored without a word.
  await t.rejects(cli(['--rules', '1', '--calls', REPLAY_CALLS_PATH, '--from', '2026-11-01T00:00:00Z']), { name: 'UsageError', message: /give --calls, or --from and --to/ }, '--calls with --from')
  await t.rejects(cli(['--rules', '1', '--calls', REPLAY_CALLS_PATH, '--to', '2026-11-01T00:00:00Z']), { name: 'UsageError', message: /give --calls, or --from and --to/ }, '--calls with --to')
  await t.rejects(cli(['--rules', '1', '--from', '2026-11-01T00:00:00Z']), { name: 'UsageError', message: /give --calls, or --from and --to/ }, '--from without --to')
  // A line that is not an object, or whose history is malformed: named like every other bad line, not a raw ZodError.
  const oddLines = join(dir, 'odd.jsonl')
  await writeFile(oddLines, '42\n')
  await t.rejects(cli(['--rules', '1', '--calls', oddLines]), { name: 'UsageError', message: /^--calls line 1: / }, 'a line that is not an object')
  await writeFile(oddLines, `${JSON.stringify({ ...night, history: { priorCallsForSubject30d: 'many' } })}\n`)
  await t.rejects(cli(['--rules', '1', '--calls', oddLines]), { name: 'UsageError', message: /^--calls line 1: history\.priorCallsForSubject30d/ }, 'a malformed history')
  const garbled = join(dir, 'garbled.jsonl')
  await writeFile(garbled, `${JSON.stringify({ ...night, call: { ...night.call, priority: 9 } })}\n`)
  const failed = await cli(['--rules', '1', '--calls', garbled]).catch((e: Error) => e)
  t.type(failed, UsageError)
  t.match((failed as Error).message, /line 1: not stored facts nor a call event \(call\.priority\)/)
  t.notMatch((failed as Error).message, /Marta|Lindqvist/, 'no personal data in the error')
})

/** Stores a call and its decisions as ingest would have, with the fixture's facts. */
async function storeCall(callId: string, createdAt: string, decisions: Array<{ facts: (typeof replayCalls)[number]['facts'] }>): Promise<void> {
  const first = decisions[0]!.facts
  await db.insertInto('calls').values({
    call_id: callId, agency: first.agency, status: 'open', nature_code: first.natureCode, priority: first.priority,
    flags: JSON.stringify(first.flags), route: 'police', last_occurred_at: createdAt, created_at: createdAt,
  }).execute()
  let i = 0
  let route = 'police'
  for (const { facts } of decisions) {
    const d = v1.decide(facts)
    // As ingest does: a close keeps the route the call already has.
    if (facts.eventType !== 'call.closed') route = d.route
    const eventId = `${callId}-e${++i}`
    const decisionId = crypto.randomUUID()
    await db.insertInto('call_events').values({ event_id: eventId, call_id: callId, type: facts.eventType, occurred_at: createdAt, body_hash: eventId, body: '{}', applied: true, decision_id: decisionId }).execute()
    await db.insertInto('decisions').values({
      id: decisionId, call_id: callId, event_id: eventId, route, rule_set_version: 1, rule_id: d.ruleId, explanation: d.explanation,
      facts: JSON.stringify(facts), outcome: '{}', created_at: new Date(new Date(createdAt).getTime() + i * 60_000),
    }).execute()
    await db.updateTable('calls').set({ decision_id: decisionId, route }).where('call_id', '=', callId).execute()
  }
}

t.test('POST /v1/rule-sets/{version}/replay over stored calls', async (t) => {
  for (const c of replayCalls) {
    // C03 was closed later: the close's decision (different facts) must not be the one replayed.
    const closing = { facts: { ...c.facts, eventType: 'call.closed' as const, natureCode: 'NOISE', history: { priorCallsForSubject30d: 0, priorCallsAtAddress30d: 0, caseManagerActive: false } } }
    await storeCall(c.callId, '2026-11-10T15:00:00Z', c.callId === 'C03' ? [c, closing] : [c])
  }
  await storeCall('OLD', '2026-09-01T12:00:00Z', [replayCalls[0]!]) // before the range
  await storeCall('R01', '2026-11-11T12:00:00Z', [{ facts: { ...replayCalls[7]!.facts, agency: 'rosemount-pd' } }]) // another agency

  const range = { from: '2026-11-01T00:00:00Z', to: '2026-12-01T00:00:00Z' }
  const run = (version: number | string, body: object, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: `/v1/rule-sets/${version}/replay`, payload: { ...range, ...body }, headers })

  const res = await run(2, { against: 1, agency: 'hastings-pd' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { ...range, from: '2026-11-01T00:00:00.000Z', to: '2026-12-01T00:00:00.000Z', candidate: V2_FIGURES, baseline: V1_FIGURES, changes: V2_AGAINST_V1_CHANGES })

  const all = (await run(1, {})).json()
  t.equal(all.candidate.calls, 11, 'every agency; the old call is outside the range')
  t.equal(all.candidate.routeMix.police, 5)
  t.equal(all.changes, null)

  // Reproducible: version 1 on its own stored facts gives back the stored routes.
  const stored = await db.selectFrom('calls').select(['route']).where('created_at', '>=', new Date(range.from)).execute()
  const mix = { police: 0, cru: 0, co_response: 0, ems: 0, case_manager: 0 } as Record<string, number>
  for (const s of stored) mix[s.route]!++
  t.same(all.candidate.routeMix, mix)

  const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
  const hastings = await world.key('supervisor', { agencies: ['hastings-pd'] })
  t.same((await run(2, { against: 1 }, bearer(hastings))).json().candidate, V2_FIGURES, 'a Hastings key sees Hastings calls only')
  // As the summary report: "0 calls" for an agency the key may not see would read as a quiet agency.
  const outside = await run(2, { agency: 'rosemount-pd' }, bearer(hastings))
  t.equal(outside.statusCode, 403, 'another agency is refused')
  t.match(outside.json(), { code: 'forbidden', detail: /agency rosemount-pd/ })
  for (const role of ['cad', 'console', 'auditor'] as const) t.equal((await run(2, {}, bearer(await world.key(role)))).statusCode, 403, role)
  t.equal((await run(2, {}, { authorization: '' })).statusCode, 401)

  t.equal((await run(9, {})).statusCode, 404, 'unknown version')
  t.equal((await run(2, { against: 9 })).statusCode, 404, 'unknown version to compare with')
  t.equal((await run('x', {})).statusCode, 400)
  t.equal((await run(2, { from: range.to, to: range.from })).statusCode, 400, 'from after to')
  t.equal((await run(2, { from: '2020-01-01T00:00:00Z' })).statusCode, 400, 'range too long')

  const fromDb = JSON.parse(await cli(['--rules', '2', '--against', '1', '--from', range.from, '--to', range.to, '--json']))
  t.same(fromDb.candidate, { ...V2_FIGURES, calls: 11, routeMix: { ...V2_FIGURES.routeMix, police: 5 } }, 'the CLI over stored calls: every agency')
  t.same(fromDb.changes, V2_AGAINST_V1_CHANGES)
})
