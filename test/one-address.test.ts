// Issue 25, the one-address rendezvous over loopback: a second STUN port on the
// same address (also with a wildcard bind, where OTHER-ADDRESS carries the
// unspecified IP), classification from it (detectNat, gatherCandidates), the
// rendezvous's default alt port and its welcome, and the CLI's --alt-port.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { StunResponder, StunServer } from '../src/stun/server.js';
import { stunBinding } from '../src/stun/client.js';
import { decodeStun, encodeStun, newTransactionId, StunClass, StunMethod } from '../src/stun/message.js';
import { detectNat, mappingCoverage, otherAddressFor } from '../src/stun/nat.js';
import type { Endpoint } from '../src/stun/address.js';
import { gatherCandidates } from '../src/punch/candidates.js';
import { PeerSocket } from '../src/punch/peer-socket.js';
import { alternateFor, RendezvousServer } from '../rendezvous/server.js';
import { ControlClient } from '../peer/control-client.js';
import { createLogger, nullLogger } from '../src/util/log.js';
import { encodeControl, parseControl } from '../src/wire/control.js';
import { FRAME_HEADER_LEN } from '../src/wire/frame.js';

type Ctx = { after: (fn: () => unknown) => void };

async function udp(t: Ctx, address = '127.0.0.1', port = 0): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  const close = () =>
    new Promise<void>((r) => {
      try {
        s.close(() => r());
      } catch {
        r(); // already closed
      }
    });
  t.after(close);
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, address, () => resolve());
  });
  return s;
}

async function stunServer(t: Ctx, opts: ConstructorParameters<typeof StunServer>[0]): Promise<StunServer> {
  const srv = new StunServer(opts);
  await srv.listen();
  t.after(() => srv.close());
  return srv;
}

function collect(s: dgram.Socket, ms: number): Promise<Buffer[]> {
  const got: Buffer[] = [];
  const on = (m: Buffer) => got.push(m);
  s.on('message', on);
  return new Promise((r) =>
    setTimeout(() => {
      s.off('message', on);
      r(got);
    }, ms),
  );
}

// OTHER-ADDRESS is 0.0.0.0:alt, read as the server's IP; a change-port request is answered from it.
test('wildcard server with a second port only: OTHER-ADDRESS read as the server IP', async (t) => {
  const srv = await stunServer(t, {
    primary: { address: '0.0.0.0', port: 0 },
    alternate: { address: '0.0.0.0', port: 0 },
  });
  assert.equal(srv.endpoints.length, 2);
  const [p, a] = srv.endpoints;
  assert.notEqual(p.port, a.port);
  const c = await udp(t);
  const server: Endpoint = { address: '127.0.0.1', port: p.port, family: 'IPv4' };
  const r = await stunBinding(c, server);
  assert.deepEqual(r.otherAddress, { address: '0.0.0.0', port: a.port, family: 'IPv4' });
  assert.equal(r.responseOrigin, undefined, 'a wildcard socket cannot name its address');
  assert.deepEqual(otherAddressFor(server, r.otherAddress), { address: '127.0.0.1', port: a.port, family: 'IPv4' });
  // the second port answers Binding requests itself, and CHANGE-REQUEST change-port is answered from it
  const r2 = await stunBinding(c, { ...server, port: a.port });
  assert.deepEqual(r2.mapped, r.mapped);
  assert.deepEqual(r2.otherAddress?.port, p.port);
  const r3 = await stunBinding(c, server, { changePort: true });
  assert.equal(r3.source.port, a.port);
  // a concrete OTHER-ADDRESS is left alone
  const concrete: Endpoint = { address: '192.0.2.1', port: 9, family: 'IPv4' };
  assert.equal(otherAddressFor(server, concrete), concrete);
});

