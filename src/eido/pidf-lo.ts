/**
 * Just enough PIDF-LO (RFC 4119 / RFC 5139 civic address, RFC 5491 shapes) to carry the service's
 * location: the civic address elements and a geodetic point, read by element name whatever the
 * namespace prefix.
 */
import { xmlText } from './text.js'

export interface PlainLocation {
  address?: string
  city?: string
  lat?: number
  lon?: number
}

const encode = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/** Any namespace prefix, or none: elements are read by name, whatever a document calls the namespace. */
const PREFIX = '(?:[A-Za-z_][\\w.-]*:)?'

/**
 * A `name` element that holds text only, the text its first group. Attributes stop at the next `<`
 * as well as at `>`: a tag left open must not send every later attempt to the end of the text (a
 * crafted location took 80 ms an element, quadratic in its length).
 */
const textElement = (name: string, flags?: string): RegExp => new RegExp(`<${PREFIX}${name}(?:\\s[^<>]*)?>([^<]*)</${PREFIX}${name}>`, flags)

function element(xml: string, name: string): string | undefined {
  const m = textElement(name).exec(xml)
  const v = m?.[1] === undefined ? undefined : xmlText(m[1])
  return v ? v : undefined
}

/**
 * The civic street address elements, in the order they are written on an envelope (NENA CLDXF):
 * house number prefix, number and suffix; the street name's pre-modifier, pre-directional and
 * pre-type, the name, its post-type, post-directional and post-modifier. Each part names the road:
 * without PRM and STP, "Old Highway 61" read as "61". HNP and STP are RFC 6848's, the rest RFC 5139's.
 */
const STREET = ['HNP', 'HNO', 'HNS', 'PRM', 'PRD', 'STP', 'RD', 'STS', 'POD', 'POM'] as const

/**
 * The parts of the address inside the building (RFC 5139), from the largest to the smallest, each
 * with the word written before a bare value: UNIT `312` is "Unit 312", UNIT `Apt 312` is itself.
 * NAM is left out: it names the occupant, often a person, not where to go. So is LOC, free text
 * ("rear entrance") that changes from call to call: in the address it would split the address key,
 * and with it the count of prior calls at the address.
 */
const SUB_ADDRESS = [
  ['BLD', 'Bldg'],
  ['FLR', 'Floor'],
  ['UNIT', 'Unit'],
  ['ROOM', 'Room'],
  ['SEAT', 'Seat'],
] as const

export type ReadLocation = PlainLocation & { badPoint?: boolean; subAddress?: string }

/**
 * The location of a PIDF-LO. The address is the street, then the parts inside the building, comma
 * separated ("1200 Vermillion St, Floor 3, Unit 312"). Without a street those parts are `subAddress`,
 * for the caller to put after whatever stands in for the street.
 */
export function readPidfLo(xml: string): ReadLocation {
  const out: ReadLocation = {}
  const street = STREET.map((e) => element(xml, e)).filter((v): v is string => v !== undefined)
  const sub = SUB_ADDRESS.map(([e, word]) => {
    const v = element(xml, e)
    return v === undefined ? undefined : /\s/.test(v) ? v : `${word} ${v}`
  })
  const inside = sub.filter((v): v is string => v !== undefined)
  if (street.length) out.address = [street.join(' '), ...inside].join(', ')
  else if (inside.length) out.subAddress = inside.join(', ')
  const city = element(xml, 'A3')
  if (city) out.city = city
  const point = pointOf(xml)
  if (point === 'bad') out.badPoint = true
  else if (point) Object.assign(out, point)
  return out
}

/** RFC 5491's shapes: a point; a circle, ellipse, arc band, sphere or ellipsoid, each around its center (a gml:pos); a polygon, or a prism on one. */
const SHAPE = new RegExp(`<${PREFIX}(Point|Circle|Ellipse|ArcBand|Sphere|Ellipsoid|Polygon|Prism)(?=[\\s/>])`, 'g')
const POS = textElement('pos', 'g')
const MAX_SHAPES = 8

/** The text of the first `name` element from `from` on, to its end tag (or the end of the text). */
function elementAt(xml: string, name: string, from = 0): string | undefined {
  const open = new RegExp(`<${PREFIX}${name}(?=[\\s/>])`).exec(xml.slice(from))
  if (!open) return undefined
  const start = from + open.index
  // An empty element (`<gml:Polygon/>`) ends with its tag, not at the next element's end.
  const tagEnd = xml.indexOf('>', start)
  if (xml[tagEnd - 1] === '/') return xml.slice(start, tagEnd + 1)
  const close = new RegExp(`</${PREFIX}${name}>`).exec(xml.slice(start))
  return xml.slice(start, close ? start + close.index : undefined)
}

/** Numbers of a position: 2 (latitude longitude) or 3 (and an altitude). */
const coordinates = (text: string): number[] => text.trim().split(/\s+/).map(Number)

/**
 * The point of the first shape that has one: itself, the center of a shape around one, or the
 * centroid of a polygon as the mean of its exterior ring's corners (the closing corner, a repeat of
 * the first, counted once). That mean is the centroid for the small polygons a location is given
 * as, not for a county-sized or lopsided one; a prism's base is its polygon, with an altitude in
 * each position. An empty shape (`<gml:Point/>`) is passed over: a later tuple may hold the place.
 * 'bad' when a position is not "latitude longitude"; undefined when there is none.
 */
