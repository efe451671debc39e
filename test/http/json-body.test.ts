/**
 * JSON bodies (src/http/json-body.ts): a member given twice is a 400 naming it (the default parser
 * kept the last: `"weapons": true, "weapons": false` sent an armed person's call to CRU alone); a
 * charset other than UTF-8 is a 415 and bytes that are not UTF-8 a 400 (they were stored as U+FFFD
 * and answered 201). A body that does not match its Content-Length is a 400 (it was a 415). Either
 * way nothing is stored. A byte order mark, escapes and valid bodies pass.
 */
import { connect } from 'node:net'
import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { charsetOf, duplicateMember } from '../../src/http/json-body.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { app, db } = world

type Problem = { code: string; detail?: string; invalidParams?: { name: string; reason: string }[] }

const post = (body: string | Buffer, contentType = 'application/json') =>
  app.inject({ method: 'POST', url: '/v1/call-events', payload: body, headers: { 'content-type': contentType } })

const stored = async () => Number((await db.selectFrom('call_events').select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)

function problem(t: Test, res: LightMyRequestResponse, status: number, code: string, label: string): Problem {
  t.equal(res.statusCode, status, `${label}: ${status} (got ${res.statusCode} ${res.body.slice(0, 200)})`)
  t.match(String(res.headers['content-type']), /^application\/problem\+json/, `${label}: problem+json`)
  const p = res.json<Problem>()
  t.equal(p.code, code, `${label}: ${code}`)
  return p
}

t.test('a flag given twice is refused, naming it; nothing is stored', async (t) => {
  const before = await stored()
  const ev = callEvent({ natureCode: 'EDP', flags: { mentalHealth: true } })
  const text = JSON.stringify(ev).replace('"flags":{', '"flags":{"weapons":true,"weapons":false,')
  const p = problem(t, await post(text), 400, 'validation-failed', 'weapons twice')
  t.same(p.invalidParams?.map((x) => x.name), ['call.flags.weapons'])
  t.match(p.detail, /call\.flags\.weapons is given twice/)

  // The same name spelled with an escape is the same member.
  const escaped = JSON.stringify(callEvent({ flags: { mentalHealth: true } })).replace('"flags":{', '"flags":{"weapons":true,"weap\\u006fns":false,')
  t.same(problem(t, await post(escaped), 400, 'validation-failed', 'escaped twin').invalidParams?.map((x) => x.name), ['call.flags.weapons'])
  t.equal(await stored(), before, 'nothing stored')

  const ok = await post(JSON.stringify(ev))
  t.equal(ok.statusCode, 201, 'the same event with the flag once is taken')
})

t.test('a charset other than UTF-8 is 415; bytes that are not UTF-8 are 400; nothing is stored', async (t) => {
  const before = await stored()
  const text = JSON.stringify(callEvent()).replace('Marta Lindqvist', 'René García')
  const latin1 = Buffer.from(text, 'latin1')
  const p = problem(t, await post(latin1, 'application/json; charset=iso-8859-1'), 415, 'unsupported-media-type', 'latin-1 declared')
  t.match(p.detail, /UTF-8.*iso-8859-1/)
  t.same(problem(t, await post(latin1), 400, 'validation-failed', 'latin-1 undeclared').invalidParams?.map((x) => x.name), ['(body)'])
  t.equal(await stored(), before, 'nothing stored')

  const res = await post(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'utf8')]), 'application/json; charset="UTF-8"')
  t.equal(res.statusCode, 201, `UTF-8 with a byte order mark and a quoted charset is taken (${res.body.slice(0, 200)})`)
  const row = await db.selectFrom('call_events').select('body').where('event_id', '=', (JSON.parse(text) as { eventId: string }).eventId).executeTakeFirstOrThrow()
  t.equal((row.body as { call: { caller: { name: string } } }).call.caller.name, 'René García', 'the name as sent')
})

t.test('what the default parser refused is still refused', async (t) => {
  problem(t, await post('{"eventId":'), 400, 'validation-failed', 'truncated')
  problem(t, await post(''), 400, 'validation-failed', 'empty')
  problem(t, await post('{"__proto__":{"admin":true}}'), 400, 'validation-failed', 'prototype poisoning')
})

t.test('an empty body with a JSON Content-Type is no body: a move takes it, a call event needs one', async (t) => {
  // Many clients send Content-Type on every POST: a console's acknowledge failing on it would let
  // the deadline pass and the call escalate.
  const created = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'NOISE' }) })
  t.equal(created.statusCode, 201)
  const [assignment] = created.json<{ decision: { assignments: Array<{ id: string; queue: string }> } }>().decision.assignments
  await db.updateTable('assignments').set({ status: 'offered' }).where('id', '=', assignment!.id).execute()
  const ack = await app.inject({ method: 'POST', url: `/v1/assignments/${assignment!.id}/acknowledge`, payload: '', headers: { 'content-type': 'application/json' } })
  t.equal(ack.statusCode, 200, `acknowledged (got ${ack.statusCode} ${ack.body.slice(0, 200)})`)
  t.equal(ack.json<{ status: string }>().status, 'acknowledged')

  const before = await stored()
  const p = problem(t, await post(''), 400, 'validation-failed', 'a call event without a body')
  t.ok(p.invalidParams?.length, `the problem names what is missing (${JSON.stringify(p.invalidParams)})`)
  t.equal(await stored(), before, 'nothing stored')
})

