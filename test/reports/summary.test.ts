import { randomUUID } from 'node:crypto'
import t from 'tap'
import { callEvent, type EventInput } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'
import { seedReportWorld } from './fixture.js'

// The range is two weeks from Monday 2026-03-02 (day 0 of the fixture) to 2026-03-16 (exclusive);
// "now" is 2026-03-20, so H2's follow-up (due day 3) is overdue. See fixture.ts for the data set.
const T0 = new Date('2026-03-02T00:00:00Z')
const NOW = new Date('2026-03-20T00:00:00Z')
const RANGE = 'from=2026-03-02T00:00:00Z&to=2026-03-16T00:00:00Z'

const world = await createWorld(t, { now: () => NOW })
await seedReportWorld(world.db, T0)

const get = async (qs: string) => {
  const res = await world.app.inject({ url: `/v1/reports/summary?${qs}` })
  if (res.statusCode !== 200) throw new Error(`${qs}: ${res.statusCode} ${res.body}`)
  return res.json()
}

t.test('overall figures, computed by hand', async (t) => {
  const { overall: o } = await get(RANGE)
  // In range: H1 H2 H3 H4 H5 R1 R2 R3 = 8 (H0 is before it, X after it).
  t.equal(o.calls, 8)
  // Mental-health calls: H1 H2 H3 H5 R1 R2 = 6, all closed.
  t.equal(o.mentalHealthCalls, 6)
  // Police field response (a police assignment ever accepted): H2, H3, H5 (escalated to police), R1.
  // Without: H1 (CRU by phone), R2 (case manager) → 2 of 6 = 0.3333.
  t.same(o.diversion, { closedMentalHealthCalls: 6, withoutPoliceFieldResponse: 2, rate: 0.3333 })
  // Eligible (MH, no safety facts): H1 H2 H5 R1 R2 = 5 (H3 has weapons).
  // H1 → CRU, R2 → case manager: captured 2 → 0.4. H2 fell back to police (CRU unavailable),
  // R1 was overridden to police, H5's CRU assignment was escalated.
  t.same(o.capture, { eligible: 5, captured: 2, rate: 0.4, toPolice: { fallback: 1, override: 1, escalation: 1 }, otherRoute: 0 })
  // Routes: police H2 H4 R1; cru H1 H5; co_response H3; ems R3; case_manager R2.
  t.same(o.routeMix, { police: 3, cru: 2, co_response: 1, ems: 1, case_manager: 1 })
  // 1 co-response of 8 calls.
  t.equal(o.coResponseShare, 0.125)
  // H5's CRU primary escalated; H4's police offer expired (both on day 8), each not acknowledged by
  // its own deadline: the cause, not the stored reason with its time and outcome.
  t.same(o.escalations, {
    total: 2,
    causes: [
      { status: 'escalated', reason: 'not acknowledged in time', count: 1 },
      { status: 'expired', reason: 'not acknowledged in time', count: 1 },
    ],
  })
  // Seconds from creation to first acknowledge (or accept):
  //  police: H2 120, H3 30 (accepted directly), H5 60, R1 600; H4 never → [30, 60, 120, 600]
  //          p50 = 60 + 0.5·(120−60) = 90; p90 at rank 0.9·3 = 2.7 → 120 + 0.7·(600−120) = 456
  //  cru: H1 60, H3 180 (H5, R2 never) → p50 120; p90 = 60 + 0.9·120 = 168
  //  case_management: R2 300 → 300 / 300;  ems: R3 never → none
  //  follow_up, from the end of its reservation (it is offered then): H1 10 h = 36000, R2 71 h = 255600
  //  → p50 145800; p90 = 36000 + 0.9·219600 = 233640
  t.same(o.timeToAcknowledge, {
    police: { acknowledged: 4, p50Seconds: 90, p90Seconds: 456 },
    cru: { acknowledged: 2, p50Seconds: 120, p90Seconds: 168 },
    ems: { acknowledged: 0, p50Seconds: null, p90Seconds: null },
    case_management: { acknowledged: 1, p50Seconds: 300, p90Seconds: 300 },
    follow_up: { acknowledged: 2, p50Seconds: 145800, p90Seconds: 233640 },
  })
  // Closed calls with a CRU primary: H1 (resolved_by_phone), H5 (field_response) → 1 of 2.
  t.same(o.cruPhoneResolution, { closedCruCalls: 2, resolvedByPhone: 1, share: 0.5 })
  // Follow-ups: H1 (done day 1, due day 3: on time), H2 (open, due day 3 < now: overdue), R2 (done day 11, due day 10: late).
  t.same(o.followUps, { created: 3, completedOnTime: 1, overdue: 1 })
  // 30 days before 03-16: P1 has H0 H1 H2 H3 = 4 calls ≥ 3; P3 has 2; P2 has 1.
  t.same(o.repeatCallers, { threshold: 3, windowDays: 30, subjects: 1, calls: 4 })
  t.notMatch(JSON.stringify(o), /P1|P3/, 'no person ids in the report')
})

