/**
 * The address key (src/calls/history.ts): prior calls at an address are counted by a hash of the
 * normalised address, so two spellings of one address must meet, and two addresses must not.
 */
import t from 'tap'
import { addressKey } from '../../src/calls/history.js'
import { sha256 } from '../../src/lib/canonical-json.js'

const key = (address: string, city?: string) => addressKey({ address, ...(city ? { city } : {}) })

t.test('case, punctuation and spacing do not matter', async (t) => {
  t.equal(key('1200 MAIN ST.', 'Hastings'), key('1200 main st', 'hastings'))
  t.equal(key('  1200  Main-St ', 'Hastings '), key('1200 main st', 'Hastings'))
  t.equal(key('1200 Main St', ' Hastings'), key('1200 Main St', 'Hastings'))
  t.not(key('1200 Main St', 'Hastings'), key('1200 Main St', 'Rosemount'), 'the city is part of it')
})

t.test('an ASCII address keeps the key stored before: prior calls already on record still count', async (t) => {
  t.equal(key('1200 Main St', 'Hastings'), sha256('1200 main st|hastings'))
  t.equal(key('1200 N. Main St', 'West St. Paul'), sha256('1200 n main st|west st paul'))
})

t.test('an accent written or left out is the same address', async (t) => {
  t.equal(key('1200 Peña Ave', 'Hastings'), key('1200 Pena Ave', 'Hastings'))
  t.equal(key('44 Café Ct', 'Apple Valley'), key('44 Cafe Ct', 'Apple Valley'))
  // Composed (é, one code point) or decomposed (e and a combining accent), as different systems send it.
  t.equal(key('44 Caf\u00e9 Ct'), key('44 Cafe\u0301 Ct'))
})

t.test('letters outside ASCII are kept: two streets do not become one', async (t) => {
  t.not(key('12 улица Ленина', 'Hastings'), key('12 улица Пушкина', 'Hastings'))
  t.not(key('12 Đồng Khởi', 'Hastings'), key('12 Lê Lợi', 'Hastings'))
  t.not(key('7 Øster St'), key('7 ster St'))
})

t.test('no address, no key', async (t) => {
  t.equal(addressKey(undefined), null)
  t.equal(addressKey({ city: 'Hastings' }), null)
})
