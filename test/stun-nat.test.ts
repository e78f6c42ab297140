import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import {
  classifyFiltering,
  classifyMapping,
  detectNat,
  isHardNat,
  natTypeFrom,
  type Behavior,
  type MappingProbe,
  type NatType,
} from '../src/stun/nat.js';
import { StunResponder, StunServer } from '../src/stun/server.js';
import { decodeStun, encodeStun, StunClass } from '../src/stun/message.js';
import type { Endpoint } from '../src/stun/address.js';

type Ctx = { after: (fn: () => unknown) => void };

// ---------------------------------------------------------------- pure classification

const P = { address: '198.51.100.1', port: 3478 };
const PA = { address: '198.51.100.1', port: 3479 };
const AP = { address: '198.51.100.2', port: 3478 };
const AA = { address: '198.51.100.2', port: 3479 };
const m = (port: number) => ({ address: '203.0.113.5', port });

test('classifyMapping: RFC 5780 tests I/II/III', () => {
  const probes = (a: number, b: number, c: number): MappingProbe[] => [
    { server: P, mapped: m(a) },
    { server: AP, mapped: m(b) },
    { server: AA, mapped: m(c) },
  ];
  assert.equal(classifyMapping(probes(1000, 1000, 1000)), 'endpoint-independent');
  assert.equal(classifyMapping(probes(1000, 1001, 1001)), 'address-dependent');
  assert.equal(classifyMapping(probes(1000, 1001, 1002)), 'address-and-port-dependent');
  // Test III not needed when I == II (RFC skips it).
  assert.equal(classifyMapping(probes(1000, 1000, 1000).slice(0, 2)), 'endpoint-independent');
  // Same mapped port but a different mapped IP (multi-address NAT pool) is still dependent.
  assert.equal(
    classifyMapping([
      { server: P, mapped: m(1) },
      { server: AP, mapped: { address: '203.0.113.6', port: 1 } },
    ]),
    'address-dependent',
  );
});

test('classifyMapping: partial servers and missing answers', () => {
  // Port-only alternate: the same IP on two ports.
  assert.equal(
    classifyMapping([
      { server: P, mapped: m(5) },
      { server: PA, mapped: m(5) },
    ]),
    'endpoint-independent',
  );
  assert.equal(
    classifyMapping([
      { server: P, mapped: m(5) },
      { server: PA, mapped: m(6) },
    ]),
    'address-and-port-dependent',
  );
  // IP-only alternate: different across IPs, port dependence not visible.
  assert.equal(
    classifyMapping([
      { server: P, mapped: m(5) },
      { server: AP, mapped: m(6) },
    ]),
    'address-dependent',
  );
  // Not enough distinct destinations.
  assert.equal(classifyMapping([]), 'unknown');
  assert.equal(classifyMapping([{ server: P, mapped: m(5) }]), 'unknown');
  assert.equal(
    classifyMapping([
      { server: P, mapped: m(5) },
      { server: P, mapped: m(6) },
    ]),
    'unknown',
  );
  assert.equal(
    classifyMapping([
      { server: P, mapped: m(5) },
      { server: AP, mapped: null },
      { server: AA, mapped: null },
    ]),
    'unknown',
  );
  // Test II lost, III answered: still two destinations.
  assert.equal(
    classifyMapping([
      { server: P, mapped: m(5) },
      { server: AP, mapped: null },
      { server: AA, mapped: m(5) },
    ]),
    'endpoint-independent',
  );
  // IPv6 text forms compare by value.
  assert.equal(
    classifyMapping([
      { server: { address: '2001:db8::1', port: 1 }, mapped: { address: '2001:db8::99', port: 7 } },
      { server: { address: '2001:db8::2', port: 1 }, mapped: { address: '2001:DB8:0:0:0:0:0:99', port: 7 } },
    ]),
    'endpoint-independent',
  );
});

test('classifyFiltering: RFC 5780 tests II/III and partial servers', () => {
  assert.equal(classifyFiltering({ changeIpAndPort: true }), 'endpoint-independent');
  assert.equal(classifyFiltering({ changeIpAndPort: false, changePort: true }), 'address-dependent');
  assert.equal(classifyFiltering({ changeIpAndPort: false, changePort: false }), 'address-and-port-dependent');
  assert.equal(classifyFiltering({ changeIp: true }), 'endpoint-independent');
  assert.equal(classifyFiltering({ changeIp: false, changePort: true }), 'address-dependent');
  assert.equal(classifyFiltering({ changePort: false }), 'address-and-port-dependent');
  assert.equal(classifyFiltering({ changePort: true }), 'unknown'); // port-only server: EIF and ADF look alike
  assert.equal(classifyFiltering({ changeIp: false }), 'unknown');
  assert.equal(classifyFiltering({}), 'unknown');
});