t.test('per agency, computed by hand', async (t) => {
  const { byAgency } = await get(RANGE)
  t.same(byAgency.map((c: { agency: string }) => c.agency), ['hastings-pd', 'rosemount-pd'])
  const [h, r] = byAgency
  // hastings: H1..H5 = 5 calls; MH H1 H2 H3 H5, diverted H1 → 1/4; eligible H1 H2 H5, captured H1 → 1/3.
  t.equal(h.calls, 5)
  t.same(h.diversion, { closedMentalHealthCalls: 4, withoutPoliceFieldResponse: 1, rate: 0.25 })
  t.same(h.capture, { eligible: 3, captured: 1, rate: 0.3333, toPolice: { fallback: 1, override: 0, escalation: 1 }, otherRoute: 0 })
  t.same(h.routeMix, { police: 2, cru: 2, co_response: 1, ems: 0, case_manager: 0 })
  t.equal(h.coResponseShare, 0.2)
  t.equal(h.escalations.total, 2)
  // police: H2 120, H3 30, H5 60 → p50 60, p90 = 60 + 0.8·60 = 108
  t.same(h.timeToAcknowledge.police, { acknowledged: 3, p50Seconds: 60, p90Seconds: 108 })
  t.same(h.cruPhoneResolution, { closedCruCalls: 2, resolvedByPhone: 1, share: 0.5 })
  t.same(h.followUps, { created: 2, completedOnTime: 1, overdue: 1 })
  t.same(h.repeatCallers, { threshold: 3, windowDays: 30, subjects: 1, calls: 4 })
  // rosemount: R1 R2 R3; MH R1 R2, diverted R2 → 1/2; eligible R1 R2, captured R2, R1 overridden.
  t.equal(r.calls, 3)
  t.same(r.diversion, { closedMentalHealthCalls: 2, withoutPoliceFieldResponse: 1, rate: 0.5 })
  t.same(r.capture, { eligible: 2, captured: 1, rate: 0.5, toPolice: { fallback: 0, override: 1, escalation: 0 }, otherRoute: 0 })
  t.same(r.routeMix, { police: 1, cru: 0, co_response: 0, ems: 1, case_manager: 1 })
  t.equal(r.coResponseShare, 0)
  t.equal(r.escalations.total, 0)
  // No closed CRU-primary call: the share is null, not 0.
  t.same(r.cruPhoneResolution, { closedCruCalls: 0, resolvedByPhone: 0, share: null })
  t.same(r.followUps, { created: 1, completedOnTime: 0, overdue: 0 })
  t.same(r.repeatCallers, { threshold: 3, windowDays: 30, subjects: 0, calls: 0 })
})

