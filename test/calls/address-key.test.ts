/**
 * The address key (src/calls/history.ts): prior calls at an address are counted by a hash of the
 * normalised address, so two spellings of one address must meet, and two addresses must not.
 */
import t from 'tap'
import { addressKey } from '../../src/calls/history.js'
import { sha256 } from '../../src/lib/canonical-json.js'

const key = (address: string, city?: string) => addressKey({ address, ...(city ? { city } : {}) })

/** The key as every call stored it until e46704c: keys of calls already on record. */
const storedKey = (address: string, city?: string) => sha256(`${address}|${city ?? ''}`.toLowerCase().replace(/[^a-z0-9|]+/g, ' ').trim())

t.test('an ASCII address keeps the key stored before: prior calls already on record still count', async (t) => {
  const addresses: Array<[string, string?]> = [
    ['1200 Main St', 'Hastings'],
    ['1200 N. Main St', 'West St. Paul'],
    ["14 O'Brien Ave", 'Apple Valley'],
    ['3300 Co Rd 42 W', 'Burnsville'],
    ['  7-11 Lot, 15050 Cedar Ave', 'Apple Valley  '],
    ['Apt 3, 875 Southview Blvd', 'South St. Paul'],
    ['1200 MAIN ST', 'HASTINGS'],
    ['2 Hwy 55'],
  ]
  t.same(
    addresses.filter(([a, c]) => key(a, c) !== storedKey(a, c)),
    [],
    'the same key for each',
  )
})

t.test('punctuation and spacing at either end of a part do not matter', async (t) => {
  t.equal(key('1200 Main St.', 'Hastings'), key('1200 Main St', 'Hastings'))
  t.equal(key('1200 Main St,', 'Hastings'), key('1200 Main St', 'Hastings'))
  t.equal(key('1200 Main St ', ' Hastings'), key('1200 Main St', 'Hastings'))
  t.equal(key('1200 Main St (rear)', 'Hastings'), key('1200 Main St rear', 'Hastings'))
  t.not(key('1200 Main St', 'Hastings'), key('1200 Main St', 'Rosemount'), 'the city is part of it')
  // The separator is ours: an address holding it cannot pass for another address and city.
  t.not(key('A|B', 'C'), key('A', 'B|C'))
})

t.test('an accent on a Latin letter written or left out is the same address', async (t) => {
  t.equal(key('1200 Peña Ave', 'Hastings'), key('1200 Pena Ave', 'Hastings'))
  t.equal(key('44 Café Ct', 'Apple Valley'), key('44 Cafe Ct', 'Apple Valley'))
  // Composed (é, one code point) or decomposed (e and a combining accent), as different systems send it.
  t.equal(key('44 Caf\u00e9 Ct'), key('44 Cafe\u0301 Ct'))
  t.equal(key('12 Lê Lợi'), key('12 Le Loi'))
  t.equal(key('9 İnönü St'), key('9 inonu st'))
  // Letters NFKD keeps whole, as ASCII spells them.
  t.equal(key('12 Hauptstraße'), key('12 Hauptstrasse'))
  t.equal(key('12 HAUPTSTRASSE'), key('12 hauptstraße'))
  t.equal(key('4 Øster Ave'), key('4 Oster Ave'))
  t.equal(key('7 Łódź Rd'), key('7 Lodz Rd'))
  t.equal(key('3 Ærø Ct'), key('3 Aero Ct'))
  t.equal(key('8 Œuvre Ln'), key('8 Oeuvre Ln'))
  t.equal(key('2 Đồng Khởi'), key('2 Dong Khoi'))
  t.equal(key('6 Iıkı St'), key('6 iiki st'), 'a dotless i')
})

t.test('compatibility forms are what they stand for, capitals included', async (t) => {
  t.equal(key('№ 5 Main St'), key('No 5 Main St'))
  t.equal(key('１２ Main St'), key('12 Main St'), 'full-width digits')
  t.equal(key('5 Oﬃce Park'), key('5 Office Park'), 'a ligature')
  t.equal(key('12½ Main St'), key('12 1/2 Main St'), 'a fraction is a number of its own')
  t.not(key('12½ Main St'), key('121 2 Main St'))
})

t.test('letters of other scripts are kept, marks included: two streets do not become one', async (t) => {
  t.not(key('12 улица Ленина', 'Hastings'), key('12 улица Пушкина', 'Hastings'))
  t.not(key('5 Мой пер'), key('5 Мои пер'), 'й is not и')
  t.not(key('3 किला रोड'), key('3 कला रोड'), 'a Devanagari vowel sign is part of the word')
  t.not(key('8 ガ通り'), key('8 カ通り'), 'a kana voicing mark is part of the letter')
  t.equal(key('5 Мой пер'), key('5 Мои\u0306 пер'), 'composed or decomposed, the same letter')
})

t.test('no address, no key', async (t) => {
  t.equal(addressKey(undefined), null)
  t.equal(addressKey({ city: 'Hastings' }), null)
})
