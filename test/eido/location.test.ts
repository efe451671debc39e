/**
 * The location of an EIDO's PIDF-LO: the parts of a civic address inside the building (RFC 5139
 * BLD, FLR, UNIT, ROOM, SEAT; not LOC, free text) are part of the address a team is sent to, and a location given
 * as an RFC 5491 shape other than a point still gives the call a point.
 */
import t from 'tap'
import { addressKey } from '../../src/calls/history.js'
import { eidoToCallEvent } from '../../src/eido/map-in.js'
import { readPidfLo, writePidfLo } from '../../src/eido/pidf-lo.js'
import { eidoInSchema } from '../../src/eido/schemas.js'
import { eidoFixture } from './fixtures/index.js'

type Locations = { locationComponent: { locationByValue: string; locationDescriptionText?: string }[] }

const civic = (parts: string) =>
  `<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"><tuple id="t"><status><gp:geopriv><gp:location-info><ca:civicAddress><ca:country>US</ca:country><ca:A3>Hastings</ca:A3>${parts}</ca:civicAddress></gp:location-info></gp:geopriv></status></tuple></presence>`
const STREET = '<ca:HNO>1200</ca:HNO><ca:RD>Vermillion</ca:RD><ca:STS>St</ca:STS>'

/** The call's location when the incident's PIDF-LO is `xml` (and its description `description`). */
const located = (xml: string, description?: string) => {
  const doc = eidoFixture<Locations>('mental-health-crisis')
  doc.locationComponent[0]!.locationByValue = xml
  if (description !== undefined) doc.locationComponent[0]!.locationDescriptionText = description
  return eidoToCallEvent(eidoInSchema.parse(doc)).call.location
}

t.test('the unit, floor, building and room follow the street, from the largest to the smallest; LOC does not', async (t) => {
  t.same(located(civic(`${STREET}<ca:UNIT>312</ca:UNIT><ca:FLR>3</ca:FLR>`)), { address: '1200 Vermillion St, Floor 3, Unit 312', city: 'Hastings' })
  t.same(located(civic(`${STREET}<ca:LOC>rear entrance</ca:LOC><ca:ROOM>4B</ca:ROOM><ca:BLD>C</ca:BLD><ca:SEAT>WS 18</ca:SEAT>`)), {
    address: '1200 Vermillion St, Bldg C, Room 4B, WS 18',
    city: 'Hastings',
  }, 'a value with words of its own is written as it is; LOC, free text that changes from call to call, would split the address key')
  t.same(located(civic(`${STREET}<ca:UNIT>Apt 312</ca:UNIT><ca:NAM>Jonas Ekdahl</ca:NAM>`)), { address: '1200 Vermillion St, Apt 312', city: 'Hastings' }, 'NAM, the occupant, is not where to go')
  t.same(located(civic('<ca:UNIT>312</ca:UNIT>'), 'Behind the library'), { address: 'Behind the library, Unit 312', city: 'Hastings' }, 'without a street, after the description that stands in for it')
  t.same(located(civic('<ca:UNIT>312</ca:UNIT>'), '   '), { city: 'Hastings' }, 'a description of blanks is none')
  t.same(located(civic('<ca:UNIT>312</ca:UNIT>')), { city: 'Hastings' }, 'alone, without either, no address: "Unit 312, Hastings" would be every building’s (the address key)')
})

t.test('what the service writes keeps the parts inside the building, and reads back', async (t) => {
  const loc = { address: '1200 Vermillion St, Bldg C, Floor 3, Unit 312', city: 'Hastings', lat: 44.73, lon: -92.85 }
  const xml = writePidfLo('DC26-1', loc)
  t.match(xml, /<ca:HNO>1200<\/ca:HNO><ca:RD>Vermillion St<\/ca:RD><ca:BLD>C<\/ca:BLD><ca:FLR>3<\/ca:FLR><ca:UNIT>312<\/ca:UNIT>/)
  t.same(readPidfLo(xml), loc)
  for (const address of ['1200 Vermillion St, Unit 312, Floor 3', '1200 Vermillion St, Unit 3 B', 'Unit 312', '1200 Vermillion St, Apt 312, rear']) {
    t.same(readPidfLo(writePidfLo('DC26-1', { address })), { address }, `${address}: as written`)
  }
})

t.test('the unit is part of the address key: two flats of one building are two addresses', async (t) => {
  // Prior calls at an address are those of the household, not of every flat in the building.
  const unit312 = located(civic(`${STREET}<ca:UNIT>312</ca:UNIT>`))
  const unit214 = located(civic(`${STREET}<ca:UNIT>214</ca:UNIT>`))
  t.not(addressKey(unit312), addressKey(unit214))
  t.equal(addressKey(unit312), addressKey({ address: '1200 Vermillion St Unit 312', city: 'Hastings' }), 'the same flat as a CAD writes it natively')
})

const geodetic = (shape: string) =>
  `<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0"><tuple id="t"><status><gp:geopriv><gp:location-info>${shape}</gp:location-info></gp:geopriv></status></tuple></presence>`
const ring = (positions: string) => `<gml:exterior><gml:LinearRing>${positions}</gml:LinearRing></gml:exterior>`
// A square around 44.73 -92.85, closed (its first corner again at the end), as RFC 5491 writes one.
const CORNERS = ['44.70 -92.90', '44.70 -92.80', '44.76 -92.80', '44.76 -92.90', '44.70 -92.90']