t.test('daily and weekly buckets, computed by hand', async (t) => {
  const daily = await get(RANGE)
  // Days with calls: 03-02 (H1 H2 R1), 03-03 (H3), 03-09 (R2), 03-10 (H4 H5), 03-11 (R3).
  t.same(
    daily.series.map((c: { bucketStart: string; calls: number }) => [c.bucketStart.slice(0, 10), c.calls]),
    [['2026-03-02', 3], ['2026-03-03', 1], ['2026-03-09', 1], ['2026-03-10', 2], ['2026-03-11', 1]],
  )
  const d0 = daily.series[0]
  // 03-02: MH H1 H2 R1, diverted H1 → 1/3; eligible the same three, captured H1 → 1/3.
  t.same([d0.diversion.rate, d0.capture.rate, d0.capture.toPolice], [0.3333, 0.3333, { fallback: 1, override: 1, escalation: 0 }])
  const d10 = daily.series[3]
  // 03-10: H5 is the one MH call, escalated to police → diversion 0, capture 0; both escalation records that day.
  t.same([d10.diversion.rate, d10.capture.rate, d10.escalations.total], [0, 0, 2])

  const weekly = await get(`${RANGE}&bucket=week`)
  // Week of 03-02: H1 H2 H3 R1 — MH 4, diverted H1 → 0.25; eligible H1 H2 R1, captured H1 → 0.3333.
  // Week of 03-09: H4 H5 R2 R3 — MH H5 R2, diverted R2 → 0.5; eligible H5 R2, captured R2 → 0.5.
  t.same(
    weekly.series.map((c: { bucketStart: string; calls: number; diversion: { rate: number }; capture: { rate: number } }) => [c.bucketStart, c.calls, c.diversion.rate, c.capture.rate]),
    [
      ['2026-03-02T00:00:00.000Z', 4, 0.25, 0.3333],
      ['2026-03-09T00:00:00.000Z', 4, 0.5, 0.5],
    ],
  )
  // Per agency per week: hastings week 2 = H4 H5; rosemount week 1 = R1.
  const hw2 = weekly.seriesByAgency.find((c: { agency: string; bucketStart: string }) => c.agency === 'hastings-pd' && c.bucketStart.startsWith('2026-03-09'))
  t.same([hw2.calls, hw2.mentalHealthCalls, hw2.escalations.total], [2, 1, 2])
  const rw1 = weekly.seriesByAgency.find((c: { agency: string; bucketStart: string }) => c.agency === 'rosemount-pd' && c.bucketStart.startsWith('2026-03-02'))
  t.same([rw1.calls, rw1.capture.toPolice.override], [1, 1])
})

t.test('agency filter, repeat threshold and range edges', async (t) => {
  const only = await get(`${RANGE}&agency=rosemount-pd`)
  t.equal(only.overall.calls, 3)
  t.same(only.byAgency.map((c: { agency: string }) => c.agency), ['rosemount-pd'])
  // Threshold 2: P1 (4 calls) and P3 (R1 R2) → 2 subjects, 6 calls.
  const two = await get(`${RANGE}&repeatThreshold=2`)
  t.same(two.overall.repeatCallers, { threshold: 2, windowDays: 30, subjects: 2, calls: 6 })
  // Extending to 03-17 takes in X (day 14): 9 calls.
  const wider = await get('from=2026-03-02T00:00:00Z&to=2026-03-17T00:00:00Z')
  t.equal(wider.overall.calls, 9)
  // An empty range: zeros and null rates, never a division by zero.
  const empty = await get('from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z')
  t.equal(empty.overall.calls, 0)
  t.equal(empty.overall.diversion.rate, null)
  t.same(empty.series, [])
})

t.test('bad ranges are refused with the field named', async (t) => {
  for (const qs of ['from=2026-03-16T00:00:00Z&to=2026-03-02T00:00:00Z', 'from=2020-01-01T00:00:00Z&to=2026-03-02T00:00:00Z', 'from=yesterday', 'bucket=month', 'colour=red']) {
    const res = await world.app.inject({ url: `/v1/reports/summary?${qs}` })
    t.equal(res.statusCode, 400, qs)
    t.match(res.headers['content-type'], /application\/problem\+json/)
    t.ok(res.json().invalidParams?.length, `${qs}: invalidParams`)
  }
})

