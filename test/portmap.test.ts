/** Port mapping, pure parts: /proc/net/route, the PCP / NAT-PMP / UPnP codecs, epochs, mapped candidates and plans. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hexToIPv4, parseRouteTable } from '../src/portmap/gateway.js';
import { encodePcpMap, newNonce, parsePcpResponse } from '../src/portmap/pcp.js';
import { encodeNatPmpMap, parseNatPmpResponse } from '../src/portmap/natpmp.js';
import { parseDeviceDescription, parseSoapResponse, parseSsdpResponse, urlOnHost } from '../src/portmap/upnp.js';
import { epochLost } from '../src/portmap/mapper.js';
import { withMappedCandidate } from '../src/punch/candidates.js';
import { nextPunchPlan, punchLadder } from '../src/punch/strategy.js';
import { z } from 'zod';
import { Endpoint, isMappedCandidate, parseControl, type Candidate } from '../src/wire/control.js';

const ROUTE = `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
`;

test('default gateway from /proc/net/route: lowest metric, up + gateway flags, destination and mask 0', () => {
  assert.equal(hexToIPv4('010200C0'), '192.0.2.1');
  assert.equal(hexToIPv4('zz'), null);
  assert.deepEqual(parseRouteTable(ROUTE), { gateway: '192.0.2.1', iface: 'eth0', metric: 100 });
  assert.equal(
    parseRouteTable(
      ROUTE.split('\n')
        .filter((l) => !l.includes('00000000\t0'))
        .join('\n'),
    ),
    null,
  );
  // A route that is down (flags 0002) or not via a gateway (0001) is no default route.
  assert.equal(parseRouteTable('h\neth0\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\n'), null);
  assert.equal(parseRouteTable('h\neth0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\n'), null);
  assert.equal(parseRouteTable(''), null);
  assert.equal(parseRouteTable('garbage\n\x00\x01 \t'), null);
});

test('PCP MAP: request layout, response parsing, a NAT-PMP server answering UNSUPP_VERSION', () => {
  const nonce = newNonce();
  const req = encodePcpMap({ clientIp: '10.0.1.10', internalPort: 4000, suggestedPort: 4001, lifetime: 7200, nonce });
  assert.equal(req.length, 60);
  assert.deepEqual([req[0], req[1], req.readUInt32BE(4)], [2, 1, 7200]);
  assert.deepEqual([...req.subarray(18, 24)], [0xff, 0xff, 10, 0, 1, 10]);
  assert.equal(req[36], 17);
  assert.deepEqual([req.readUInt16BE(40), req.readUInt16BE(42)], [4000, 4001]);
  const res = Buffer.from(req);
  res[1] = 0x81;
  res[3] = 0;
  res.writeUInt32BE(99, 8);
  res.fill(0, 12, 24);
  res.set([0xff, 0xff, 100, 128, 0, 2], 54);
  const r = parsePcpResponse(res);
  assert.equal(r.kind, 'map');
  if (r.kind === 'map') {
    assert.equal(r.externalIp, '100.128.0.2');
    assert.equal(r.epoch, 99);
    assert.ok(r.nonce.equals(nonce));
  }
  assert.equal(parsePcpResponse(Buffer.from([0, 129, 0, 1, 0, 0, 0, 5])).kind, 'unsupported-version');
  assert.equal(parsePcpResponse(req).kind, 'error', 'a request is not a response');
  assert.equal(parsePcpResponse(Buffer.alloc(1)).kind, 'error');
});

test('NAT-PMP: map request layout and both responses', () => {
  assert.deepEqual([...encodeNatPmpMap(4000, 4000, 60)], [0, 1, 0, 0, 0x0f, 0xa0, 0x0f, 0xa0, 0, 0, 0, 60]);
  const ext = parseNatPmpResponse(Buffer.from([0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 1]));
  assert.deepEqual(ext, { kind: 'external', result: 0, epoch: 9, externalIp: '203.0.113.1' });
  const map = parseNatPmpResponse(Buffer.from([0, 129, 0, 2, 0, 0, 0, 9, 0x0f, 0xa0, 0, 0, 0, 0, 0, 0]));
  assert.equal(map.kind === 'map' && map.result, 2);
  assert.equal(
    parseNatPmpResponse(Buffer.from([0, 129, 0, 0, 0, 0, 0, 9])).kind,
    'error',
    'success must carry the mapping',
  );
});

test('UPnP: SSDP answer, device description (IGDv2 preferred, URLBase), SOAP result and fault', () => {
  const a = parseSsdpResponse('HTTP/1.1 200 OK\r\nLocation: http://10.0.1.1:5000/d.xml\r\nST: x\r\n\r\n');
  assert.deepEqual(a, { location: 'http://10.0.1.1:5000/d.xml', st: 'x', usn: '' });
  assert.ok('error' in parseSsdpResponse('NOTIFY * HTTP/1.1\r\n\r\n'));
  const desc =
    '<root><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>' +
    '<controlURL>/v1</controlURL></service>' +
    '<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>' +
    '<controlURL>/v2</controlURL></service></root>';
  assert.deepEqual(parseDeviceDescription(desc, 'http://10.0.1.1:5000/d.xml'), {
    serviceType: 'urn:schemas-upnp-org:service:WANIPConnection:2',
    controlUrl: 'http://10.0.1.1:5000/v2',
  });
  assert.ok('error' in parseDeviceDescription('<root/>', 'http://10.0.1.1/'));
  const ok = parseSoapResponse(
    200,
    '<u:GetExternalIPAddressResponse><NewExternalIPAddress>1.2.3.4</NewExternalIPAddress>' +
      '</u:GetExternalIPAddressResponse>',
    ['NewExternalIPAddress'],
  );
  assert.deepEqual(ok, { ok: true, fields: { NewExternalIPAddress: '1.2.3.4' } });
  const fault = parseSoapResponse(
    500,
    '<s:Fault><UPnPError><errorCode>718</errorCode><errorDescription>Conflict</errorDescription></UPnPError></s:Fault>',
    [],
  );
  assert.deepEqual(fault, { ok: false, code: 718, description: 'Conflict' });
  assert.ok(urlOnHost('http://10.0.1.1:5000/x', '10.0.1.1'));
  assert.ok(!urlOnHost('http://10.0.1.2:5000/x', '10.0.1.1'), 'only the gateway');
  assert.ok(!urlOnHost('https://10.0.1.1/x', '10.0.1.1'));
});

test('epochLost: RFC 6887 8.5 (a restarted server, a clock that runs as ours does)', () => {
  const prev = { epoch: 1000, atMs: 0 };
  assert.equal(epochLost(prev, 1060, 60_000), false);
  assert.equal(epochLost(prev, 5, 60_000), true, 'went back: restarted');
  assert.equal(epochLost(prev, 1001, 600_000), true, 'stood still while we waited 10 min: restarted');
  assert.equal(epochLost(prev, 1000, 1000), false);
});

test('mapped candidates: first, replace the last one, sent as srflx + portmap, parsed by old and new schemas', () => {
  const base: Candidate[] = [
    { address: '198.51.100.7', port: 5000, family: 'IPv4', kind: 'srflx' },
    { address: '10.0.1.10', port: 4000, family: 'IPv4', kind: 'host' },
  ];
  const m1 = withMappedCandidate(base, { protocol: 'pcp', externalIp: '198.51.100.7', externalPort: 4000 });
  assert.deepEqual(m1[0], { address: '198.51.100.7', port: 4000, family: 'IPv4', kind: 'srflx', portmap: 'pcp' });
  assert.equal(m1.length, 3);
  const m2 = withMappedCandidate(m1, { protocol: 'upnp', externalIp: '198.51.100.7', externalPort: 4100 });
  assert.equal(m2.filter(isMappedCandidate).length, 1);
  assert.equal(m2[0].port, 4100);
  assert.deepEqual(withMappedCandidate(m2, null), base, 'a lost mapping leaves the rest');
  // On the wire: the kind old peers know, plus a field they strip.
  const frame = Buffer.from(JSON.stringify({ type: 'punch', sid: 's', delayMs: 0, candidates: m1 }));
  const parsed = parseControl(frame);
  assert.ok(parsed.ok && parsed.msg.type === 'punch' && isMappedCandidate(parsed.msg.candidates[0]));
  const oldSchema = Endpoint.extend({ kind: z.enum(['host', 'srflx', 'prflx']) }); // before issue 20
  assert.ok(oldSchema.safeParse(m1[0]).success, 'a peer without `portmap` reads it as srflx');
});

test('plans: a side with a port mapping is never hard; both peers agree on plain', () => {
  const sym = { mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent' } as const;
  // Without a mapping: both symmetric -> relay.
  assert.equal(punchLadder(sym, sym)[0].kind, 'relay');
  const memory = new Map();
  const visitor = nextPunchPlan(memory, { role: 'visitor', nat: sym }, { nat: sym, mapped: true });
  const server = nextPunchPlan(memory, { role: 'server', nat: sym, mapped: true }, { nat: sym });
  assert.equal(visitor.plan.kind, 'plain');
  assert.equal(server.plan.kind, 'plain');
  assert.equal(visitor.key, server.key, 'the same memory key on both sides');
  // After plain failed: birthday with the unmapped side hard, on both sides.
  const failed = new Map([[visitor.key, { failed: ['plain'], failures: 1, at: 0 }]]);
  assert.equal(
    nextPunchPlan(failed, { role: 'visitor', nat: sym }, { nat: sym, mapped: true }).plan.kind,
    'open-sockets',
  );
  assert.equal(
    nextPunchPlan(failed, { role: 'server', nat: sym, mapped: true }, { nat: sym }).plan.kind,
    'spray-ports',
  );
  // Both mapped: plain.
  assert.equal(
    nextPunchPlan(memory, { role: 'visitor', nat: sym, mapped: true }, { nat: sym, mapped: true }).plan.kind,
    'plain',
  );
});
