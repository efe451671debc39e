/**
 * CRU availability per agency beyond the clock: a capacity limit (open CRU assignments), a pilot
 * city's 20 hours a week, and schedules in time zones whose daylight time changes on other dates.
 */
import t from 'tap'
import { cruAvailability, cruCapacity, parseRuleSet } from '../../src/routing/index.js'
import { defaultDocument } from './fixtures/helpers.js'

const doc = defaultDocument()
const ruleSet = parseRuleSet({
  ...doc,
  cru: {
    '*': { schedule: 'always', maxOpenAssignments: 10 },
    'hastings-pd': { schedule: 'always', maxOpenAssignments: 2 },
    // A pilot city's embedded professional: 20 hours a week (Tue–Thu 12:00–18:00, Fri 14:00–16:00).
    'rosemount-pd': {
      schedule: [
        { days: ['tue', 'wed', 'thu'], from: '12:00', to: '18:00' },
        { days: ['fri'], from: '14:00', to: '16:00' },
      ],
      maxOpenAssignments: 1,
    },
    'berlin-pd': { schedule: [{ days: ['sun'], from: '09:00', to: '10:00' }], timeZone: 'Europe/Berlin' },
    'honolulu-pd': { schedule: [{ days: ['mon'], from: '08:00', to: '09:00' }], timeZone: 'Pacific/Honolulu' },
    'no-cru-pd': { schedule: 'always', maxOpenAssignments: 0 },
  },
})
const at = (iso: string) => new Date(iso)

t.test('capacity: with the limit reached CRU takes no new call, and says why', async (t) => {
  const now = at('2026-03-10T18:00:00Z')
  t.ok(cruAvailability(ruleSet, 'hastings-pd', now, 0).available)
  t.ok(cruAvailability(ruleSet, 'hastings-pd', now, 1).available, 'one open: a second fits')
  t.same(cruAvailability(ruleSet, 'hastings-pd', now, 2), { available: false, reason: 'CRU at capacity for hastings-pd (2 open CRU assignments, limit 2)' })
  t.notOk(cruAvailability(ruleSet, 'hastings-pd', now, 7).available)
  t.ok(cruAvailability(ruleSet, 'hastings-pd', now).available, 'no count given: the schedule alone decides')
  t.same(cruAvailability(ruleSet, 'no-cru-pd', now, 0), { available: false, reason: 'CRU at capacity for no-cru-pd (0 open CRU assignments, limit 0)' })
  t.match(cruAvailability(ruleSet, 'apple-valley-pd', now, 10).reason, /^CRU at capacity for the county CRU line \(10 open CRU assignments, limit 10\)$/)
})

t.test('capacity: which assignments count', async (t) => {
  t.same(cruCapacity(ruleSet, 'hastings-pd'), { limit: 2, agencies: ['hastings-pd'], except: false })
  t.same(cruCapacity(ruleSet, 'apple-valley-pd'), { limit: 10, agencies: ['hastings-pd', 'rosemount-pd', 'berlin-pd', 'honolulu-pd', 'no-cru-pd'], except: true }, 'the county line: every agency without its own team')
  t.equal(cruCapacity(ruleSet, 'berlin-pd'), null, 'no limit')
  t.equal(cruCapacity(parseRuleSet(doc), 'hastings-pd'), null, 'the shipped rule set has no limits')
})

t.test('hours come before capacity: outside the hours the reason is the hours', async (t) => {
  t.match(cruAvailability(ruleSet, 'rosemount-pd', at('2026-03-09T18:00:00Z'), 5).reason, /^outside CRU hours for rosemount-pd \(Tue–Thu 12:00–18:00; Fri 14:00–16:00 America\/Chicago\)$/)
  t.match(cruAvailability(ruleSet, 'rosemount-pd', at('2026-03-10T18:00:00Z'), 1).reason, /^CRU at capacity for rosemount-pd/, 'Tue 13:00 CDT, one open')
  t.ok(cruAvailability(ruleSet, 'rosemount-pd', at('2026-03-10T18:00:00Z'), 0).available)
})

t.test('a pilot city’s 20 hours a week, counted minute by minute across a DST change', async (t) => {
  // The week of 2026-03-02 to 03-09 in Chicago local time; the clocks change on Sunday 03-08.
  let minutes = 0
  for (let ms = Date.UTC(2026, 2, 2, 6); ms < Date.UTC(2026, 2, 9, 5); ms += 60_000) {
    if (cruAvailability(ruleSet, 'rosemount-pd', new Date(ms)).available) minutes++
  }
  t.equal(minutes, 20 * 60)
})

t.test('other time zones change to daylight time on their own dates', async (t) => {
  // Europe/Berlin: CET (UTC+1) until 2026-03-29, CEST (UTC+2) after; Chicago changed on 03-08.
  t.ok(cruAvailability(ruleSet, 'berlin-pd', at('2026-03-22T08:30:00Z')).available, 'Sun 09:30 CET')
  t.notOk(cruAvailability(ruleSet, 'berlin-pd', at('2026-03-29T08:30:00Z')).available, 'Sun 10:30 CEST: closed')
  t.ok(cruAvailability(ruleSet, 'berlin-pd', at('2026-03-29T07:30:00Z')).available, 'Sun 09:30 CEST')
  t.match(cruAvailability(ruleSet, 'berlin-pd', at('2026-03-29T08:30:00Z')).reason, /Europe\/Berlin\)$/)
  // Pacific/Honolulu keeps UTC−10 all year.
  t.ok(cruAvailability(ruleSet, 'honolulu-pd', at('2026-01-05T18:30:00Z')).available, 'Mon 08:30 HST in winter')
  t.ok(cruAvailability(ruleSet, 'honolulu-pd', at('2026-07-06T18:30:00Z')).available, 'Mon 08:30 HST in summer, same UTC hour')
  t.notOk(cruAvailability(ruleSet, 'honolulu-pd', at('2026-07-06T19:30:00Z')).available)
})

t.test('a negative or fractional capacity is refused by the schema', async (t) => {
  for (const maxOpenAssignments of [-1, 1.5, '3']) {
    t.throws(() => parseRuleSet({ ...doc, cru: { '*': { schedule: 'always', maxOpenAssignments } } }), String(maxOpenAssignments))
  }
})