test('the second port follows the main port rules: junk and non-requests get no reply there either', async (t) => {
  const srv = await stunServer(t, {
    primary: { address: '127.0.0.1', port: 0 },
    alternate: { address: '127.0.0.1', port: 0 },
  });
  const alt = srv.endpoints[1];
  const c = await udp(t);
  const good = encodeStun({
    cls: StunClass.Request,
    method: StunMethod.Binding,
    transactionId: newTransactionId(),
    fingerprint: true,
  });
  const badFp = Buffer.from(good);
  badFp[badFp.length - 1] ^= 0xff;
  const indication = encodeStun({
    cls: StunClass.Indication,
    method: StunMethod.Binding,
    transactionId: newTransactionId(),
  });
  const got = collect(c, 400);
  for (const junk of [Buffer.from('hello'), badFp, indication, Buffer.alloc(30)]) c.send(junk, alt.port, alt.address);
  assert.equal((await got).length, 0);
  const before = srv.responder.stats.ignored;
  assert.ok(before >= 2, `ignored ${before}`); // the two STUN-shaped ones; the rest is not STUN at all
  // a good request on the same port is answered
  const ok = collect(c, 400);
  c.send(good, alt.port, alt.address);
  const replies = await ok;
  assert.equal(replies.length, 1);
  assert.equal(decodeStun(replies[0])?.cls, StunClass.SuccessResponse);
  // a second IP still needs concrete addresses
  assert.throws(
    () => new StunResponder({ primary: { address: '0.0.0.0', port: 1 }, alternate: { address: '10.0.0.1', port: 2 } }),
    /concrete IPs/,
  );
});

// Mapping is tested across ports; the report says address dependence was not tested.
test('detectNat against a one-address (wildcard) server: mapping tested across ports only', async (t) => {
  const srv = await stunServer(t, {
    primary: { address: '0.0.0.0', port: 0 },
    alternate: { address: '0.0.0.0', port: 0 },
  });
  const r = await detectNat({ address: '127.0.0.1', port: srv.endpoints[0].port }, { probeTimeoutMs: 500 });
  assert.equal(r.mapping, 'endpoint-independent');
  assert.deepEqual(r.mappingTested, { port: true, address: false });
  assert.deepEqual(r.otherAddress, { address: '127.0.0.1', port: srv.endpoints[1].port, family: 'IPv4' });
  assert.match(r.notes.join('\n'), /address dependence could not be tested/);
  assert.equal(r.natType, 'open');
});

test('detectNat altPort hint: a server without OTHER-ADDRESS, a second port given by the caller', async (t) => {
  const a = await stunServer(t, { primary: { address: '127.0.0.1', port: 0 } });
  const b = await stunServer(t, { primary: { address: '127.0.0.1', port: 0 } });
  const plain = await detectNat(a.address(), { probeTimeoutMs: 300 });
  assert.equal(plain.mapping, 'unknown');
  assert.deepEqual(plain.mappingTested, { port: false, address: false });
  const hinted = await detectNat(a.address(), { probeTimeoutMs: 300, altPort: b.address().port });
  assert.equal(hinted.mapping, 'endpoint-independent');
  assert.deepEqual(hinted.mappingTested, { port: true, address: false });
  assert.equal(hinted.filtering, 'unknown', 'no CHANGE-REQUEST without OTHER-ADDRESS');
});

test('mappingCoverage: which destination changes answered probes cover', () => {
  const m = { address: '203.0.113.5', port: 1 };
  const P = { address: '198.51.100.1', port: 7000 };
  assert.deepEqual(mappingCoverage([{ server: P, mapped: m }]), { port: false, address: false });
  assert.deepEqual(
    mappingCoverage([
      { server: P, mapped: m },
      { server: { ...P, port: 7001 }, mapped: m },
    ]),
    {
      port: true,
      address: false,
    },
  );
  assert.deepEqual(
    mappingCoverage([
      { server: P, mapped: m },
      { server: { ...P, port: 7001 }, mapped: null },
    ]),
    {
      port: false,
      address: false,
    },
  );
  assert.deepEqual(
    mappingCoverage([
      { server: P, mapped: m },
      { server: { address: '198.51.100.2', port: 7000 }, mapped: m },
      { server: { address: '198.51.100.2', port: 7001 }, mapped: m },
    ]),
    { port: true, address: true },
  );
});

/**
 * A one-address server (two ports on 127.0.0.1) that plays a NAT: it reports
 * the mapping `mapFor` picks per receiving socket and drops changed-port
 * responses (a port-restricted filter), as a symmetric NAT in front of the
 * client would make a real rendezvous see.
 */
async function oneAddressNat(t: Ctx, mapFor: (c: Endpoint, i: number) => Endpoint): Promise<Endpoint> {
  const s0 = await udp(t);
  const s1 = await udp(t);
  const sockets = [s0, s1];
  const responder = new StunResponder({
    primary: { address: '127.0.0.1', port: s0.address().port },
    alternate: { address: '127.0.0.1', port: s1.address().port },
  });
  sockets.forEach((s, i) =>
    s.on('message', (msg, rinfo) => {
      const out = responder.handle(msg, rinfo, i);
      if (!out) return;
      const req = decodeStun(msg)!;
      if (req.changeRequest?.changePort) return; // the NAT filters it
      const res = decodeStun(out.reply)!;
      if (res.cls === StunClass.SuccessResponse) {
        const mapped = mapFor({ address: rinfo.address, port: rinfo.port, family: 'IPv4' }, i);
        res.xorMappedAddress = mapped;
        res.mappedAddress = mapped;
      }
      sockets[out.via].send(encodeStun({ ...res, attributes: [] }), out.to.port, out.to.address);
    }),
  );
  return { address: '127.0.0.1', port: s0.address().port, family: 'IPv4' };
}