t.test('a polygon gives its centroid: the mean of its exterior ring’s corners', async (t) => {
  const asPosList = `<gml:Polygon srsName="urn:ogc:def:crs:EPSG::4326">${ring(`<gml:posList>${CORNERS.join(' ')}</gml:posList>`)}</gml:Polygon>`
  t.same(readPidfLo(geodetic(asPosList)), { lat: 44.73, lon: -92.85 }, 'a gml:posList')
  const hole = '<gml:interior><gml:LinearRing><gml:pos>44.71 -92.89</gml:pos><gml:pos>44.71 -92.88</gml:pos><gml:pos>44.72 -92.88</gml:pos></gml:LinearRing></gml:interior>'
  const asPos = `<gml:Polygon srsName="urn:ogc:def:crs:EPSG::4326">${ring(CORNERS.map((c) => `<gml:pos>${c}</gml:pos>`).join(''))}${hole}</gml:Polygon>`
  t.same(readPidfLo(geodetic(asPos)), { lat: 44.73, lon: -92.85 }, 'a gml:pos each, a hole left out')
  const prism = `<gs:Prism srsName="urn:ogc:def:crs:EPSG::4979"><gs:base><gml:Polygon>${ring(`<gml:posList>${CORNERS.map((c) => `${c} 240`).join(' ')}</gml:posList>`)}</gml:Polygon></gs:base><gs:height uom="urn:ogc:def:uom:EPSG::9001">6</gs:height></gs:Prism>`
  t.same(readPidfLo(geodetic(prism)), { lat: 44.73, lon: -92.85 }, 'a prism: its base, an altitude in each position')
  t.same(located(geodetic(asPosList)), { lat: 44.73, lon: -92.85 }, 'and the call has it')
  const threeD = (attributes: string) => geodetic(`<gml:Polygon ${attributes}>${ring(`<gml:posList>${CORNERS.map((c) => `${c} 240`).join(' ')}</gml:posList>`)}</gml:Polygon>`)
  t.same(readPidfLo(threeD(`srsName='urn:ogc:def:crs:EPSG::4979'`)), { lat: 44.73, lon: -92.85 }, 'a 3D CRS named in single quotes')
  t.same(readPidfLo(threeD(`srsName='urn:ogc:def:crs:EPSG::4326' srsDimension='3'`)), { lat: 44.73, lon: -92.85 }, 'srsDimension in single quotes')
})

t.test('a circle, an ellipse or an arc band gives its center', async (t) => {
  const center = '<gml:pos>44.73 -92.85</gml:pos>'
  t.same(readPidfLo(geodetic(`<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">${center}<gs:radius uom="urn:ogc:def:uom:EPSG::9001">850</gs:radius></gs:Circle>`)), { lat: 44.73, lon: -92.85 })
  t.same(readPidfLo(geodetic(`<gs:Ellipse srsName="urn:ogc:def:crs:EPSG::4326">${center}<gs:semiMajorAxis uom="urn:ogc:def:uom:EPSG::9001">120</gs:semiMajorAxis></gs:Ellipse>`)), { lat: 44.73, lon: -92.85 })
  t.same(readPidfLo(geodetic(`<gs:ArcBand srsName="urn:ogc:def:crs:EPSG::4326">${center}<gs:innerRadius uom="urn:ogc:def:uom:EPSG::9001">10</gs:innerRadius></gs:ArcBand>`)), { lat: 44.73, lon: -92.85 })
})

t.test('a polygon whose positions are not "latitude longitude" is refused, naming the location', async (t) => {
  const broken = `<gml:Polygon srsName="urn:ogc:def:crs:EPSG::4326">${ring('<gml:posList>44.70 -92.90 44.70</gml:posList>')}</gml:Polygon>`
  t.same(readPidfLo(geodetic(broken)), { badPoint: true })
  t.same(readPidfLo(geodetic('<gml:Polygon srsName="urn:ogc:def:crs:EPSG::4326"/>')), {}, 'one with no positions at all is no point, as an empty gml:pos is')
  const later = '<gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>44.73 -92.85</gml:pos></gml:Point>'
  const emptyThenPoint = `<gml:Polygon srsName="urn:ogc:def:crs:EPSG::4326"/></gp:location-info></gp:geopriv></status></tuple><tuple id="u"><status><gp:geopriv><gp:location-info>${later}`
  t.same(readPidfLo(geodetic(emptyThenPoint)), { lat: 44.73, lon: -92.85 }, 'an empty polygon ends at its tag, and the later shape is the point')
  t.same(readPidfLo(geodetic(`<gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos> </gml:pos></gml:Point>${later}`)), { lat: 44.73, lon: -92.85 }, 'so is a point after one with a blank position')
  t.same(readPidfLo(geodetic(`${'<gml:Point/>'.repeat(8)}${later}`)), {}, 'only the first eight shapes are looked at')
  const many = geodetic(`${'<gml:Point>'.repeat(100_000)}`)
  const started = performance.now()
  t.same(readPidfLo(many), {}, 'a document of unclosed shapes has no point')
  t.ok(performance.now() - started < 5000, 'and is read without a pass of the whole text per shape (minutes, without the bound)')
  t.throws(() => located(geodetic(broken)), { code: 'validation-failed', invalidParams: [{ name: 'locationComponent.0.locationByValue' }] })
})