t.test('CSV: one row per cell, the same figures', async (t) => {
  const res = await world.app.inject({ url: `/v1/reports/summary?${RANGE}&bucket=week`, headers: { accept: 'text/csv' } })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/csv/)
  t.match(res.headers.vary, /accept/i)
  const [header, ...rows] = res.body.trimEnd().split('\r\n').map((l) => l.split(','))
  const col = (row: string[], name: string) => row[header!.indexOf(name)]
  // overall + 2 agencies + 2 weeks + 2 agencies × 2 weeks = 9 rows.
  t.equal(rows.length, 9)
  const all = rows.find((r) => r[0] === 'all' && r[1] === 'all')!
  t.same(
    ['calls', 'diversion_rate', 'capture_rate', 'to_police_fallback', 'to_police_override', 'to_police_escalation', 'route_co_response', 'escalations', 'ack_police_p90_s', 'ack_ems_p50_s', 'cru_phone_share', 'follow_ups_overdue', 'repeat_caller_subjects'].map((c) => col(all, c)),
    ['8', '0.3333', '0.4', '1', '1', '1', '1', '2', '456', '', '0.5', '1', '1'],
  )
  // The OpenAPI document's CSV example has the answer's columns.
  type Doc = { paths: Record<string, { get: { responses: Record<string, { content: Record<string, { schema: { examples?: string[] } }> }> } }> }
  const example = (world.app.swagger() as unknown as Doc).paths['/v1/reports/summary']!.get.responses['200']!.content['text/csv']!.schema.examples![0]!
  t.equal(example.split('\r\n')[0], header!.join(','), 'the documented example has the same header')
  t.equal(res.body.split('\r\n')[0]!.split(',').length, example.split('\r\n')[1]!.split(',').length, 'and rows as wide')
  const json = await world.app.inject({ url: `/v1/reports/summary?${RANGE}`, headers: { accept: 'application/json, text/csv' } })
  t.match(json.headers['content-type'], /application\/json/, 'JSON when it comes first')
  const weighed = await world.app.inject({ url: `/v1/reports/summary?${RANGE}`, headers: { accept: 'text/csv;q=0.1, application/json' } })
  t.match(weighed.headers['content-type'], /application\/json/, 'JSON when CSV is listed first with a lower q-value')
  const onlyCsv = await world.app.inject({ url: `/v1/reports/summary?${RANGE}`, headers: { accept: 'text/csv; charset=utf-8, */*;q=0.1' } })
  t.match(onlyCsv.headers['content-type'], /^text\/csv/, 'CSV when it is preferred over anything else')
  const withHeader = await world.app.inject({ url: `/v1/reports/summary?${RANGE}`, headers: { accept: 'text/csv; header=present' } })
  t.match(withHeader.headers['content-type'], /^text\/csv/, 'an RFC 4180 parameter on the range is no obstacle')
})

t.test('buckets in a time zone: its midnights, across daylight saving time', async (t) => {
  // UTC+14 all year: H1 (day 0, 10:00Z) is 03-03 00:00 there, H5 (day 8, 10:00Z) 03-11 00:00.
  const far = await get(`${RANGE}&timeZone=Pacific/Kiritimati`)
  t.equal(far.timeZone, 'Pacific/Kiritimati')
  t.same(
    far.series.map((c: { bucketStart: string; calls: number }) => [c.bucketStart, c.calls]),
    [['2026-03-02T10:00:00.000Z', 4], ['2026-03-08T10:00:00.000Z', 1], ['2026-03-09T10:00:00.000Z', 1], ['2026-03-10T10:00:00.000Z', 2]],
    'each bucket starts at a local midnight: 03-03 holds H1 H2 R1 H3; 03-09 R2; 03-10 H4; 03-11 H5 R3',
  )
  t.equal(far.overall.calls, 8, 'the range is the same instants')
  // Chicago moves to daylight time on Sunday 03-08: its weeks start at 06:00Z, then at 05:00Z.
  const chicago = await get(`${RANGE}&bucket=week&timeZone=America/Chicago`)
  t.same(
    chicago.series.map((c: { bucketStart: string; calls: number }) => [c.bucketStart, c.calls]),
    [['2026-03-02T06:00:00.000Z', 4], ['2026-03-09T05:00:00.000Z', 4]],
  )
  const csv = await world.app.inject({ url: `/v1/reports/summary?${RANGE}&timeZone=America/Chicago`, headers: { accept: 'text/csv' } })
  t.match(csv.body, /2026-03-02T06:00:00\.000Z/, 'the CSV has the same buckets')
  for (const zone of ['Mars/Olympus', '+05:00', "UTC'; select 1; --"]) {
    const res = await world.app.inject({ url: `/v1/reports/summary?${RANGE}&timeZone=${encodeURIComponent(zone)}` })
    t.equal(res.statusCode, 400, `${zone}: refused`)
    t.same(res.json().invalidParams.map((p: { name: string }) => p.name), ['querystring.timeZone'])
  }
  t.equal((await get(RANGE)).timeZone, 'UTC', 'UTC unless asked')
})

