/**
 * The rendezvous on both address families (issue 19), on loopback: one
 * dual-stack listener (`--listen [::]:PORT`) takes TCP and STUN over IPv4 and
 * IPv6; `--udp` with one address per family runs STUN per family, and the
 * welcome names the port of the family the peer came in on.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { RendezvousServer } from '../rendezvous/server.js';
import { ControlClient } from '../peer/control-client.js';
import { stunBinding } from '../src/stun/client.js';
import { nullLogger } from '../src/util/log.js';

/** Control clients of the running test, closed before its rendezvous. */
const clients: ControlClient[] = [];

async function rendezvous(t: TestContext, opts: Partial<ConstructorParameters<typeof RendezvousServer>[0]>) {
  const server = new RendezvousServer({ host: '::', port: 0, log: nullLogger, ...opts });
  const addr = await server.listen();
  t.after(async () => {
    for (const c of clients.splice(0)) c.close();
    await server.close();
  });
  return { server, addr };
}

async function welcome(_t: TestContext, host: string, port: number) {
  const c = new ControlClient({ server: { host, port }, connectTimeoutMs: 2000 });
  clients.push(c);
  return c.connect();
}

async function udp(t: TestContext, type: 'udp4' | 'udp6'): Promise<dgram.Socket> {
  const s = dgram.createSocket(type);
  await new Promise<void>((r) => s.bind(0, r));
  t.after(() => s.close());
  return s;
}

test('[::] listener: TCP and STUN (both ports) over IPv4 and IPv6; IPv4 peers are told IPv4 addresses', async (t) => {
  const { server, addr } = await rendezvous(t, {});
  assert.equal(server.stun!.endpoints.length, 2, 'the second STUN port too');
  for (const [host, family, type] of [
    ['127.0.0.1', 'IPv4', 'udp4'],
    ['::1', 'IPv6', 'udp6'],
  ] as const) {
    const w = await welcome(t, host, addr.port);
    assert.equal(w.observed.address, host, 'an IPv4 peer is not shown as ::ffff:');
    assert.equal(w.observed.family, family);
    const s = await udp(t, type);
    for (const port of [w.udpPort, w.altUdpPort!]) {
      const r = await stunBinding(s, { address: host, port }, { timeoutMs: 2000 });
      assert.equal(r.mapped.address, host);
      assert.equal(r.mapped.family, family);
    }
  }
});

test('--udp per family: each family gets its own STUN, named in the welcome of that family', async (t) => {
  const { server, addr } = await rendezvous(t, {
    udp: { host: '127.0.0.1', port: 0 },
    udpOther: { udp: { host: '::1', port: 0 } },
    altPort: false,
  });
  assert.equal(server.stuns.length, 2);
  const w4 = await welcome(t, '127.0.0.1', addr.port);
  const w6 = await welcome(t, '::1', addr.port);
  assert.equal(w4.udpPort, server.stun!.address().port);
  assert.equal(w6.udpPort, server.stunOther!.address().port);
  const r = await stunBinding(await udp(t, 'udp6'), { address: '::1', port: w6.udpPort }, { timeoutMs: 2000 });
  assert.equal(r.mapped.family, 'IPv6');
});

test('explicit single-family listeners still work: IPv4 only, IPv6 only', async (t) => {
  const v4 = await rendezvous(t, { host: '127.0.0.1' });
  assert.equal((await welcome(t, '127.0.0.1', v4.addr.port)).observed.family, 'IPv4');
  await assert.rejects(welcome(t, '::1', v4.addr.port));
  const v6 = await rendezvous(t, { host: '::1' });
  assert.equal((await welcome(t, '::1', v6.addr.port)).observed.family, 'IPv6');
  await assert.rejects(welcome(t, '127.0.0.1', v6.addr.port));
});
