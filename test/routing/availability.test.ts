/**
 * CRU schedules: weekly windows in a time zone, evaluated at an instant. America/Chicago changed
 * to daylight time on 2026-03-08 (02:00 → 03:00) and back on 2026-11-01 (02:00 → 01:00).
 */
import t from 'tap'
import { cruAvailability, describeDays, localTime, loadDefaultRuleSet, parseRuleSet } from '../../src/routing/index.js'
import { defaultDocument } from './fixtures/helpers.js'

const weekdays = ['mon', 'tue', 'wed', 'thu', 'fri'] as const
const doc = defaultDocument()
const cru = {
  ...doc.cru,
  'dst-start-pd': { schedule: [{ days: ['sun'], from: '01:00', to: '03:30' }] },
  'dst-end-pd': { schedule: [{ days: ['sun'], from: '01:00', to: '02:00' }] },
  'weekend-pd': { schedule: [{ days: ['sat', 'sun'], from: '18:00', to: '23:00' }] },
  'night-pd': { schedule: [{ days: ['fri'], from: '20:00', to: '02:00' }] },
  'all-day-pd': { schedule: [{ days: ['mon'], from: '00:00', to: '24:00' }] },
  'two-windows-pd': { schedule: [{ days: [...weekdays], from: '08:00', to: '18:00' }, { days: ['sat', 'sun'], from: '10:00', to: '14:00' }] },
  'never-pd': { schedule: [] },
  'ny-pd': { schedule: [{ days: [...weekdays], from: '08:00', to: '18:00' }], timeZone: 'America/New_York' },
}
const ruleSet = parseRuleSet({ ...doc, cru })
const at = (iso: string) => new Date(iso)
const open = (agency: string, iso: string) => cruAvailability(ruleSet, agency, at(iso)).available

t.test('the default rule set: the county CRU line is 24/7 for every agency', async (t) => {
  const rs = loadDefaultRuleSet()
  for (const agency of ['hastings-pd', 'rosemount-pd', 'dakota-so', 'nowhere']) {
    for (const iso of ['2026-03-08T08:30:00Z', '2026-11-01T07:30:00Z', '2026-07-04T03:00:00Z', '2026-12-25T23:59:59Z']) {
      t.same(cruAvailability(rs, agency, at(iso)), { available: true, reason: null }, `${agency} at ${iso}`)
    }
  }
})

t.test('weekday hours in winter and summer time', async (t) => {
  t.notOk(open('example-city-pd', '2026-03-02T13:00:00Z'), 'Mon 07:00 CST: not yet open')
  t.ok(open('example-city-pd', '2026-03-02T14:00:00Z'), 'Mon 08:00 CST: open')
  t.ok(open('example-city-pd', '2026-03-09T13:00:00Z'), 'Mon 08:00 CDT: open (the same UTC hour was closed a week earlier)')
  t.notOk(open('example-city-pd', '2026-03-09T12:59:00Z'), 'Mon 07:59 CDT: closed')
  t.ok(open('example-city-pd', '2026-03-13T22:59:00Z'), 'Fri 17:59 CDT: open')
  t.notOk(open('example-city-pd', '2026-03-13T23:00:00Z'), 'Fri 18:00 CDT: closed (the end is exclusive)')
  t.notOk(open('example-city-pd', '2026-03-14T17:00:00Z'), 'Sat noon: closed')
  t.ok(open('example-city-pd', '2026-11-02T14:00:00Z'), 'Mon 08:00 CST after the change back: open')
  t.notOk(open('example-city-pd', '2026-11-02T13:00:00Z'), 'Mon 07:00 CST: closed')
})

t.test('the local weekday, not the UTC one', async (t) => {
  t.ok(open('weekend-pd', '2026-03-09T01:00:00Z'), 'Monday 01:00 UTC is Sunday 20:00 in Chicago')
  t.notOk(open('weekend-pd', '2026-03-07T01:00:00Z'), 'Saturday 01:00 UTC is Friday 19:00 in Chicago')
})

t.test('the day daylight time starts (02:00 jumps to 03:00)', async (t) => {
  t.notOk(open('dst-start-pd', '2026-03-08T06:59:00Z'), '00:59 CST')
  t.ok(open('dst-start-pd', '2026-03-08T07:59:00Z'), '01:59 CST')
  t.ok(open('dst-start-pd', '2026-03-08T08:00:00Z'), 'one minute later it is 03:00 CDT')
  t.ok(open('dst-start-pd', '2026-03-08T08:29:00Z'), '03:29 CDT')
  t.notOk(open('dst-start-pd', '2026-03-08T08:30:00Z'), '03:30 CDT')
})