t.test('a body shorter or longer than its Content-Length is a 400 saying so, not a 415; nothing is stored', async (t) => {
  const before = await stored()
  const text = JSON.stringify(callEvent())
  const bytes = Buffer.byteLength(text)
  for (const length of [bytes - 1, bytes + 1]) {
    const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: text, headers: { 'content-type': 'application/json', 'content-length': String(length) } })
    const p = problem(t, res, 400, 'validation-failed', `Content-Length ${length} for ${bytes} bytes`)
    t.match(p.detail, /Content-Length/)
    t.same(p.invalidParams?.map((x) => x.name), ['(body)'])
  }
  t.equal(await stored(), before, 'nothing stored')
})

t.test('what the HTTP parser refuses on a real socket is problem+json too, and the connection closes', async (t) => {
  const base = new URL(await app.listen({ port: 0, host: '127.0.0.1' }))
  t.teardown(() => app.server.close())
  const before = await stored()
  // Raw bytes: no client would send these.
  const exchange = (request: string) =>
    new Promise<{ head: string; body: string }>((resolve, reject) => {
      const socket = connect(Number(base.port), base.hostname, () => socket.write(request))
      let text = ''
      socket.setEncoding('utf8').on('data', (d) => (text += d))
      socket.on('error', reject).on('close', () => {
        const at = text.indexOf('\r\n\r\n')
        resolve({ head: text.slice(0, at), body: text.slice(at + 4) })
      })
    })
  const text = JSON.stringify(callEvent())
  const cases = [
    { label: 'a Content-Length that is not a number', status: 400, code: 'validation-failed', request: `POST /v1/call-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12a\r\n\r\n${text}` },
    { label: 'a request line that is not HTTP', status: 400, code: 'validation-failed', request: 'HELLO THERE\r\n\r\n' },
    { label: 'headers past 16 KB', status: 431, code: 'headers-too-large', request: `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ${'a'.repeat(20_000)}\r\n\r\n` },
  ]
  for (const c of cases) {
    const { head, body } = await exchange(c.request)
    t.match(head, new RegExp(`^HTTP/1\\.1 ${c.status} `), `${c.label}: ${c.status}`)
    t.match(head, /\r\ncontent-type: application\/problem\+json\r\n/i, `${c.label}: problem+json`)
    const p = JSON.parse(body) as Problem & { status: number; instance: string }
    t.equal(p.code, c.code, `${c.label}: ${c.code}`)
    t.equal(p.status, c.status, `${c.label}: the body's status`)
    t.match(head, new RegExp(`\r\nx-request-id: ${p.instance.replace('urn:request:', '')}`, 'i'), `${c.label}: the header names the problem's instance`)
    t.match(head, /\r\nx-content-type-options: nosniff\r\n/i, `${c.label}: the security headers every answer carries`)
    t.match(head, /\r\ncache-control: no-store\r\n/i, `${c.label}: no-store, as the router's other errors`)
  }
  t.equal(await stored(), before, 'nothing stored')

  // Bytes that are not HTTP on a connection whose answer is under way (a console's event stream):
  // a raw 400 written there landed inside the stream's chunked body.
  const streamed = await new Promise<string>((resolve, reject) => {
    const socket = connect(Number(base.port), base.hostname, () =>
      socket.write(`GET /v1/assignments/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${world.adminKey}\r\n\r\n`),
    )
    let text = ''
    const stuck = setTimeout(() => {
      socket.destroy()
      reject(new Error(`the connection stayed open: ${JSON.stringify(text.slice(-300))}`))
    }, 10_000)
    socket.setEncoding('utf8').on('data', (d) => {
      const first = !text.includes(': connected')
      text += d
      if (first && text.includes(': connected')) socket.write('HELLO THERE\r\n\r\n')
    })
    socket.on('error', () => {}).on('close', () => {
      clearTimeout(stuck)
      resolve(text)
    })
  })
  t.match(streamed, /^HTTP\/1\.1 200 [^]*: connected/, 'the stream had begun')
  t.equal(streamed.match(/HTTP\/1\.1 /g)?.length, 1, 'no second status line inside the stream: the connection is closed instead')
})

t.test('duplicateMember: paths through objects and arrays; strings that look like structure are text', async (t) => {
  t.equal(duplicateMember('{"a":1,"b":{"c":[1,{"d":1,"d":2}]}}'), 'b.c.1.d')
  t.equal(duplicateMember('[{"x":1},{"x":1,"y":[{"z":1}],"x":2}]'), '1.x')
  t.equal(duplicateMember('{"a":"{\\"a\\":1,","b":"\\\\","c":{"a":1},"d":[{"a":1},{"a":1}]}'), undefined, 'same names in different objects; quotes and backslashes in strings')
  t.equal(duplicateMember('{"a":{"b":1},"a":2}'), 'a')
  t.equal(duplicateMember('{"":1,"":2}'), '', 'even the empty name')
  t.equal(duplicateMember('"just a string"'), undefined)
  const deep = 100_000
  t.equal(duplicateMember(`${'['.repeat(deep)}{"k":1,"k":2}${']'.repeat(deep)}`), `${'0.'.repeat(deep)}k`, 'deep nesting: no stack to overflow')
})

t.test('charsetOf', async (t) => {
  t.equal(charsetOf('application/json'), undefined)
  t.equal(charsetOf('application/json; charset=UTF-8'), 'utf-8')
  t.equal(charsetOf('application/json;charset="utf-8"'), 'utf-8')
  t.equal(charsetOf('application/json; foo=bar; Charset=Windows-1252'), 'windows-1252')
})
