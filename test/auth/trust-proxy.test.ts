/**
 * TRUST_PROXY: behind a load balancer, an audit record says where a request came from by the
 * X-Forwarded-For of a proxy the setting names, and by the peer's address otherwise, whatever a
 * client writes in the header itself.
 */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t, { env: { TRUST_PROXY: '10.0.0.0/8' } })

async function sourceIpOfRead(remoteAddress: string, forwardedFor: string): Promise<string | null> {
  const ev = callEvent({ natureCode: 'NOISE' })
  t.equal((await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })).statusCode, 201)
  const read = await world.app.inject({ url: `/v1/calls/${ev.call.callId}`, remoteAddress, headers: { 'x-forwarded-for': forwardedFor } })
  t.equal(read.statusCode, 200)
  const row = await world.db.selectFrom('audit_log').select('source_ip').where('action', '=', 'call.read').where('target_id', '=', ev.call.callId).executeTakeFirstOrThrow()
  return row.source_ip
}

t.test('a named proxy forwards the client’s address', async (t) => {
  t.equal(await sourceIpOfRead('10.1.2.3', '203.0.113.7'), '203.0.113.7')
})

t.test('anyone else is its own address, whatever it forwards', async (t) => {
  t.equal(await sourceIpOfRead('198.51.100.9', '203.0.113.7'), '198.51.100.9')
})