t.test('the day daylight time ends (01:00–02:00 happens twice)', async (t) => {
  t.notOk(open('dst-end-pd', '2026-11-01T05:59:00Z'), '00:59 CDT')
  t.ok(open('dst-end-pd', '2026-11-01T06:30:00Z'), 'the first 01:30 (CDT)')
  t.ok(open('dst-end-pd', '2026-11-01T07:30:00Z'), 'the second 01:30 (CST)')
  t.notOk(open('dst-end-pd', '2026-11-01T08:00:00Z'), '02:00 CST')
})

t.test('a window past midnight belongs to the day it starts', async (t) => {
  t.ok(open('night-pd', '2026-03-14T02:00:00Z'), 'Fri 21:00')
  t.ok(open('night-pd', '2026-03-14T06:00:00Z'), 'Sat 01:00, still Friday night')
  t.notOk(open('night-pd', '2026-03-14T07:00:00Z'), 'Sat 02:00: over')
  t.notOk(open('night-pd', '2026-03-13T06:00:00Z'), 'Fri 01:00 is Thursday night: closed')
  t.notOk(open('night-pd', '2026-03-13T02:00:00Z'), 'Thu 21:00: closed')
})

t.test('24:00 ends a window at midnight', async (t) => {
  t.ok(open('all-day-pd', '2026-03-09T05:00:00Z'), 'Mon 00:00 CDT')
  t.ok(open('all-day-pd', '2026-03-10T04:59:00Z'), 'Mon 23:59 CDT')
  t.notOk(open('all-day-pd', '2026-03-10T05:00:00Z'), 'Tue 00:00 CDT')
})

t.test("an entry's own time zone, and the rule set's", async (t) => {
  t.ok(open('ny-pd', '2026-03-09T12:30:00Z'), 'Mon 08:30 in New York (07:30 in Chicago)')
  t.notOk(open('ny-pd', '2026-03-09T22:30:00Z'), 'Mon 18:30 in New York')
  const denver = parseRuleSet({ ...doc, cru, timeZone: 'America/Denver' })
  t.notOk(cruAvailability(denver, 'example-city-pd', at('2026-03-09T13:30:00Z')).available, '07:30 in Denver')
  t.match(cruAvailability(denver, 'example-city-pd', at('2026-03-09T13:30:00Z')).reason, /America\/Denver\)$/)
})

t.test('the reason names the agency and its hours', async (t) => {
  t.same(cruAvailability(ruleSet, 'example-city-pd', at('2026-03-14T17:00:00Z')), {
    available: false,
    reason: 'outside CRU hours for example-city-pd (Mon–Fri 08:00–18:00 America/Chicago)',
  })
  t.equal(
    cruAvailability(ruleSet, 'two-windows-pd', at('2026-03-14T22:00:00Z')).reason,
    'outside CRU hours for two-windows-pd (Mon–Fri 08:00–18:00; Sat–Sun 10:00–14:00 America/Chicago)',
  )
  t.equal(cruAvailability(ruleSet, 'never-pd', at('2026-03-14T22:00:00Z')).reason, 'outside CRU hours for never-pd (no CRU hours, America/Chicago)')
})

t.test('an agency without its own entry uses "*"', async (t) => {
  const limited = parseRuleSet({ ...doc, cru: { '*': { schedule: [{ days: [...weekdays], from: '09:00', to: '17:00' }] } } })
  t.same(cruAvailability(limited, 'rosemount-pd', at('2026-03-14T17:00:00Z')), {
    available: false,
    reason: 'outside CRU hours for rosemount-pd (Mon–Fri 09:00–17:00 America/Chicago)',
  })
  t.ok(cruAvailability(limited, 'rosemount-pd', at('2026-03-13T17:00:00Z')).available, 'Fri noon')
  t.ok(cruAvailability(ruleSet, 'rosemount-pd', at('2026-03-14T17:00:00Z')).available, 'the default "*" is always')
})

t.test('the same question gets the same answer', async (t) => {
  const a = cruAvailability(ruleSet, 'example-city-pd', at('2026-03-14T17:00:00Z'))
  const b = cruAvailability(ruleSet, 'example-city-pd', at('2026-03-14T17:00:00Z'))
  t.same(a, b)
})

t.test('describeDays and localTime', async (t) => {
  t.equal(describeDays(['mon', 'tue', 'wed', 'thu', 'fri']), 'Mon–Fri')
  t.equal(describeDays(['sun', 'sat']), 'Sat–Sun')
  t.equal(describeDays(['mon', 'wed', 'thu', 'fri', 'sun']), 'Mon, Wed–Fri, Sun')
  t.equal(describeDays(['tue']), 'Tue')
  t.same(localTime(at('2026-03-09T01:00:00Z'), 'America/Chicago'), { day: 6, minute: 20 * 60 })
  t.same(localTime(at('2026-03-09T05:00:00Z'), 'America/Chicago'), { day: 0, minute: 0 }, 'midnight is 00:00, not 24:00')
  t.same(localTime(at('2026-11-01T07:30:00Z'), 'America/Chicago'), { day: 6, minute: 90 })
})
