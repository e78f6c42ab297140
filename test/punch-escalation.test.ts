// The pure "learn from evidence" functions of src/punch/strategy.ts (issue 25):
// peer-reflexive evidence, the escalation ladder, memory per pair of NATs,
// backoff, and that both peers of a session reach complementary decisions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addEvidence,
  forgetPunches,
  mappingEvidence,
  nextPunchPlan,
  pairKey,
  planPunch,
  punchLadder,
  recordPunch,
  stageName,
  withEvidence,
  PUNCH_BUDGET,
  type PunchMemory,
  type PunchPeer,
  type PunchSide,
} from '../src/punch/strategy.js';
import type { Candidate, NatInfo } from '../src/wire/control.js';

const host = (address: string, port: number): Candidate => ({ address, port, family: 'IPv4', kind: 'host' });
const srflx = (address: string, port: number): Candidate => ({ address, port, family: 'IPv4', kind: 'srflx' });

const EIM: NatInfo = { mapping: 'endpoint-independent', filtering: 'address-and-port-dependent' };
const SYM: NatInfo = { mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent' };
const ADM: NatInfo = { mapping: 'address-dependent', filtering: 'address-and-port-dependent' };
const UNK: NatInfo = { mapping: 'unknown', filtering: 'unknown' };

test('mappingEvidence: another port on the srflx IP from the main socket proves endpoint-dependent mapping', () => {
  const sent = [srflx('198.51.100.7', 40000), host('10.0.2.10', 40000)];
  assert.deepEqual(mappingEvidence(sent, { address: '198.51.100.7', port: 51234 }), {
    kind: 'endpoint-dependent',
    advertised: { address: '198.51.100.7', port: 40000 },
  });
  // v4-mapped source text is the same address
  assert.equal(mappingEvidence(sent, { address: '::ffff:198.51.100.7', port: 51234 }).kind, 'endpoint-dependent');
});

test('mappingEvidence: what is NOT evidence', () => {
  const sent = [srflx('198.51.100.7', 40000), host('10.0.2.10', 40000)];
  // exactly a candidate
  assert.equal(mappingEvidence(sent, { address: '198.51.100.7', port: 40000 }).kind, 'expected');
  assert.equal(mappingEvidence(sent, { address: '10.0.2.10', port: 40000 }).kind, 'expected');
  // a LAN address that is not a candidate (another interface of a peer on our LAN)
  assert.equal(mappingEvidence(sent, { address: '10.0.2.11', port: 40000 }).kind, 'none');
  assert.equal(mappingEvidence(sent, { address: '192.168.1.4', port: 1 }).kind, 'none');
  // carrier-grade NAT shared space is not public either
  assert.equal(mappingEvidence(sent, { address: '100.100.1.2', port: 1 }).kind, 'none');
  // another public IP: a multi-homed peer or a non-paired pool, not proof about this mapping
  const other = mappingEvidence(sent, { address: '203.0.113.9', port: 40000 });
  assert.equal(other.kind, 'none');
  assert.match((other as { reason: string }).reason, /no server-reflexive candidate has/);
  // only a host candidate vs a public address: the packet simply went through a NAT
  const hostOnly = mappingEvidence([host('10.0.2.10', 40000)], { address: '198.51.100.7', port: 40000 });
  assert.equal(hostOnly.kind, 'none');
  assert.match((hostOnly as { reason: string }).reason, /host candidate proves nothing/);
  // a public host candidate (no NAT) and another port from the same IP: not a srflx, so no claim
  assert.equal(mappingEvidence([host('198.51.100.7', 40000)], { address: '198.51.100.7', port: 40001 }).kind, 'none');
  // birthday sockets are other sockets: other ports are expected
  assert.equal(mappingEvidence(sent, { address: '198.51.100.7', port: 51234 }, { extraSockets: true }).kind, 'none');
});

test('evidence is monotone and upgrades a NAT to (at least) address-dependent', () => {
  let e = {};
  e = addEvidence(e, 'peer', { kind: 'none', reason: 'x' });
  assert.deepEqual(e, {});
  e = addEvidence(e, 'peer', { kind: 'endpoint-dependent', advertised: { address: '1.2.3.4', port: 1 } });
  assert.deepEqual(e, { peer: true });
  e = addEvidence(e, 'peer', { kind: 'expected' });
  assert.deepEqual(e, { peer: true });
  assert.deepEqual(withEvidence(EIM, true), { mapping: 'address-dependent', filtering: 'address-and-port-dependent' });
  assert.deepEqual(withEvidence(undefined, true), { mapping: 'address-dependent', filtering: 'unknown' });
  assert.equal(withEvidence(SYM, true), SYM);
  assert.equal(withEvidence(EIM, false), EIM);
});

test('punchLadder: both hard -> relay only; one hard -> birthday on it; neither -> plain, birthday both ways', () => {
  assert.deepEqual(punchLadder(SYM, ADM).map(stageName), ['relay']);
  assert.deepEqual(punchLadder(SYM, EIM).map(stageName), ['birthday:visitor', 'relay']);
  assert.deepEqual(punchLadder(UNK, SYM).map(stageName), ['birthday:server', 'relay']);
  assert.deepEqual(punchLadder(EIM, EIM).map(stageName), ['plain', 'birthday:visitor', 'birthday:server', 'relay']);
  // untested mapping looks harder than a tested endpoint-independent one
  assert.deepEqual(punchLadder(EIM, UNK).map(stageName), ['plain', 'birthday:server', 'birthday:visitor', 'relay']);
  assert.deepEqual(punchLadder(UNK, EIM).map(stageName), ['plain', 'birthday:visitor', 'birthday:server', 'relay']);
  assert.deepEqual(punchLadder(undefined, undefined).map(stageName), [
    'plain',
    'birthday:visitor',
    'birthday:server',
    'relay',
  ]);
});

const NATS: (NatInfo | undefined)[] = [undefined, UNK, EIM, ADM, SYM];

test('the first round of a new pair is exactly planPunch (nothing changes until something failed)', () => {
  for (const mine of NATS) {
    for (const peer of NATS) {
      for (const role of ['visitor', 'server'] as const) {
        const d = nextPunchPlan(new Map(), { role, nat: mine }, { nat: peer });
        const want = planPunch(mine, peer);
        assert.equal(d.plan.kind, want.kind, `${role} ${mine?.mapping} vs ${peer?.mapping}`);
        assert.equal(d.delayMs, 0);
      }
    }
  }
});

/** Runs the loop on both peers with shared NAT observations; returns the stages both chose, round by round. */
function run(visitorNat: NatInfo | undefined, serverNat: NatInfo | undefined, rounds: number, succeedAt?: string) {
  let vm: PunchMemory = new Map();
  let sm: PunchMemory = new Map();
  const v: PunchSide = { role: 'visitor', nat: visitorNat, publicIp: '198.51.100.1' };
  const s: PunchSide = { role: 'server', nat: serverNat, publicIp: '198.51.100.2' };
  const asPeer = (x: PunchSide): PunchPeer => ({ nat: x.nat, publicIp: x.publicIp });
  const out: { v: string; s: string; vPlan: string; sPlan: string; delay: number; attemptMs: number }[] = [];
  for (let i = 0; i < rounds; i++) {
    const dv = nextPunchPlan(vm, v, asPeer(s));
    const ds = nextPunchPlan(sm, s, asPeer(v));
    assert.equal(dv.key, ds.key, 'both peers key the pair the same way');
    assert.equal(dv.delayMs, ds.delayMs);
    out.push({
      v: stageName(dv.stage),
      s: stageName(ds.stage),
      vPlan: dv.plan.kind,
      sPlan: ds.plan.kind,
      delay: dv.delayMs,
      attemptMs: dv.attemptMs,
    });
    const ok = stageName(dv.stage) === succeedAt;
    vm = recordPunch(vm, dv, ok, i);
    sm = recordPunch(sm, ds, ok, i);
    if (ok) break;
  }
  return out;
}

// Birthday on the side that looks hard, then the other, then the relay; both peers agree.
test('escalation: a plain failure is not repeated', () => {
  const r = run(UNK, UNK, 6);
  assert.deepEqual(
    r.map((x) => x.v),
    ['plain', 'birthday:visitor', 'birthday:server', 'relay', 'relay', 'relay'],
  );
  assert.deepEqual(
    r.map((x) => x.s),
    r.map((x) => x.v),
  );
  // complementary roles: who opens sockets, who sprays
  assert.deepEqual(
    r.map((x) => `${x.vPlan}/${x.sPlan}`),
    ['plain/plain', 'open-sockets/spray-ports', 'spray-ports/open-sockets', 'none/none', 'none/none', 'none/none'],
  );
  // backoff grows with failures (1 s doubling), budget per round unchanged
  assert.deepEqual(
    r.map((x) => x.delay),
    [0, 1000, 2000, 4000, 8000, 16000],
  );
  assert.deepEqual(
    r.map((x) => x.attemptMs),
    [
      PUNCH_BUDGET.plainMs,
      PUNCH_BUDGET.birthdayMs,
      PUNCH_BUDGET.birthdayMs,
      PUNCH_BUDGET.plainMs,
      PUNCH_BUDGET.plainMs,
      PUNCH_BUDGET.plainMs,
    ],
  );
});

test('symmetric x cone known from one-address STUN: birthday at once, relay after it, never plain', () => {
  const r = run(SYM, EIM, 3);
  assert.deepEqual(
    r.map((x) => `${x.v}:${x.vPlan}/${x.sPlan}`),
    ['birthday:visitor:open-sockets/spray-ports', 'relay:none/none', 'relay:none/none'],
  );
  const rr = run(EIM, SYM, 2);
  assert.deepEqual(
    rr.map((x) => `${x.vPlan}/${x.sPlan}`),
    ['spray-ports/open-sockets', 'none/none'],
  );
  assert.deepEqual(
    run(SYM, SYM, 2).map((x) => `${x.vPlan}/${x.sPlan}`),
    ['none/none', 'none/none'],
  );
});

test('success clears the pair: the next round starts from the top without delay', () => {
  const r = run(UNK, UNK, 6, 'birthday:visitor');
  assert.deepEqual(
    r.map((x) => x.v),
    ['plain', 'birthday:visitor'],
  );
  let m: PunchMemory = new Map();
  const me: PunchSide = { role: 'visitor', nat: UNK };
  const d1 = nextPunchPlan(m, me, { nat: UNK });
  m = recordPunch(m, d1, false, 0);
  const d2 = nextPunchPlan(m, me, { nat: UNK });
  m = recordPunch(m, d2, true, 1);
  assert.equal(m.size, 0);
  const d3 = nextPunchPlan(m, me, { nat: UNK });
  assert.equal(d3.stage.kind, 'plain');
  assert.equal(d3.delayMs, 0);
});

// A changed NAT or network starts afresh; an unchanged one does not re-run a failed plan.
test('memory is per pair of NAT observations', () => {
  const me: PunchSide = { role: 'server', nat: EIM, publicIp: '198.51.100.2' };
  const peer: PunchPeer = { nat: UNK, publicIp: '198.51.100.1' };
  let m: PunchMemory = new Map();
  const d1 = nextPunchPlan(m, me, peer);
  assert.equal(d1.stage.kind, 'plain');
  m = recordPunch(m, d1, false, 10);
  // same pair: escalates
  assert.equal(stageName(nextPunchPlan(m, me, peer).stage), 'birthday:visitor');
  // the visitor moved to another network: a new key, plain again
  assert.equal(nextPunchPlan(m, me, { ...peer, publicIp: '203.0.113.50' }).stage.kind, 'plain');
  // the visitor's NAT got classified: a new key too (and the known plan for it)
  assert.equal(stageName(nextPunchPlan(m, me, { ...peer, nat: SYM }).stage), 'birthday:visitor');
  assert.equal(nextPunchPlan(m, me, { ...peer, nat: SYM }).plan.kind, 'spray-ports');
  // the key is the same string seen from either side
  assert.equal(
    pairKey(me, peer),
    pairKey({ role: 'visitor', nat: peer.nat, publicIp: peer.publicIp }, { nat: me.nat, publicIp: me.publicIp }),
  );
  // forgetting old records
  assert.equal(forgetPunches(m, 20, 100).size, 1);
  assert.equal(forgetPunches(m, 1000, 100).size, 0);
  // bounded size, oldest dropped
  let big: PunchMemory = new Map();
  for (let i = 0; i < 10; i++) big = recordPunch(big, { key: `k${i}`, stage: { kind: 'plain' } }, false, i, 4);
  assert.deepEqual([...big.keys()], ['k6', 'k7', 'k8', 'k9']);
});

test('evidence steers the ladder: a peer seen mapping per destination becomes the hard side, on both peers', () => {
  // Plain failed for an untested pair; during it the visitor saw the server's probes from another port.
  const v: PunchSide = { role: 'visitor', nat: UNK, publicIp: '198.51.100.1' };
  const s: PunchSide = { role: 'server', nat: UNK, publicIp: '198.51.100.2' };
  const ev = addEvidence(
    {},
    'peer',
    mappingEvidence([srflx('198.51.100.2', 4000)], { address: '198.51.100.2', port: 4999 }),
  );
  const dv = nextPunchPlan(new Map(), v, { nat: s.nat, publicIp: s.publicIp }, ev);
  assert.equal(stageName(dv.stage), 'birthday:server');
  assert.equal(dv.plan.kind, 'spray-ports');
  // The server learns the same fact about itself (the visitor's ProbeAck says how it was seen): same stage.
  const ds = nextPunchPlan(new Map(), s, { nat: v.nat, publicIp: v.publicIp }, { mine: true });
  assert.equal(ds.key, dv.key);
  assert.equal(stageName(ds.stage), 'birthday:server');
  assert.equal(ds.plan.kind, 'open-sockets');
  // Evidence on both sides: nothing can be punched.
  assert.equal(nextPunchPlan(new Map(), v, { nat: UNK }, { mine: true, peer: true }).plan.kind, 'none');
});
