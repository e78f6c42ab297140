/**
 * The port-mapping clients against a router that misbehaves on purpose, with
 * real sockets on loopback (a fake gateway at 127.0.0.1): an HTTP reply that
 * drips, a lease longer than setTimeout can count, a flood of restart
 * announcements, a UDP exchange whose connect fails. Each case was seen
 * failing before its fix: a hang, back-to-back renewals, one re-mapping
 * queued per datagram, an uncaught exception.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { httpRequest } from '../src/portmap/upnp.js';
import { udpExchange } from '../src/portmap/udp.js';
import { PortMapper } from '../src/portmap/mapper.js';
import { createLogger } from '../src/util/log.js';
import { sleep } from '../src/util/backoff.js';

// Joining 224.0.0.1 would send an IGMP report off the machine; the
// announcements in these tests come over loopback to the bound port anyway.
dgram.Socket.prototype.addMembership = function addMembership() {};

const log = createLogger({ format: 'json', sink: { write: () => {} } });
const route = () => Promise.resolve({ gateway: '127.0.0.1', iface: 'eth0', metric: 0 });

/** A NAT-PMP server on 127.0.0.1:5351 that grants every mapping with `lifetime`; null if the port is taken. */
async function natPmpServer(lifetime: number) {
  const s = dgram.createSocket('udp4');
  const stats = { external: 0, map: 0 };
  s.on('message', (m, r) => {
    const out = Buffer.alloc(m[1] === 0 ? 12 : 16);
    out[1] = 128 + m[1];
    out.writeUInt32BE(1000, 4); // seconds since start of epoch
    if (m[1] === 0) {
      stats.external++;
      out.set([203, 0, 113, 7], 8);
    } else {
      stats.map++;
      out.writeUInt16BE(m.readUInt16BE(4), 8);
      out.writeUInt16BE(m.readUInt16BE(4), 10);
      out.writeUInt32BE(lifetime, 12);
    }
    s.send(out, r.port, r.address);
  });
  const ok = await new Promise<boolean>((res) => {
    s.once('error', () => res(false));
    s.bind(5351, '127.0.0.1', () => res(true));
  });
  return ok ? { s, stats } : null;
}

test('UPnP HTTP: a reply that drips (1xx lines, or a byte at a time) fails at the deadline, not never', async (t) => {
  const server = net.createServer((c) => {
    c.on('error', () => {});
    c.once('data', () => {
      const drip = c.remotePort! % 2 === 0 ? 'info' : 'body';
      if (drip === 'body') c.write('HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n');
      const timer = setInterval(() => c.write(drip === 'info' ? 'HTTP/1.1 102 Processing\r\n\r\n' : 'a'), 100);
      c.on('close', () => clearInterval(timer));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/`;
  for (let i = 0; i < 2; i++) {
    const settled = await Promise.race([
      httpRequest(url, { method: 'GET', timeoutMs: 500 }).then(
        () => 'resolved',
        (e: Error) => e.message,
      ),
      sleep(5000).then(() => 'still pending after 5 s'),
    ]);
    assert.equal(settled, 'timed out');
  }
});

test('NAT-PMP/PCP over UDP: a connect that fails is a failed exchange, not an uncaught exception', async () => {
  const r = await udpExchange('255.255.255.255', 5351, Buffer.from([0, 0]), () => 1, { timeoutMs: 300, rtoMs: 100 });
  assert.equal(r.value, null);
  assert.ok(r.why, 'says why');
});

test('port mapper: a lease longer than a timer can count is renewed on our schedule, not back to back', async (t) => {
  const srv = await natPmpServer(0xffff_ffff);
  if (!srv) return t.skip('127.0.0.1:5351 is taken on this machine');
  const m = new PortMapper({ port: 40000, log, route, protocols: ['nat-pmp'], announcements: false });
  t.after(async () => {
    await m.close();
    srv.s.close();
  });
  const mapping = await m.start();
  assert.equal(mapping?.externalPort, 40000);
  const after = srv.stats.map;
  await sleep(1500);
  assert.equal(srv.stats.map - after, 0, 'no renewal within 1.5 s of a fresh lease');
});

test('port mapper: a flood of restart announcements queues one re-mapping, not one per datagram', async (t) => {
  const srv = await natPmpServer(7200);
  if (!srv) return t.skip('127.0.0.1:5351 is taken on this machine');
  const m = new PortMapper({ port: 40001, log, route, protocols: ['nat-pmp'] });
  const other = dgram.createSocket('udp4');
  t.after(async () => {
    await m.close();
    other.close();
    srv.s.close();
  });
  await m.start();
  assert.ok(m.mapping, 'mapped');
  await sleep(1200); // past the gap the mapper keeps after a (re-)creation
  const before = srv.stats.map;
  // NAT-PMP external-address answers, as a restarted server multicasts them, from its own port.
  const announcement = Buffer.from([0, 128, 0, 0, 0, 0, 0, 1, 203, 0, 113, 7]);
  for (let i = 0; i < 500; i++) srv.s.send(announcement, 5350, '127.0.0.1');
  // And from any other port: not the server.
  for (let i = 0; i < 100; i++) other.send(announcement, 5350, '127.0.0.1');
  await sleep(2000);
  const remaps = srv.stats.map - before;
  assert.ok(remaps >= 1, 'the announcement is acted on');
  assert.ok(remaps <= 3, `one re-mapping per gap at most, saw ${remaps}`);
  const started = Date.now();
  await m.close();
  assert.ok(Date.now() - started < 5000, 'close() does not wait on a queue of re-mappings');
});
