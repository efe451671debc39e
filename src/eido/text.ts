/**
 * Text inside an EIDO as plain text: the notes (HTML) and the PIDF-LO's elements (XML). Character
 * references, named and numeric (`&#233;`, `&#xE9;`), are decoded by `entities`, which gives U+FFFD
 * for a code point no text may hold (0, a surrogate, past U+10FFFF), as the HTML standard does.
 */
import { decodeHTML, decodeXML } from 'entities'

/** A no-break space (`&nbsp;`, `&#160;`) is a space in an address or a narrative. */
const plain = (s: string): string => s.replace(/\u00a0/g, ' ').trim()

/** The text of an XML element: its character references decoded. */
export const xmlText = (s: string): string => plain(decodeXML(s))

/** A tag begins with `<` and a letter, `/`, `!` or `?`; any other `<` is text (`<->`, `<- confirmed`, `x < 3`). */
const isTagStart = (c: string | undefined): boolean => c !== undefined && /[A-Za-z/!?]/.test(c)

/** A block's start or end tag: the text on either side of it is on lines of their own. */
const BLOCK = /^<\/?(?:address|article|aside|blockquote|dd|div|dl|dt|fieldset|figcaption|figure|footer|form|h[1-6]|header|hr|li|main|nav|ol|p|pre|section|table|tbody|tfoot|thead|tr|ul)(?=[\s/>])/i
/** A table cell's start tag: its text is not run into the cell before it. */
const CELL = /^<t[dh](?=[\s/>])/i

/**
 * `s` without its tags: each tag up to the first `>` after it, in one pass. A regex that retries
 * from every `<` to the end of the text when no `>` follows held the event loop for seconds on a
 * note of 60,000 `<` (one body's worth). A block's tag breaks the line unless it already is broken,
 * so `<li>a</li><li>b</li>` is two lines, not "ab", nor three with a blank one between; a cell's
 * start tag keeps it a space from the cell before. The blanks and line break a pretty-printed note
 * writes after a block's tag, or as the only text before a block's or a cell's tag, are its layout,
 * not its text: they add no line of their own.
 */
function removeTags(s: string): string {
  let out = ''
  let from = 0
  let at = 0
  // Whether `out` ends a line (spaces and tabs after it aside), kept up to date from each piece of
  // text added: looking back through `out` at each tag made a note of spaces and tags quadratic.
  let lineStart = true
  let afterBlock = false
  const isBlank = (c: string | undefined) => c === ' ' || c === '\t'
  const isSpace = (c: string | undefined) => isBlank(c) || c === '\n' || c === '\r'
  /** Adds the text from `from` to `end`, less the layout around the tags (`beforeLayoutTag`: a block's or a cell's tag is next). */
  const add = (end: number, beforeLayoutTag: boolean) => {
    let start = from
    if (afterBlock) {
      while (isBlank(s[start])) start++
      if (s[start] === '\r' && s[start + 1] === '\n') start++
      if (s[start] === '\n') start++
      while (isBlank(s[start])) start++
      start = Math.min(start, end)
      afterBlock = false
    }
    if (beforeLayoutTag) {
      let j = start
      let lines = false
      for (; j < end && isSpace(s[j]); j++) if (s[j] === '\n') lines = true
      if (j === end && lines) return
    }
    if (start >= end) return
    out += s.slice(start, end)
    let i = end - 1
    while (i >= start && isBlank(s[i])) i--
    if (i >= start) lineStart = s[i] === '\n'
  }
  for (;;) {
    const open = s.indexOf('<', at)
    if (open < 0) break
    if (!isTagStart(s[open + 1])) {
      at = open + 1
      continue
    }
    const close = s.indexOf('>', open + 1)
    // No `>` after this tag's start: none after any later one either, so the rest is text.
    if (close < 0) break
    const tag = s.slice(open, close + 1)
    const block = BLOCK.test(tag)
    const cell = CELL.test(tag)
    add(open, block || cell)
    if (block) {
      if (!lineStart) out += '\n'
      lineStart = afterBlock = true
    } else if (cell && !lineStart) out += ' '
    from = at = close + 1
  }
  add(s.length, false)
  return out
}

/** A note's HTML as plain text: line breaks kept, tags removed, then character references decoded. */
export const htmlText = (html: string): string => plain(decodeHTML(removeTags(html.replace(/<br\s*\/?>/gi, '\n'))))
