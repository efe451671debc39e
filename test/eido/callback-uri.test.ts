/**
 * The caller's phone comes from the `tel:` URI of the callback, whatever the case of its scheme
 * (RFC 3986 §3.1: schemes are case-insensitive), and only from a `tel:` URI.
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