function pointOf(xml: string): { lat: number; lon: number } | 'bad' | undefined {
  let shapes = 0
  for (const shape of xml.matchAll(SHAPE)) {
    // Each look reads on to the shape's end tag: a document of empty shapes must not cost a pass
    // of the whole text each. A real location holds one or two.
    if (++shapes > MAX_SHAPES) break
    const point = pointOfShape(elementAt(xml, shape[1]!, shape.index)!, shape[1]!)
    if (point !== undefined) return point
  }
  return shapes ? undefined : positionOf(xml)
}

/** The one gml:pos of `xml` as a point. */
function positionOf(xml: string): { lat: number; lon: number } | 'bad' | undefined {
  const pos = element(xml, 'pos')
  if (!pos) return undefined
  const [lat, lon, ...rest] = coordinates(pos)
  return lat === undefined || lon === undefined || rest.length > 1 || !Number.isFinite(lat) || !Number.isFinite(lon) ? 'bad' : { lat, lon }
}

function pointOfShape(shape: string, kind: string): { lat: number; lon: number } | 'bad' | undefined {
  if (kind !== 'Polygon' && kind !== 'Prism') return positionOf(shape)
  const ring = elementAt(shape, 'exterior') ?? shape
  let corners: number[][]
  const posList = element(ring, 'posList')
  if (posList !== undefined) {
    // srsDimension says how many numbers make a position; else the CRS does (EPSG 4979 is 3D).
    // Attribute values in either quote, as XML allows.
    const dimension = Number(/\ssrsDimension=["'](\d)["']/.exec(shape)?.[1] ?? (kind === 'Prism' || /\ssrsName=["'][^"']*4979["']/.test(shape) ? 3 : 2))
    const numbers = coordinates(posList)
    if (dimension < 2 || numbers.length % dimension) return 'bad'
    corners = Array.from({ length: numbers.length / dimension }, (_, i) => numbers.slice(i * dimension, i * dimension + dimension))
  } else {
    corners = [...ring.matchAll(POS)].map((m) => coordinates(m[1]!))
    if (corners.some((c) => c.length < 2 || c.length > 3)) return 'bad'
  }
  if (corners.length > 1 && corners[0]!.slice(0, 2).join() === corners.at(-1)!.slice(0, 2).join()) corners.pop()
  // No corners at all is no point, as an empty gml:pos is.
  if (!corners.length) return undefined
  if (corners.some((c) => !Number.isFinite(c[0]) || !Number.isFinite(c[1]))) return 'bad'
  // Rounded to 1e-7 degrees (about a centimetre): a mean's float noise is not a position.
  const mean = (i: number) => Math.round((corners.reduce((sum, c) => sum + c[i]!, 0) / corners.length) * 1e7) / 1e7
  return { lat: mean(0), lon: mean(1) }
}

/** An address and its "Bldg B", "Floor 3", … parts at the end, each a bare value, in SUB_ADDRESS order. */
const SUB_TAIL = new RegExp(`^([\\s\\S]+?)${SUB_ADDRESS.map(([, word]) => `(?:, ${word} ([^\\s,]+))?`).join('')}$`)

/**
 * A PIDF-LO of the incident's location. The civic address and the point are two representations of
 * one place, each in a tuple of its own, so that each geopriv holds one location-info and then the
 * usage rules, as RFC 4119's schema and NENA's EIDO sample have them. The rules are empty: RFC
 * 4119's defaults, the most guarded (not to be passed on; kept 24 hours), are the team's to relax.
 */
export function writePidfLo(entity: string, loc: PlainLocation): string {
  const tuples: string[] = []
  const tuple = (id: string, location: string) =>
    `<tuple id="${id}"><status><gp:geopriv><gp:location-info>${location}</gp:location-info><gp:usage-rules/></gp:geopriv></status></tuple>`
  if (loc.address !== undefined || loc.city !== undefined) {
    // Each civic element is in the civic address namespace (ca:), as its container is: unprefixed, it
    // would be in the document's default (PIDF) namespace, where no namespace-aware reader looks.
    const civic: string[] = ['<ca:country>US</ca:country>']
    if (loc.city) civic.push(`<ca:A3>${encode(loc.city)}</ca:A3>`)
    if (loc.address) {
      // The parts inside the building as readPidfLo writes them (", Unit 312" at the end, in its
      // order) go back in their elements; anything else stays in the street, as written.
      const parts = SUB_TAIL.exec(loc.address)!
      const street = parts[1]!
      // A leading house number goes in HNO so readers that only know civic elements find it.
      const m = /^(\d+[A-Za-z]?)\s+(.+)$/.exec(street)
      civic.push(m ? `<ca:HNO>${encode(m[1]!)}</ca:HNO><ca:RD>${encode(m[2]!)}</ca:RD>` : `<ca:RD>${encode(street)}</ca:RD>`)
      SUB_ADDRESS.forEach(([e], i) => {
        const v = parts[i + 2]
        if (v !== undefined) civic.push(`<ca:${e}>${encode(v)}</ca:${e}>`)
      })
    }
    tuples.push(tuple('incident-civic', `<ca:civicAddress>${civic.join('')}</ca:civicAddress>`))
  }
  if (loc.lat !== undefined && loc.lon !== undefined) {
    tuples.push(tuple('incident-point', `<gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>${loc.lat} ${loc.lon}</gml:pos></gml:Point>`))
  }
  return (
    `<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" ` +
    `xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" xmlns:gml="http://www.opengis.net/gml" entity="${encode(entity)}">` +
    `${tuples.join('')}</presence>`
  )
}