test('natTypeFrom and isHardNat for every combination', () => {
  const B: Behavior[] = ['endpoint-independent', 'address-dependent', 'address-and-port-dependent', 'unknown'];
  const expected: Record<string, NatType> = {
    'endpoint-independent/endpoint-independent': 'full-cone',
    'endpoint-independent/address-dependent': 'restricted-cone',
    'endpoint-independent/address-and-port-dependent': 'port-restricted-cone',
    'endpoint-independent/unknown': 'unknown',
    'unknown/endpoint-independent': 'unknown',
    'unknown/unknown': 'unknown',
  };
  for (const mapping of B) {
    for (const filtering of B) {
      const got = natTypeFrom(mapping, filtering, false);
      if (mapping === 'address-dependent' || mapping === 'address-and-port-dependent') assert.equal(got, 'symmetric');
      else assert.equal(got, expected[`${mapping}/${filtering}`] ?? 'unknown', `${mapping}/${filtering}`);
      assert.equal(
        isHardNat({ mapping, isPublic: false }),
        mapping === 'address-dependent' || mapping === 'address-and-port-dependent',
      );
      assert.equal(isHardNat({ mapping, isPublic: true }), false);
    }
  }
  assert.equal(natTypeFrom('endpoint-independent', 'endpoint-independent', true), 'open');
  assert.equal(natTypeFrom('unknown', 'unknown', true), 'open');
  // A firewall, no NAT:
  assert.equal(natTypeFrom('endpoint-independent', 'address-and-port-dependent', true), 'port-restricted-cone');
});

// ---------------------------------------------------------------- detectNat over loopback

test('detectNat on loopback against an RFC 5780 server: endpoint-independent, open, public', async (t) => {
  const srv = new StunServer({
    primary: { address: '127.0.0.1', port: 0 },
    alternate: { address: '127.0.0.2', port: 0 },
  });
  await srv.listen();
  t.after(() => srv.close());
  const r = await detectNat(srv.address(), { timeoutMs: 2000, probeTimeoutMs: 1000 });
  assert.equal(r.mapping, 'endpoint-independent');
  assert.equal(r.filtering, 'endpoint-independent');
  assert.equal(r.isPublic, true);
  assert.equal(r.natType, 'open');
  assert.equal(r.publicAddress.address, '127.0.0.1');
  assert.deepEqual(r.localAddress, r.publicAddress);
  assert.deepEqual(r.otherAddress, srv.endpoints[3]);
  assert.equal(r.hairpinning, undefined);
  assert.deepEqual(r.notes, []);
  assert.equal(isHardNat(r), false);
});

test('detectNat, single-address server: public address only, mapping/filtering unknown, in notes', async (t) => {
  const srv = new StunServer({ primary: { address: '127.0.0.1', port: 0 } });
  await srv.listen();
  t.after(() => srv.close());
  const r = await detectNat(srv.address(), { timeoutMs: 2000 });
  assert.equal(r.mapping, 'unknown');
  assert.equal(r.filtering, 'unknown');
  assert.equal(r.isPublic, true);
  assert.equal(r.natType, 'open');
  assert.match(r.notes.join('\n'), /OTHER-ADDRESS/);
});

test('detectNat uses a given socket for the mapping tests and leaves it open', async (t) => {
  const srv = new StunServer({
    primary: { address: '127.0.0.1', port: 0 },
    alternate: { address: '127.0.0.2', port: 0 },
  });
  await srv.listen();
  t.after(() => srv.close());
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => s.close(() => r())));
  const r = await detectNat(srv.address(), { socket: s, probeTimeoutMs: 1000 });
  assert.deepEqual(r.publicAddress, { address: '127.0.0.1', port: s.address().port, family: 'IPv4' });
  assert.equal(s.address().port, r.localAddress.port); // still open: address() would throw on a closed socket
});

test('detectNat rejects with a clear timeout when the server is silent', async (t) => {
  const silent = dgram.createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => silent.close(() => r())));
  await assert.rejects(detectNat({ address: '127.0.0.1', port: silent.address().port }, { timeoutMs: 300 }), {
    code: 'ESTUNTIMEOUT',
    message: /timed out after 300 ms/,
  });
});

/**
 * An RFC 5780 server on 127.0.0.1/127.0.0.2 that plays a NAT: it reports the
 * mapped address `mapFor` picks per receiving socket and withholds changed-address
 * responses that `filters` says the NAT would drop. This drives detectNat's
 * real I/O through every classification without network namespaces.
 */
