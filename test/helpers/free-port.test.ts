/** freePort: a port a test server can take, which outgoing connections never do. */
import net from 'node:net'
import { once } from 'node:events'
import t from 'tap'
import { ephemeralPorts, freePort } from './redis-server.js'

const { low, high } = ephemeralPorts()
const room = low - 1 - 10_000 >= 1000 || 65_535 - high >= 1000
t.test('outside the ephemeral range, free, and not the same twice running', { skip: room ? false : `the ephemeral range ${low}–${high} leaves no room` }, async (t) => {
  const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()))
  for (const port of ports) t.ok(port > 0 && (port < low || port > high), `${port} is outside ${low}–${high}, where the kernel picks outgoing connections' ports`)
  t.ok(new Set(ports).size > 1, 'picked at random')
  // The port is really free: a server takes it.
  const srv = net.createServer()
  srv.listen(ports[0], '127.0.0.1')
  await once(srv, 'listening')
  t.teardown(() => new Promise<void>((resolve) => srv.close(() => resolve())))
  t.equal((srv.address() as net.AddressInfo).port, ports[0])
})