test('a port-dependent (symmetric) NAT via a one-address server: detectNat and gatherCandidates say so', async (t) => {
  const sym = await oneAddressNat(t, (c, i) => ({
    address: '192.0.2.77',
    port: ((c.port + 100 + i) % 60000) + 1024,
    family: 'IPv4',
  }));
  const r = await detectNat(sym, { probeTimeoutMs: 300, hairpin: false });
  assert.equal(r.mapping, 'address-and-port-dependent');
  assert.equal(r.filtering, 'address-and-port-dependent');
  assert.equal(r.natType, 'symmetric');
  assert.equal(r.isPublic, false);
  const cone = await oneAddressNat(t, (c) => ({ address: '192.0.2.77', port: c.port, family: 'IPv4' }));
  const rc = await detectNat(cone, { probeTimeoutMs: 300, hairpin: false });
  assert.equal(rc.mapping, 'endpoint-independent');
  assert.equal(rc.natType, 'port-restricted-cone');

  const ps = await PeerSocket.open('127.0.0.1');
  t.after(() => ps.close());
  const g = await gatherCandidates(ps, sym, { includeLoopback: true });
  assert.equal(g.nat.mapping, 'address-and-port-dependent');
  assert.ok(g.candidates.some((c) => c.kind === 'srflx' && c.address === '192.0.2.77'));
  const gc = await gatherCandidates(ps, cone, { includeLoopback: true });
  assert.equal(gc.nat.mapping, 'endpoint-independent');
});

test('gatherCandidates against a wildcard one-address server, and with the welcome altPort hint', async (t) => {
  const srv = await stunServer(t, {
    primary: { address: '0.0.0.0', port: 0 },
    alternate: { address: '0.0.0.0', port: 0 },
  });
  const ps = await PeerSocket.open('127.0.0.1');
  t.after(() => ps.close());
  const g = await gatherCandidates(
    ps,
    { address: '127.0.0.1', port: srv.endpoints[0].port },
    { includeLoopback: true },
  );
  assert.equal(g.nat.mapping, 'endpoint-independent');
  const a = await stunServer(t, { primary: { address: '127.0.0.1', port: 0 } });
  const b = await stunServer(t, { primary: { address: '127.0.0.1', port: 0 } });
  assert.equal((await gatherCandidates(ps, a.address(), { includeLoopback: true })).nat.mapping, 'unknown');
  const h = await gatherCandidates(ps, a.address(), { includeLoopback: true, altPort: b.address().port });
  assert.equal(h.nat.mapping, 'endpoint-independent');
});

test('alternateFor: default UDP port + 1, explicit, off, --alt-udp wins, no port past 65535', () => {
  const udp = { host: '0.0.0.0', port: 7000 };
  assert.deepEqual(alternateFor(udp, undefined, undefined), {
    alternate: { address: '0.0.0.0', port: 7001 },
    defaulted: true,
  });
  assert.deepEqual(alternateFor({ host: '127.0.0.1', port: 0 }, undefined, undefined), {
    alternate: { address: '127.0.0.1', port: 0 },
    defaulted: true,
  });
  assert.deepEqual(alternateFor(udp, undefined, 7100), {
    alternate: { address: '0.0.0.0', port: 7100 },
    defaulted: false,
  });
  assert.deepEqual(alternateFor(udp, undefined, false), { defaulted: false });
  assert.deepEqual(alternateFor(udp, { host: '198.51.100.9', port: 7001 }, undefined), {
    alternate: { address: '198.51.100.9', port: 7001 },
    defaulted: false,
  });
  assert.deepEqual(alternateFor({ host: '0.0.0.0', port: 65535 }, undefined, undefined), { defaulted: true });
});

async function rendezvous(t: Ctx, opts: Partial<ConstructorParameters<typeof RendezvousServer>[0]> = {}) {
  const server = new RendezvousServer({ host: '127.0.0.1', port: 0, log: nullLogger, ...opts });
  const addr = await server.listen();
  t.after(() => server.close());
  return { server, addr };
}

