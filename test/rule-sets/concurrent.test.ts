/**
 * Activations while calls stream in: every decision is made wholly by one version — its rules, its
 * CRU schedule and the version it records agree — whichever version was active at that moment.
 */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'
import { defaultDocument } from '../routing/fixtures/helpers.js'

const world = await createWorld(t)
const { app, db } = world

// Version 2: every rule id says "v2", and Hastings has no CRU hours at all.
const v2 = defaultDocument() as Omit<ReturnType<typeof defaultDocument>, 'cru'> & { cru: Record<string, unknown> }
v2.version = 2
v2.name = 'dakota-county-v2'
for (const rule of v2.rules) rule.id = `${rule.id}-v2`
v2.cru['hastings-pd'] = { schedule: [] }

t.test('activation under concurrent ingest never mixes versions within a decision', async (t) => {
  const stored = await app.inject({ method: 'POST', url: '/v1/rule-sets', payload: v2 })
  t.equal(stored.statusCode, 201, 'version 2 stored')

  let stop = false
  const toggles: number[] = []
  const toggler = (async () => {
    // Until the ingest ends, not 8 toggles: on a loaded machine the 8 could be done within the
    // first wave or two, leaving the rest of the run to version 1 alone.
    for (let i = 0; !stop; i++) {
      const res =
        i % 2 === 0
          ? await app.inject({ method: 'POST', url: '/v1/rule-sets/2/activate', payload: { reason: `toggle ${i}` } })
          : await app.inject({ method: 'POST', url: '/v1/rule-sets/rollback', payload: { reason: `toggle ${i}` } })
      toggles.push(res.statusCode)
      await new Promise((r) => setTimeout(r, 30))
    }
  })()
  const results: { statusCode: number }[] = []
  for (let wave = 0; wave < 10; wave++) {
    const batch = await Promise.all(
      Array.from({ length: 8 }, () => app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ agency: 'hastings-pd', natureCode: 'EDP', flags: { mentalHealth: true } }) })),
    )
    results.push(...batch)
  }
  stop = true
  await toggler
  t.ok(results.every((r) => r.statusCode === 201), 'every event routed')
  t.ok(toggles.every((s) => s === 200), `every activation and rollback went through (${toggles.length})`)

  const decisions = await db.selectFrom('decisions').select(['rule_set_version', 'rule_id', 'route', 'facts', 'outcome']).execute()
  t.equal(decisions.length, 80)
  const seen = new Set<number>()
  let mixed = 0
  for (const d of decisions) {
    seen.add(d.rule_set_version)
    const v2Rules = d.rule_set_version === 2
    const facts = d.facts as { cru: { available: boolean; reason: string | null } }
    const trace = (d.outcome as { trace: { ruleId: string }[] }).trace
    const consistent =
      d.rule_id.endsWith('-v2') === v2Rules &&
      trace.every((r) => r.ruleId.endsWith('-v2') === v2Rules) &&
      facts.cru.available === !v2Rules &&
      d.route === (v2Rules ? 'police' : 'cru')
    if (!consistent) mixed++
  }
  t.equal(mixed, 0, 'rules, CRU schedule, route and recorded version agree in every decision')
  t.same([...seen].sort(), [1, 2], 'both versions decided calls during the run')
})