t.test('queue status: depth and age now, overdue follow-ups', async (t) => {
  const res = await world.app.inject({ url: '/v1/reports/queues' })
  t.equal(res.statusCode, 200)
  const body = res.json()
  // Waiting now (2026-03-20): H4 police since day 8 9h (9 d 15 h), X cru since day 14 1h (3 d 23 h),
  // R3 ems since day 9 8h (8 d 16 h), H2 follow-up since day 0 13h (17 d 11 h).
  t.same(
    body.queues.map((q: { queue: string; waiting: number; oldestAgeSeconds: number | null }) => [q.queue, q.waiting, q.oldestAgeSeconds]),
    [
      ['police', 1, 9 * 86400 + 15 * 3600],
      ['cru', 1, 3 * 86400 + 23 * 3600],
      ['ems', 1, 8 * 86400 + 16 * 3600],
      ['case_management', 0, null],
      ['follow_up', 1, 17 * 86400 + 11 * 3600],
    ],
  )
  t.same(body.overdueFollowUps, { total: 1, byAgency: [{ agency: 'hastings-pd', overdue: 1 }] })
})

t.test('CSV: a value a spreadsheet would run as a formula is defused', async (t) => {
  // An agency name comes from CAD; one starting with "=" must not become a formula. Outside the hand-checked range.
  await world.db
    .insertInto('calls')
    .values({ call_id: 'CSV1', agency: '=1+1', status: 'open', nature_code: 'SUSP', priority: 3, flags: '{}', route: 'police', last_occurred_at: '2025-06-01T10:00:00Z', created_at: '2025-06-01T10:00:00Z' })
    .execute()
  const res = await world.app.inject({ url: `/v1/reports/summary?from=2025-06-01T00:00:00Z&to=2025-06-02T00:00:00Z&agency=${encodeURIComponent('=1+1')}`, headers: { accept: 'text/csv' } })
  t.equal(res.statusCode, 200)
  const lines = res.body.trimEnd().split('\r\n')
  t.ok(lines.some((l) => l.startsWith("'=1+1,all,1,")), 'the agency cell is prefixed with a quote')
  t.notOk(lines.some((l) => l.startsWith('=')), 'no line starts with =')
})

t.test('a fallback counts only when the rule itself fell back to police, not when police already led the call', async (t) => {
  // Both police-led calls whose decision carries a CRU fallback: in F1 the rule fell back to police;
  // in F2 it fell back to EMS, and the call stayed police's because police already led it.
  const at = '2025-07-01T10:00:00Z'
  for (const [id, ruleRoute] of [['F1', 'police'], ['F2', 'ems']] as const) {
    const decisionId = randomUUID()
    const eventId = `fallback-${id}-${randomUUID()}`
    await world.db
      .insertInto('calls')
      .values({ call_id: id, agency: 'fallback-pd', status: 'closed', nature_code: 'EDP', priority: 2, flags: JSON.stringify({ mentalHealth: true }), mental_health: true, route: 'police', last_occurred_at: at, created_at: at, closed_at: at })
      .execute()
    await world.db.insertInto('call_events').values({ event_id: eventId, call_id: id, type: 'call.created', occurred_at: at, received_at: at, body_hash: 'seed', body: '{}', applied: true }).execute()
    const outcome = { assignmentIds: [], ruleRoute, fallback: { fromRoute: 'cru', reason: 'CRU is outside its hours' }, override: null, review: [], followUp: null, trace: [], derived: {}, notes: [] }
    await world.db
      .insertInto('decisions')
      .values({ id: decisionId, call_id: id, event_id: eventId, route: 'police', rule_set_version: 1, rule_id: 'seed', explanation: 'seeded', facts: '{}', outcome: JSON.stringify(outcome), created_at: at })
      .execute()
  }
  const { overall } = await get('from=2025-07-01T00:00:00Z&to=2025-07-02T00:00:00Z&agency=fallback-pd')
  t.same(overall.capture, { eligible: 2, captured: 0, rate: 0, toPolice: { fallback: 1, override: 0, escalation: 0 }, otherRoute: 1 })
})

