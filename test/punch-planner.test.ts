import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PunchMemoryStore, PunchPlanner } from '../src/punch/planner.js';
import type { Candidate, NatInfo } from '../src/wire/control.js';
import { createLogger } from '../src/util/log.js';

const quiet = createLogger({ level: 'error', format: 'json' });
const unknown: NatInfo = { mapping: 'unknown', filtering: 'unknown' };
const mine: Candidate[] = [
  { address: '192.168.1.2', port: 5000, family: 'IPv4', kind: 'host' },
  { address: '198.51.100.7', port: 5000, family: 'IPv4', kind: 'srflx' },
];
const theirs: Candidate[] = [{ address: '203.0.113.40', port: 6000, family: 'IPv4', kind: 'srflx' }];

function planner(role: 'visitor' | 'server', store = new PunchMemoryStore()) {
  return new PunchPlanner({
    role,
    store,
    localNat: () => unknown,
    localCandidates: () => mine,
    peerNat: () => unknown,
    log: quiet,
    sid: 'test',
  });
}

test('a failed plain round escalates to birthday, the two sides taking complementary parts, then to the relay', () => {
  const v = planner('visitor');
  const s = planner('server');
  assert.equal(v.decide(theirs).plan.kind, 'plain');
  assert.equal(s.decide(theirs).plan.kind, 'plain');
  const seen: string[] = [];
  for (let round = 0; round < 3; round++) {
    v.failed();
    s.failed();
    const dv = v.decide(theirs);
    const ds = s.decide(theirs);
    seen.push(`${dv.plan.kind}/${ds.plan.kind}`);
    assert.ok(dv.delayMs > 0, 'a retry after a failure waits');
  }
  assert.deepEqual(seen, ['open-sockets/spray-ports', 'spray-ports/open-sockets', 'none/none']);
});

// A new session for the same pair does not re-run a failed plan; a success clears the memory.
test('the memory of failed plans is per process', () => {
  const store = new PunchMemoryStore();
  const first = planner('visitor', store);
  first.decide(theirs);
  first.failed();
  assert.equal(planner('visitor', store).decide(theirs).plan.kind, 'open-sockets');
  const second = planner('visitor', store);
  second.decide(theirs);
  second.succeeded();
  assert.equal(planner('visitor', store).decide(theirs).plan.kind, 'plain');
});

// Being seen from another port than our STUN mapping proves our NAT hard.
test('evidence about our own NAT: birthday with us as the hard side', () => {
  const v = planner('visitor');
  v.selfSeenAs('198.51.100.7:5000', false);
  assert.equal(v.decide(theirs).plan.kind, 'plain', 'seen as our own candidate: no evidence');
  v.selfSeenAs('198.51.100.7:41234', true);
  assert.equal(v.decide(theirs).plan.kind, 'plain', 'from a birthday socket: no evidence');
  v.selfSeenAs('garbage', false);
  v.selfSeenAs('198.51.100.7:41234', false);
  assert.equal(v.decide(theirs).plan.kind, 'open-sockets');
});

test("the peer's probe from another port than its candidate proves the peer hard: we spray", () => {
  const s = planner('server');
  s.peerSeenAs(theirs, { address: '10.0.0.9', port: 1234 }, false);
  assert.equal(s.decide(theirs).plan.kind, 'plain', 'a private address proves nothing');
  s.peerSeenAs(theirs, { address: '203.0.113.40', port: 6001 }, false);
  assert.equal(s.decide(theirs).plan.kind, 'spray-ports');
});
