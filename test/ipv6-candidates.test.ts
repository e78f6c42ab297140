/**
 * IPv6 (issue 19), the pure parts: address literals in HOST:PORT, the IPv6
 * address classes, which host candidates a side announces, which of the
 * peer's candidates it probes, and the path preference (lowest RTT, IPv6 on
 * a tie).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type os from 'node:os';
import { firstPerFamily, formatHostPort, ipFamily, parseHostPort, sameV6Prefix, v6Class } from '../src/util/addr.js';
import { hostCandidates, probeable, untranslated, type LocalReach } from '../src/punch/candidates.js';
import { betterPath, withIPv6 } from '../src/punch/strategy.js';
import { describeIPv6 } from '../src/stun/nat.js';
import { PeerConfig, RendezvousConfig } from '../src/config/schema.js';

test('HOST:PORT accepts bracketed IPv6 literals and writes IPv6 endpoints in brackets', () => {
  assert.deepEqual(parseHostPort('[2001:db8::1]:7000'), { host: '2001:db8::1', port: 7000 });
  assert.deepEqual(parseHostPort('[::]:7000'), { host: '::', port: 7000 });
  assert.deepEqual(parseHostPort('203.0.113.10:7000'), { host: '203.0.113.10', port: 7000 });
  assert.throws(() => parseHostPort('[2001:db8::zz]:7000'), /bad IPv6 host/);
  assert.throws(() => parseHostPort('[2001:db8::1]:70000'), /port must be/);
  assert.equal(formatHostPort({ host: '2001:db8::1', port: 7000 }), '[2001:db8::1]:7000');
  assert.equal(formatHostPort({ address: '203.0.113.1', port: 9 }), '203.0.113.1:9');
});

test('config files take bracketed IPv6 literals wherever HOST:PORT goes', () => {
  assert.ok(PeerConfig.safeParse({ server: '[2001:db8::10]:7000' }).success);
  assert.ok(PeerConfig.safeParse({ server: '[2001:db8::10]:7000,203.0.113.10:7000' }).success);
  assert.ok(RendezvousConfig.safeParse({ listen: '[::]:7000', udp: '[::]:7000' }).success);
  assert.equal(PeerConfig.safeParse({ server: '[2001:db8::zz]:7000' }).success, false);
  assert.ok(RendezvousConfig.safeParse({ udp: '203.0.113.10:7000,[2001:db8::10]:7000' }).success);
  assert.equal(RendezvousConfig.safeParse({ udp: '203.0.113.10:7000,203.0.113.11:7000' }).success, false);
});

test('IPv6 address classes and families', () => {
  assert.equal(v6Class('2001:db8:a::10'), 'global');
  assert.equal(v6Class('2a00:1450::1'), 'global');
  assert.equal(v6Class('fd12:3456:789a:1::5'), 'ula');
  assert.equal(v6Class('fe80::1'), 'link-local');
  assert.equal(v6Class('fe80::1%eth0'), 'link-local');
  assert.equal(v6Class('::1'), 'other');
  assert.equal(v6Class('ff02::1'), 'other');
  assert.equal(v6Class('::ffff:192.0.2.1'), 'other');
  assert.equal(v6Class('192.0.2.1'), 'other');
  assert.equal(ipFamily('::ffff:192.0.2.1'), 'IPv4');
  assert.equal(ipFamily('2001:db8::1'), 'IPv6');
  assert.equal(ipFamily('example.com'), null);
  assert.ok(sameV6Prefix('fd00:1:2:3::a', 'fd00:1:2:3::b'));
  assert.ok(!sameV6Prefix('fd00:1:2:3::a', 'fd00:1:2:4::a'));
  assert.ok(!sameV6Prefix('10.0.0.1', '10.0.0.2'));
});

function iface(address: string, family: 'IPv4' | 'IPv6', internal = false): os.NetworkInterfaceInfo {
  const base = { address, netmask: '', mac: '00:00:00:00:00:00', internal, cidr: null };
  return family === 'IPv4' ? { ...base, family } : { ...base, family, scopeid: 0 };
}

const IFACES: NodeJS.Dict<os.NetworkInterfaceInfo[]> = {
  lo: [iface('127.0.0.1', 'IPv4', true), iface('::1', 'IPv6', true)],
  eth0: [
    iface('10.0.1.10', 'IPv4'),
    iface('fe80::1', 'IPv6'),
    iface('fd00:1:2:3::10', 'IPv6'),
    iface('2001:db8:a::10', 'IPv6'),
  ],
};

test('host candidates: IPv4 first; IPv6 global then ULA, never link-local, with the IPv6 socket port', () => {
  const c = hostCandidates(4000, false, IFACES, 4001);
  assert.deepEqual(
    c.map((x) => `${x.family} ${formatHostPort(x)}`),
    ['IPv4 10.0.1.10:4000', 'IPv6 [2001:db8:a::10]:4001', 'IPv6 [fd00:1:2:3::10]:4001'],
  );
  assert.ok(c.every((x) => x.kind === 'host'));
  // Without an IPv6 socket: exactly the IPv4 candidates of before.
  assert.deepEqual(
    hostCandidates(4000, false, IFACES).map((x) => x.address),
    ['10.0.1.10'],
  );
  // Loopback only on request (tests on one host), both families.
  assert.deepEqual(
    hostCandidates(4000, true, IFACES, 4001).map((x) => x.address),
    ['127.0.0.1', '10.0.1.10', '2001:db8:a::10', '::1', 'fd00:1:2:3::10'],
  );
  // A rendezvous on 127.0.0.1: IPv4 loopback only, as before IPv6 candidates existed.
  assert.deepEqual(
    hostCandidates(4000, true, IFACES, 4001, false).map((x) => x.address),
    ['127.0.0.1', '10.0.1.10', '2001:db8:a::10', 'fd00:1:2:3::10'],
  );
  // At most four IPv6 host candidates (privacy addresses pile up), global ones kept first.
  const many = {
    eth0: [
      ...[1, 2, 3].map((i) => iface(`fd00::${i}`, 'IPv6')),
      ...[1, 2, 3, 4, 5].map((i) => iface(`2001:db8::${i}`, 'IPv6')),
    ],
  };
  const v6 = hostCandidates(1, false, many, 2);
  assert.equal(v6.length, 4);
  assert.ok(v6.every((x) => v6Class(x.address) === 'global'));
});

test('probeable: a family needs its socket; ULA only on a shared /64; link-local never', () => {
  const dual: LocalReach = { ipv4: true, ipv6: true, v6Addresses: ['fd00:1:2:3::10', '2001:db8:a::10'] };
  const v4only: LocalReach = { ipv4: true, ipv6: false, v6Addresses: [] };
  const v6only: LocalReach = { ipv4: false, ipv6: true, v6Addresses: ['2001:db8:a::10'] };
  const c = (address: string) => ({ address, family: address.includes(':') ? ('IPv6' as const) : ('IPv4' as const) });
  assert.ok(probeable(c('203.0.113.2'), dual));
  assert.ok(probeable(c('2001:db8:b::10'), dual));
  assert.ok(probeable(c('fd00:1:2:3::99'), dual), 'ULA on our LAN');
  assert.ok(!probeable(c('fd00:9:9:9::99'), dual), 'ULA of another site');
  assert.ok(!probeable(c('fe80::2'), dual));
  assert.ok(!probeable(c('ff02::1'), dual));
  assert.ok(!probeable(c('2001:db8:b::10'), v4only), 'no IPv6 socket');
  assert.ok(!probeable(c('203.0.113.2'), v6only), 'no IPv4 socket');
  assert.ok(!probeable(c('::1'), dual), 'loopback only when we have it');
  assert.ok(probeable(c('::1'), { ...dual, v6Addresses: ['::1'] }));
});

test('path preference: a clearly lower RTT wins either way; IPv6 wins a tie, IPv4 never replaces IPv6 on one', () => {
  const v4 = (rttMs: number) => ({ address: '203.0.113.2', rttMs });
  const v6 = (rttMs: number) => ({ address: '2001:db8:b::10', rttMs });
  assert.ok(betterPath(v6(20), v4(20)), 'tie: IPv6 replaces IPv4');
  assert.ok(!betterPath(v4(20), v6(20)), 'tie: IPv4 does not replace IPv6');
  assert.ok(betterPath(v6(30), v4(25)), 'within the noise: still a tie');
  assert.ok(!betterPath(v6(200), v4(20)), 'a much slower IPv6 path does not win');
  assert.ok(betterPath(v4(20), v6(200)), 'a much faster IPv4 path wins');
  assert.ok(betterPath({ address: '10.0.1.11', rttMs: 5 }, v6(5)), 'a LAN address still beats a public one');
  assert.ok(!betterPath(v4(20), v4(20)), 'same family, tie: stay');
});

test('withIPv6: no IPv4 plan but an IPv6 pair runs a plain round over IPv6 alone; any other plan is kept', () => {
  const none = { kind: 'none', cause: 'both symmetric', reason: 'both symmetric; relay' } as const;
  assert.deepEqual(withIPv6(none, true), { kind: 'plain', ipv6Only: true });
  assert.deepEqual(withIPv6(none, false), none, 'no IPv6 pair: stay on the relay, as before');
  assert.deepEqual(withIPv6({ kind: 'open-sockets' }, true), { kind: 'open-sockets' });
  assert.deepEqual(withIPv6({ kind: 'plain' }, true), { kind: 'plain' });
});

test('STUN per family: the first address of each family; untranslated IPv6 is "no NAT"', () => {
  assert.deepEqual(firstPerFamily(['2001:db8::10', '203.0.113.10', '2001:db8::11']), {
    IPv6: '2001:db8::10',
    IPv4: '203.0.113.10',
  });
  assert.deepEqual(firstPerFamily(['::ffff:203.0.113.10']), { IPv4: '203.0.113.10' });
  assert.deepEqual(firstPerFamily(['rdv.example']), {});
  const own = [{ address: '2001:db8:a::10', port: 4001 }];
  assert.ok(untranslated({ address: '2001:db8:a::10', port: 4001 }, own));
  assert.ok(!untranslated({ address: '2001:db8:ffff::1', port: 4001 }, own), 'NPTv6 / NAT66');
  assert.ok(!untranslated({ address: '2001:db8:a::10', port: 5000 }, own), 'port rewritten');
});

test("describeIPv6: 'no NAT, firewall: stateful' is an answer", () => {
  assert.deepEqual(describeIPv6({ isPublic: true, filtering: 'address-and-port-dependent' }), {
    nat: 'none',
    firewall: 'stateful',
    summary: 'no NAT, firewall: stateful',
  });
  assert.equal(describeIPv6({ isPublic: true, filtering: 'endpoint-independent' }).summary, 'no NAT, firewall: open');
  assert.equal(describeIPv6({ isPublic: false, filtering: 'unknown' }).summary, 'NAT66, firewall: unknown');
});