async function welcomeOf(t: Ctx, port: number) {
  const c = new ControlClient({ server: { host: '127.0.0.1', port } });
  const w = await c.connect();
  t.after(() => c.close());
  return w;
}

test('rendezvous: a second STUN port by default, named in the welcome; none with altPort false', async (t) => {
  const { server, addr } = await rendezvous(t);
  const eps = server.stun!.endpoints;
  assert.equal(eps.length, 2);
  assert.equal(eps[1].address, '127.0.0.1');
  const w = await welcomeOf(t, addr.port);
  assert.equal(w.udpPort, eps[0].port);
  assert.equal(w.altUdpPort, eps[1].port);
  const c = await udp(t);
  const r = await stunBinding(c, { address: '127.0.0.1', port: w.altUdpPort });
  assert.equal(r.mapped.port, c.address().port);

  const off = await rendezvous(t, { altPort: false });
  assert.equal(off.server.stun!.endpoints.length, 1);
  assert.equal((await welcomeOf(t, off.addr.port)).altUdpPort, undefined);
});

// The default second port taken: it runs on one port and warns; an explicit one taken: an error.
test('rendezvous: a second port that is taken', async (t) => {
  const lines: string[] = [];
  const log = createLogger({ format: 'json', level: 'warn', sink: { write: (l: string) => lines.push(l) } });
  // Find P with UDP P free and hold P + 1.
  let held: dgram.Socket | null = null;
  let udpPort = 0;
  for (let i = 0; i < 20 && !held; i++) {
    const probe = await udp(t);
    const p = probe.address().port;
    if (p >= 65535) continue;
    try {
      held = await udp(t, '127.0.0.1', p + 1);
      udpPort = p;
      await new Promise<void>((r) => probe.close(() => r()));
    } catch {
      /* next */
    }
  }
  assert.ok(held, 'could not find two consecutive free ports');
  const { server } = await rendezvous(t, { udp: { host: '127.0.0.1', port: udpPort }, log });
  assert.equal(server.stun!.endpoints.length, 1);
  assert.equal(server.altUdpPort, undefined);
  assert.ok(
    lines.some((l) => l.includes('alt_port_unavailable')),
    `no alt_port_unavailable warning: ${lines.join('')}`,
  );
  const explicit = new RendezvousServer({
    host: '127.0.0.1',
    port: 0,
    log: nullLogger,
    udp: { host: '127.0.0.1', port: 0 },
    altPort: held.address().port,
  });
  await assert.rejects(explicit.listen(), /cannot listen on UDP .* already in use/);
});

test('welcome.altUdpPort on the wire: optional, and old peers ignore what they do not know', () => {
  const base = {
    type: 'welcome',
    version: 1,
    nonce: 'AAAA',
    observed: { address: '192.0.2.1', port: 5, family: 'IPv4' },
    udpPort: 7000,
    relay: null,
  };
  const body = (o: object) => encodeControl(o as never).subarray(FRAME_HEADER_LEN);
  const withAlt = parseControl(body({ ...base, altUdpPort: 7001 }));
  assert.ok(withAlt.ok);
  assert.equal((withAlt.msg as { altUdpPort?: number }).altUdpPort, 7001);
  const without = parseControl(body(base));
  assert.ok(without.ok);
  assert.equal((without.msg as { altUdpPort?: number }).altUdpPort, undefined);
  const future = parseControl(body({ ...base, altUdpPort: 7001, someday: { x: 1 } }));
  assert.ok(future.ok);
  assert.equal('someday' in future.msg, false);
  assert.equal(parseControl(body({ ...base, altUdpPort: 70000 })).ok, false);
});

const CLI = fileURLToPath(new URL('../rendezvous/cli.js', import.meta.url));
function runCli(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 10_000 }, (err, _out, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
}

test('rendezvous CLI: --alt-port is checked (bad value, same as the UDP port, together with --alt-udp)', async () => {
  const bad = await runCli(['--listen', '127.0.0.1:0', '--alt-port', 'seven']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /invalid --alt-port "seven"/);
  const same = await runCli(['--listen', '127.0.0.1:7999', '--alt-port', '7999']);
  assert.equal(same.code, 1);
  assert.match(same.stderr, /must differ from the UDP port/);
  const both = await runCli(['--listen', '127.0.0.1:0', '--alt-udp', '127.0.0.2:7001', '--alt-port', '7002']);
  assert.equal(both.code, 1);
  assert.match(both.stderr, /give one/);
});
