/**
 * Text read from an EIDO — a note's HTML, a PIDF-LO element — keeps what was written: numeric
 * character references (decimal and hex) are decoded, code points no text may hold become U+FFFD,
 * and only real tags are stripped from a note, so a `<` in a narrative (`<->`, `<- confirmed`)
 * keeps the words after it.
 */
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { eidoToCallEvent } from '../../src/eido/map-in.js'
import { readPidfLo, writePidfLo } from '../../src/eido/pidf-lo.js'
import { eidoInSchema } from '../../src/eido/schemas.js'
import { eidoFixture } from './fixtures/index.js'

type Notes = { notesComponent: { notesActionComments: string }[] }
type Locations = { locationComponent: { locationByValue: string }[] }

/** The call's description when the incident's two notes say this. */
const described = (first: string, second = 'No weapons seen.') => {
  const doc = eidoFixture<Notes>('mental-health-crisis')
  doc.notesComponent[0]!.notesActionComments = first
  doc.notesComponent[1]!.notesActionComments = second
  return eidoToCallEvent(eidoInSchema.parse(doc)).call.description
}

/** The call's location when the incident's civic address has this street name (RD). */
const located = (rd: string) => {
  const doc = eidoFixture<Locations>('mental-health-crisis')
  const pidf = doc.locationComponent[0]!.locationByValue
  if (!pidf.includes('<cl:RD>Vermillion</cl:RD>')) throw new Error('the fixture no longer has the street name to replace')
  doc.locationComponent[0]!.locationByValue = pidf.replace('<cl:RD>Vermillion</cl:RD>', `<cl:RD>${rd}</cl:RD>`)
  return eidoToCallEvent(eidoInSchema.parse(doc)).call.location
}

t.test('a note keeps the words after a < that begins no tag', async (t) => {
  t.equal(
    described('RP states subject <-> sister fighting, knife in kitchen -> RP left house'),
    'RP states subject <-> sister fighting, knife in kitchen -> RP left house\nNo weapons seen.',
  )
  t.equal(described('<p>Caller&#8217;s brother has a knife &lt;- confirmed.</p>', 'count < 3 <= 4'), 'Caller’s brother has a knife <- confirmed.\ncount < 3 <= 4')
  t.equal(described('<p>one<br/>two</p><!-- CAD export --><b>three</b><?cad v2?>'), 'one\ntwo\nthree\nNo weapons seen.', 'real tags still go: elements, end tags, comments, processing instructions')
  t.equal(described('&lt;b&gt; is text'), '<b> is text\nNo weapons seen.', 'a tag written as references is text, not a tag')
})

t.test('a block of a note is a line of its own: divisions, list items, table rows and headings are not run together', async (t) => {
  t.equal(described('<div>RP is the neighbour</div><div>Subject is alone</div>'), 'RP is the neighbour\nSubject is alone\nNo weapons seen.')
  t.equal(described('<h3>Meds</h3><ul><li>lithium</li><li>none today<li>refuses</ul>'), 'Meds\nlithium\nnone today\nrefuses\nNo weapons seen.', 'an item left open too')
  t.equal(described('<table><tr><th>Door</th><td>rear</td></tr><tr><td>Dog</td><td>yes</td></tr></table>'), 'Door rear\nDog yes\nNo weapons seen.', 'a row a line, its cells apart')
  t.equal(described('calm<DIV class="x">pacing</DIV>'), 'calm\npacing\nNo weapons seen.', 'a block after text, tags in any case')
  t.equal(described('<p>one<br></p><p>two</p>'), 'one\ntwo\nNo weapons seen.', 'a line already broken is not broken twice')
  t.equal(described('<ul>\n  <li>lithium</li>\n  <li>none today</li>\n</ul>'), 'lithium\nnone today\nNo weapons seen.', 'pretty-printed: the source’s line break after a block is that break, not a blank line')
  t.equal(described('<div>calm</div>\r\n<div>pacing</div>'), 'calm\npacing\nNo weapons seen.', 'a CRLF too')
  t.equal(described('<ul>\n  <li>lithium</li>\n</ul>\n<p>refuses</p>\n<p>one<br></p>\n<p>two</p>'), 'lithium\nrefuses\none\ntwo\nNo weapons seen.', 'a block after a line already broken: still its layout, no blank line')
  t.equal(described('<table>\n  <tr>\n    <td>Door</td>\n    <td>rear</td>\n  </tr>\n</table>'), 'Door rear\nNo weapons seen.', 'a pretty-printed table: a row a line, its cells a space apart')
  t.equal(described('calm\n\n<p>pacing</p>'), 'calm\n\npacing\nNo weapons seen.', 'a blank line the note itself writes stays')
})

t.test('a note decodes numeric character references, decimal and hex', async (t) => {
  t.equal(described('Caf&#233; Ren&#xE9; &#x2014; RP&#8217;s&#160;brother &eacute;'), 'Café René — RP’s brother é\nNo weapons seen.', 'and a no-break space is a space')
  t.equal(described('&amp;#233; stays as written'), '&#233; stays as written\nNo weapons seen.', 'decoded once, not twice')
})

t.test('a code point no text may hold becomes U+FFFD, never a NUL or half a character', async (t) => {
  t.equal(described('a&#0;b &#xD800;c &#x110000;d &#99999999999;e'), 'a\uFFFDb \uFFFDc \uFFFDd \uFFFDe\nNo weapons seen.')
  t.same(located('Bad&#0;&#xDFFF;&#x110000;'), { address: '1200 Bad\uFFFD\uFFFD\uFFFD St', city: 'Hastings', lat: 44.73, lon: -92.85 })
})

t.test('a PIDF-LO civic address decodes numeric character references', async (t) => {
  t.same(located('Caf&#233; Ren&#xE9;'), { address: '1200 Café René St', city: 'Hastings', lat: 44.73, lon: -92.85 })
  t.same(located('O&#8217;Brien&#160;Ave &amp; 2nd'), { address: '1200 O’Brien Ave & 2nd St', city: 'Hastings', lat: 44.73, lon: -92.85 })
  const loc = { address: '1200 Rue de l’Église & 2nd <rear>', city: 'Saint-Rémi', lat: 44.73, lon: -92.85 }
  t.same(readPidfLo(writePidfLo('DC26-1', loc)), loc, 'what the service writes still reads back')
})

t.test('a narrative of spaces and block tags is read in linear time', async (t) => {
  const started = performance.now()
  const d = described(`${' '.repeat(30_000)}${'<p>'.repeat(11_000)}end`)
  const ms = performance.now() - started
  t.equal(d, 'end\nNo weapons seen.')
  t.ok(ms < 500, `mapped in ${Math.round(ms)} ms`)
})

t.test('a narrative full of < that begins no tag is read in linear time', async (t) => {
  const started = performance.now()
  const d = described(`${'<-'.repeat(30_000)}<a`)
  const ms = performance.now() - started
  t.equal(d, '<-'.repeat(2000), 'kept, and cut at 4,000 characters')
  t.ok(ms < 500, `mapped in ${Math.round(ms)} ms`)
})