async function natSimulator(
  t: Ctx,
  mapFor: (client: Endpoint, socketIndex: number) => Endpoint,
  filters: (change: { changeIp: boolean; changePort: boolean }) => boolean,
): Promise<Endpoint> {
  const sockets: dgram.Socket[] = [];
  const bind = async (address: string, port: number) => {
    const s = dgram.createSocket('udp4');
    sockets.push(s);
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(port, address, () => resolve());
    });
    return s.address().port;
  };
  t.after(() => Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r())))));
  const p = await bind('127.0.0.1', 0);
  const a = await bind('127.0.0.1', 0);
  await bind('127.0.0.2', p);
  await bind('127.0.0.2', a);
  const responder = new StunResponder({
    primary: { address: '127.0.0.1', port: p },
    alternate: { address: '127.0.0.2', port: a },
  });
  sockets.forEach((s, i) =>
    s.on('message', (msg, rinfo) => {
      const out = responder.handle(msg, rinfo, i);
      if (!out) return;
      const req = decodeStun(msg)!;
      const change = {
        changeIp: req.changeRequest?.changeIp ?? false,
        changePort: req.changeRequest?.changePort ?? false,
      };
      if ((change.changeIp || change.changePort) && filters(change)) return;
      const res = decodeStun(out.reply)!;
      if (res.cls === StunClass.SuccessResponse) {
        const mapped = mapFor({ address: rinfo.address, port: rinfo.port, family: 'IPv4' }, i);
        res.xorMappedAddress = mapped;
        res.mappedAddress = mapped;
      }
      sockets[out.via].send(encodeStun({ ...res, attributes: [] }), out.to.port, out.to.address);
    }),
  );
  return { address: '127.0.0.1', port: p, family: 'IPv4' };
}

const shifted = (c: Endpoint, by: number): Endpoint => ({ ...c, port: (c.port + by) % 65536 });

test('detectNat through simulated NATs: each mapping/filtering class and the derived type', async (t) => {
  const cases: {
    name: string;
    mapFor: (c: Endpoint, i: number) => Endpoint;
    filters: (ch: { changeIp: boolean; changePort: boolean }) => boolean;
    mapping: Behavior;
    filtering: Behavior;
    natType: NatType;
  }[] = [
    {
      name: 'full cone',
      mapFor: (c) => shifted(c, 7),
      filters: () => false,
      mapping: 'endpoint-independent',
      filtering: 'endpoint-independent',
      natType: 'full-cone',
    },
    {
      name: 'restricted cone',
      mapFor: (c) => shifted(c, 7),
      filters: (ch) => ch.changeIp,
      mapping: 'endpoint-independent',
      filtering: 'address-dependent',
      natType: 'restricted-cone',
    },
    {
      name: 'port-restricted cone',
      mapFor: (c) => shifted(c, 7),
      filters: () => true,
      mapping: 'endpoint-independent',
      filtering: 'address-and-port-dependent',
      natType: 'port-restricted-cone',
    },
    // Socket index 0/1 are on the primary IP, 2/3 on the alternate.
    {
      name: 'address-dependent',
      mapFor: (c, i) => shifted(c, 100 + (i >> 1)),
      filters: () => true,
      mapping: 'address-dependent',
      filtering: 'address-and-port-dependent',
      natType: 'symmetric',
    },
    {
      name: 'symmetric',
      mapFor: (c, i) => shifted(c, 100 + i),
      filters: () => true,
      mapping: 'address-and-port-dependent',
      filtering: 'address-and-port-dependent',
      natType: 'symmetric',
    },
  ];
  for (const c of cases) {
    const server = await natSimulator(t, c.mapFor, c.filters);
    const r = await detectNat(server, { timeoutMs: 2000, probeTimeoutMs: 300, hairpin: false });
    assert.equal(r.isPublic, false, c.name);
    assert.equal(r.mapping, c.mapping, c.name);
    assert.equal(r.filtering, c.filtering, c.name);
    assert.equal(r.natType, c.natType, c.name);
    assert.equal(isHardNat(r), c.natType === 'symmetric', c.name);
  }
});

test('detectNat hairpin test: true when the public address reaches the socket, false when it does not', async (t) => {
  // 127.0.0.3 is not an interface address (so: behind NAT) yet is local, so a wildcard-bound socket receives it.
  const hairpins = await natSimulator(
    t,
    (c) => ({ ...c, address: '127.0.0.3' }),
    () => false,
  );
  const r1 = await detectNat(hairpins, { probeTimeoutMs: 400 });
  assert.equal(r1.isPublic, false);
  assert.equal(r1.hairpinning, true);
  const nowhere = await natSimulator(
    t,
    (c) => shifted(c, 7),
    () => false,
  );
  const r2 = await detectNat(nowhere, { probeTimeoutMs: 400 });
  assert.equal(r2.hairpinning, false);
});