t.test('capture: a call DESIGN rule 1 governs is not eligible, whether a flag, its nature code or its rule says so', async (t) => {
  // Ingested as CAD sends them, routed by the default rule set (CRU always available). Each of the
  // first four is a principle-1 call: police lead by design, so none of them is a missed capture.
  const agency = 'rule1-pd'
  const post = async (natureCode: string, flags: EventInput['flags'], dispatcherOverride?: 'cru') => {
    const payload = callEvent({ agency, natureCode, flags, dispatcherOverride, occurredAt: new Date(NOW.getTime() - 60_000).toISOString() })
    const res = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload })
    if (res.statusCode !== 201) throw new Error(`ingest answered ${res.statusCode}: ${res.body}`)
    return res.json().decision as { route: string; ruleId: string }
  }
  const routes = [
    await post('ASSAULT', { mentalHealth: true }), // a violent nature code: the verifier's and escalation's safety fact
    await post('EDP', { violence: true }), // a safety flag
    await post('DVNA', { mentalHealth: true }), // in the default rule set's `safety`, not among the invariant codes: its rule's principle says so
    await post('ASSAULT', { mentalHealth: true }, 'cru'), // a dispatcher sent it to CRU; the rule overridden was a principle-1 rule
    await post('EDP', { mentalHealth: true }), // the one eligible call: CRU's
  ].map((d) => [d.route, d.ruleId])
  t.same(routes, [
    ['co_response', 'safety-mental-health-co-response'],
    ['co_response', 'safety-mental-health-co-response'],
    ['co_response', 'safety-mental-health-co-response'],
    ['cru', 'dispatcher-override'],
    ['cru', 'mental-health-cru'],
  ])

  // A decision another rule set made: a rule that is not a principle-1 rule fired on a code the
  // agency's map made ASSAULT. The code after the map is the fact, as escalation reads it.
  const at = new Date().toISOString()
  const { version } = await world.db.selectFrom('rule_sets').select('version').orderBy('version', 'desc').executeTakeFirstOrThrow()
  const decisionId = randomUUID()
  const eventId = `rule1-mapped-${randomUUID()}`
  await world.db
    .insertInto('calls')
    .values({ call_id: 'M1', agency, status: 'open', nature_code: 'X-ASLT', priority: 2, flags: JSON.stringify({ mentalHealth: true }), mental_health: true, route: 'co_response', last_occurred_at: at })
    .execute()
  await world.db.insertInto('call_events').values({ event_id: eventId, call_id: 'M1', type: 'call.created', occurred_at: at, received_at: at, body_hash: 'seed', body: '{}', applied: true }).execute()
  const outcome = { assignmentIds: [], ruleRoute: 'co_response', fallback: null, override: null, review: [], followUp: null, trace: [], derived: { natureCode: 'ASSAULT', unknownNatureCode: false, mentalHealthIndicator: true, frequentCaller: false }, notes: [] }
  await world.db
    .insertInto('decisions')
    .values({ id: decisionId, call_id: 'M1', event_id: eventId, route: 'co_response', rule_set_version: version, rule_id: 'co-response-requested', explanation: 'seeded', facts: JSON.stringify({ natureCode: 'X-ASLT', flags: { mentalHealth: true } }), outcome: JSON.stringify(outcome), created_at: at })
    .execute()
  await world.db.updateTable('calls').set({ decision_id: decisionId }).where('call_id', '=', 'M1').execute()

  const day = 86_400_000
  const { overall } = await get(`from=${new Date(Date.now() - day).toISOString()}&to=${new Date(Date.now() + day).toISOString()}&agency=${agency}`)
  t.equal(overall.mentalHealthCalls, 6)
  t.same(overall.capture, { eligible: 1, captured: 1, rate: 1, toPolice: { fallback: 0, override: 0, escalation: 0 }, otherRoute: 0 })
})

