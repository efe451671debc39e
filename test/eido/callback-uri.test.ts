/**
 * The caller's phone comes from the `tel:` URI of the callback, whatever the case of its scheme
 * (RFC 3986 §3.1: schemes are case-insensitive), and only from a `tel:` URI. Its RFC 3966
 * parameters are not part of the number, but for an extension; a number the call cannot hold is
 * left out, and the incident is still taken.
 */
import t from 'tap'
import { eidoToCallEvent } from '../../src/eido/map-in.js'
import { eidoInSchema } from '../../src/eido/schemas.js'
import { eidoFixture } from './fixtures/index.js'

const phoneOf = (uris: string[]) => {
  const doc = eidoFixture<{ callbackComponent: { callBackInformationUri: string[] }[] }>('mental-health-crisis')
  doc.callbackComponent[0]!.callBackInformationUri = uris
  return eidoToCallEvent(eidoInSchema.parse(doc)).call.caller?.phone
}

t.test('the scheme of the callback URI is matched in any case', async (t) => {
  t.equal(phoneOf(['tel:+1-651-555-0142']), '+1-651-555-0142', 'lower case, as before')
  t.equal(phoneOf(['TEL:+1-651-555-0142']), '+1-651-555-0142', 'upper case: the same phone')
  t.equal(phoneOf(['sip:+16515550142@carrier.example', 'Tel:651-555-0142']), '651-555-0142', 'mixed case, after a SIP URI')
})

t.test('a URI of another scheme is no phone', async (t) => {
  t.equal(phoneOf(['sip:+16515550142@carrier.example']), undefined)
  t.equal(phoneOf(['telnet:651-555-0142']), undefined, 'a scheme that only begins with "tel" is another scheme')
})

t.test('RFC 3966 parameters are not part of the phone; an extension is kept', async (t) => {
  // A carrier's verification result made the URI longer than a phone may be: the incident was refused.
  t.equal(phoneOf(['tel:+16515550142;verstat=TN-Validation-Passed']), '+16515550142')
  t.equal(phoneOf(['tel:5550142;phone-context=+1-651']), '+16515550142', 'a global prefix as context: the global number, area code and all')
  t.equal(phoneOf(['tel:555-0142;ext=7;phone-context=+1(651)']), '+16515550142;ext=7', 'separators dropped, the extension kept')
  t.equal(phoneOf(['tel:5550142;phone-context=hastings.dakota.mn.us']), '5550142', 'a domain as context: the number as written')
  t.equal(phoneOf(['tel:-;phone-context=+1']), '-', 'no digit of its own: not made a number of the prefix alone')
  t.equal(phoneOf(['tel:+1-651-555-0142;EXT=12;verstat=No-TN-Validation']), '+1-651-555-0142;ext=12', 'an extension, in any case, after the number')
  t.equal(phoneOf([`tel:+1-651-555-0142;ext=${'9'.repeat(20)}`]), '+1-651-555-0142', 'an extension that does not fit: the number alone')
})

t.test('a callback number the call cannot hold is left out, and the incident is still taken', async (t) => {
  const doc = eidoFixture<{ callbackComponent: { callBackInformationUri: string[] }[] }>('mental-health-crisis')
  doc.callbackComponent[0]!.callBackInformationUri = [`tel:+${'1'.repeat(40)}`]
  const event = eidoToCallEvent(eidoInSchema.parse(doc))
  t.same(event.call.caller, { name: 'Marta Lindqvist' }, 'the caller, without a phone')
  t.equal(phoneOf(['tel:;verstat=TN-Validation-Passed']), undefined, 'no number at all')
  t.equal(phoneOf([`tel:+${'1'.repeat(40)}`, 'tel:651-555-0142']), '651-555-0142', 'the next tel: URI that has one')
})