t.test('follow-ups: one declined and offered again is one follow-up, done on time or overdue by its chain', async (t) => {
  // Stored as escalation stores them (src/assignments/escalation.ts): a follow-up declined is offered
  // again as a new assignment, escalated_from the one declined, due when the first was due.
  const agency = 'chain-pd'
  const at = (day: number, hour: number) => new Date(Date.UTC(2025, 7, 1 + day, hour))
  interface Offer {
    createdAt: Date
    status: string
    moves: Array<{ to: string; at: Date }>
  }
  const followUp = async (callId: string, dueAt: Date, offers: Offer[]) => {
    const decisionId = randomUUID()
    const eventId = `chain-${callId}-${randomUUID()}`
    const closed = offers[0]!.createdAt
    await world.db
      .insertInto('calls')
      .values({ call_id: callId, agency, status: 'closed', nature_code: 'EDP', priority: 2, flags: JSON.stringify({ mentalHealth: true }), mental_health: true, route: 'cru', last_occurred_at: closed, created_at: closed, closed_at: closed })
      .execute()
    await world.db.insertInto('call_events').values({ event_id: eventId, call_id: callId, type: 'call.closed', occurred_at: closed, received_at: closed, body_hash: 'seed', body: '{}', applied: true }).execute()
    const outcome = { assignmentIds: [], fallback: null, override: null, review: [], followUp: null, trace: [], derived: { natureCode: 'EDP' }, notes: [] }
    await world.db
      .insertInto('decisions')
      .values({ id: decisionId, call_id: callId, event_id: eventId, route: 'cru', rule_set_version: 1, rule_id: 'seed', explanation: 'seeded', facts: '{}', outcome: JSON.stringify(outcome), created_at: closed })
      .execute()
    let before: string | null = null
    for (const o of offers) {
      const id = randomUUID()
      await world.db
        .insertInto('assignments')
        .values({ id, call_id: callId, decision_id: decisionId, agency, queue: 'follow_up', role: 'primary', status: o.status, due_at: dueAt, escalated_from: before, created_at: o.createdAt, updated_at: o.createdAt })
        .execute()
      let from: string | null = null
      for (const m of [{ to: 'queued', at: o.createdAt }, ...o.moves]) {
        await world.db.insertInto('assignment_transitions').values({ assignment_id: id, from_status: from, to_status: m.to, role: 'primary', actor: 'seed', reason: null, at: m.at }).execute()
        from = m.to
      }
      before = id
    }
  }
  // Declined twice, then done on time by its third offer, made after the range ends.
  await followUp('FU1', at(3, 10), [
    { createdAt: at(0, 10), status: 'declined', moves: [{ to: 'declined', at: at(0, 11) }] },
    { createdAt: at(0, 11), status: 'declined', moves: [{ to: 'declined', at: at(1, 9) }] },
    { createdAt: at(1, 9), status: 'completed', moves: [{ to: 'accepted', at: at(2, 9) }, { to: 'completed', at: at(2, 10) }] },
  ])
  // Declined, offered again after the range ends, and still open long past its due time: overdue.
  await followUp('FU2', at(3, 12), [
    { createdAt: at(0, 12), status: 'declined', moves: [{ to: 'declined', at: at(1, 13) }] },
    { createdAt: at(1, 13), status: 'queued', moves: [] },
  ])
  // Declined, offered again within the range, and done a day late.
  await followUp('FU3', at(3, 14), [
    { createdAt: at(0, 14), status: 'declined', moves: [{ to: 'declined', at: at(0, 15) }] },
    { createdAt: at(0, 15), status: 'completed', moves: [{ to: 'accepted', at: at(4, 9) }, { to: 'completed', at: at(4, 14) }] },
  ])
  const { overall, series } = await get(`from=2025-08-01T00:00:00Z&to=2025-08-02T00:00:00Z&agency=${agency}`)
  t.same(overall.followUps, { created: 3, completedOnTime: 1, overdue: 1 })
  t.same(series.map((c: { followUps: unknown }) => c.followUps), [{ created: 3, completedOnTime: 1, overdue: 1 }], 'placed on the day the first offer was made')
})
