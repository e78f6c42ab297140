// Issue 21: port allocation classification (src/stun/allocation.ts), the
// predict plan's probes (src/punch/predict.ts) and where prediction sits in the
// escalation ladder (src/punch/strategy.ts). All pure.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyAllocation, MAX_SEQUENTIAL_GAP, type AllocationSample } from '../src/stun/allocation.js';
import { allocationTargets, natAllocation } from '../src/punch/candidates.js';
import {
  newPredictRun,
  predictNextPort,
  predictTick,
  subRoundProbes,
  PREDICT_MAX_PROBES,
  PREDICT_RESEND_MS,
  PREDICT_SUBROUND_MS,
  PREDICT_WINDOW,
  type PredictPlan,
} from '../src/punch/predict.js';
import { nextPunchPlan, punchLadder, stageName, recordPunch, type PunchMemory } from '../src/punch/strategy.js';
import { NatInfo } from '../src/wire/control.js';

const S1 = { address: '198.51.100.1', port: 7000 };
const S2 = { address: '198.51.100.1', port: 7001 };
const S3 = { address: '198.51.100.2', port: 7001 };
const S4 = { address: '198.51.100.2', port: 7000 };
const samples = (ports: (number | null)[], at = (i: number) => i): AllocationSample[] =>
  ports.map((p, i) => ({ server: [S1, S2, S3, S4][i], mappedPort: p, at: at(i) }));

test('classifyAllocation: preserving, sequential with its step, random, unknown', () => {
  assert.deepEqual(classifyAllocation(samples([5000, 5000]), 5000), { allocation: 'preserving' });
  // One-address rendezvous: two samples are enough.
  const seq = classifyAllocation(samples([20000, 20001]), 40000);
  assert.equal(seq.allocation, 'sequential');
  assert.equal(seq.step, 1);
  assert.equal(seq.lastPort, 20001);
  assert.equal(classifyAllocation(samples([20000, 20002, 20004, 20006]), 1).step, 2);
  // Another host took a port between two of ours: the smallest gap is the step.
  assert.equal(classifyAllocation(samples([20000, 20001, 20003, 20004]), 1).step, 1);
  assert.equal(classifyAllocation(samples([20000, 20000 + MAX_SEQUENTIAL_GAP]), 1).allocation, 'sequential');
  assert.equal(classifyAllocation(samples([20000, 20001 + MAX_SEQUENTIAL_GAP]), 1).allocation, 'random');
  assert.equal(classifyAllocation(samples([41234, 17003]), 1).allocation, 'random');
  // Going backwards is no sequence.
  assert.equal(classifyAllocation(samples([20001, 20000]), 1).allocation, 'random');
  assert.equal(classifyAllocation(samples([20000, 20001, 50000]), 1).allocation, 'random');
  // One answer, or one non-preserved port for everything (endpoint-independent): nothing to compare.
  assert.equal(classifyAllocation(samples([20000, null]), 1).allocation, 'unknown');
  assert.equal(classifyAllocation(samples([6000, 6000]), 5000).allocation, 'unknown');
  assert.equal(classifyAllocation([], 1).allocation, 'unknown');
});

test('classifyAllocation: order by time, repeated destinations ignored, rate over a long span', () => {
  const shuffled: AllocationSample[] = [
    { server: S2, mappedPort: 20001, at: 2 },
    { server: S1, mappedPort: 20000, at: 1 },
    { server: S1, mappedPort: 20000, at: 3 }, // the same mapping again: not a new sample
    { server: S3, mappedPort: 20002, at: 4 },
  ];
  const r = classifyAllocation(shuffled, 1);
  assert.equal(r.allocation, 'sequential');
  assert.equal(r.lastPort, 20002);
  assert.equal(r.rate, undefined, 'a few ms say nothing about other hosts');
  // 1 s apart, 10 ports taken by others in between (gaps of 11 and 1 with step 1).
  const slow = classifyAllocation(
    samples([20000, 20011, 20012], (i) => i * 500),
    1,
  );
  assert.equal(slow.step, 1);
  assert.equal(slow.rate, 10);
});

test('natAllocation and allocationTargets', () => {
  assert.deepEqual(natAllocation({ allocation: 'random' }), { allocation: 'random' });
  assert.deepEqual(natAllocation({ allocation: 'sequential', step: 1, lastPort: 9, lastAt: 3 }), {
    allocation: 'sequential',
    step: 1,
    lastPort: 9,
  });
  // One address, a second port: one more destination.
  assert.deepEqual(allocationTargets(S1, { address: S1.address, port: 7001 }), [S2]);
  // RFC 5780 grid: all three others.
  assert.deepEqual(allocationTargets(S1, S3), [S2, S3, S4]);
});

test('NatInfo: the prediction fields parse, and a message without them still does', () => {
  const full = NatInfo.parse({
    mapping: 'address-and-port-dependent',
    allocation: 'sequential',
    step: 1,
    lastPort: 20001,
  });
  assert.equal(full.lastPort, 20001);
  const old = NatInfo.parse({ mapping: 'endpoint-independent', filtering: 'unknown' });
  assert.equal(old.allocation, undefined);
  // An unknown future field is stripped, not rejected.
  assert.equal(NatInfo.safeParse({ mapping: 'unknown', somethingNew: 1 }).success, true);
});

test('predictNextPort: last port + step, adjusted by the rate for the age', () => {
  assert.equal(predictNextPort({ lastPort: 20001, step: 1 }, 5000), 20002);
  assert.equal(predictNextPort({ lastPort: 20001, step: 2 }, 0), 20003);
  assert.equal(predictNextPort({ lastPort: 20001, step: 1, rate: 20 }, 1000), 20022);
  assert.equal(predictNextPort({ step: 1 }, 0), null);
});

const plan = (role: PredictPlan['role'], first = 30000, step = 1): PredictPlan => ({
  kind: 'predict',
  role,
  address: '203.0.113.1',
  first,
  step,
  why: '',
});

/**
 * A model of two sequential NATs meeting: the visitor's k-th sweep probe leaves
 * from its slot dV + k (plus others' ports taken meanwhile), the server's j-th
 * fan socket from its slot dS + j; the hole opens when one flow is the other's reverse.
 */
function meets(dV: number, dS: number): boolean {
  const v = { first: 1000, step: 1 };
  const s = { first: 5000, step: 1 };
  const sweep = subRoundProbes(plan('sweep', s.first), 0).ports; // targets on the server
  const fan = subRoundProbes(plan('fan', v.first), 0).fan!; // one target on the visitor
  const vFlows = sweep.map((target, k) => ({ from: v.first + dV + k, to: target }));
  const sFlows = Array.from({ length: fan.sockets }, (_, j) => ({ from: s.first + dS + j, to: fan.port }));
  return vFlows.some((a) => sFlows.some((b) => a.from === b.to && a.to === b.from));
}

test('sweep x fan: the flows meet for every drift the window tolerates, and not beyond', () => {
  for (let dV = 0; dV < PREDICT_WINDOW; dV++) {
    for (let dS = 0; dV + dS < PREDICT_WINDOW; dS++) assert.ok(meets(dV, dS), `dV ${dV} dS ${dS}`);
  }
  assert.equal(meets(PREDICT_WINDOW, 0), false);
  assert.equal(meets(30, PREDICT_WINDOW - 30), false);
});

test('predictTick: first burst whole, resends on time, sub-rounds by the clock, total budget', () => {
  const p = plan('sweep');
  let run = newPredictRun(0);
  let t = predictTick(p, run, 0);
  assert.equal(t.act.burst, true);
  assert.equal(t.act.ports.length, PREDICT_WINDOW);
  assert.equal(t.act.ports[0], 30000);
  assert.equal(t.act.candidates, false);
  run = t.run;
  t = predictTick(p, run, 50);
  assert.equal(t.act.ports.length, 0, 'not due yet');
  t = predictTick(p, t.run, PREDICT_RESEND_MS);
  assert.equal(t.act.burst, false);
  assert.deepEqual(t.act.ports, subRoundProbes(p, 0).ports);
  t = predictTick(p, t.run, PREDICT_SUBROUND_MS);
  assert.equal(t.act.burst, true);
  assert.equal(t.act.subRound, 1);
  assert.equal(t.act.ports[0], 30000 + PREDICT_WINDOW);
  // Run a whole 15 s round at 50 ms ticks: the budget holds.
  run = newPredictRun(0);
  let sent = 0;
  for (let now = 0; now <= 15_000; now += 50) {
    const x = predictTick(plan('window'), run, now);
    run = x.run;
    sent += x.act.ports.length;
  }
  assert.ok(sent <= PREDICT_MAX_PROBES, `${sent} probes`);
  assert.equal(sent, run.sent);
  // Fan: the sockets count as probes.
  const f = predictTick(plan('fan'), newPredictRun(0), 0);
  assert.deepEqual(f.act.fan, { port: 30000 + PREDICT_WINDOW - 1, sockets: PREDICT_WINDOW });
  assert.equal(f.run.sent, PREDICT_WINDOW);
});

const SEQ = (lastPort: number): NatInfo => ({
  mapping: 'address-and-port-dependent',
  filtering: 'address-and-port-dependent',
  allocation: 'sequential',
  step: 1,
  lastPort,
});
const RAND: NatInfo = {
  mapping: 'address-and-port-dependent',
  filtering: 'address-and-port-dependent',
  allocation: 'random',
};
const CONE: NatInfo = {
  mapping: 'endpoint-independent',
  filtering: 'address-and-port-dependent',
  allocation: 'preserving',
};
const OLD_CONE: NatInfo = { mapping: 'endpoint-independent', filtering: 'address-and-port-dependent' };

test('punchLadder: prediction for sequential NATs, relay against a random one, old peers unchanged', () => {
  assert.deepEqual(punchLadder(SEQ(1), SEQ(2)).map(stageName), ['predict:both', 'relay']);
  assert.deepEqual(punchLadder(SEQ(1), CONE).map(stageName), ['predict:visitor', 'birthday:visitor', 'relay']);
  assert.deepEqual(punchLadder(CONE, SEQ(1)).map(stageName), ['predict:server', 'birthday:server', 'relay']);
  const sr = punchLadder(SEQ(1), RAND);
  assert.equal(sr.length, 1);
  assert.equal(sr[0].kind, 'relay');
  assert.match(sr[0].kind === 'relay' ? sr[0].cause : '', /in sequence, the other at random/);
  // An old peer (no allocation field) walks the old ladder: so do we.
  assert.deepEqual(punchLadder(SEQ(1), OLD_CONE).map(stageName), ['birthday:visitor', 'relay']);
  assert.deepEqual(punchLadder(RAND, CONE).map(stageName), ['birthday:visitor', 'relay']);
});

test('nextPunchPlan: complementary predict roles on both peers; a failed prediction escalates', () => {
  const visitor = { role: 'visitor' as const, nat: SEQ(20010), publicIp: '203.0.113.1' };
  const server = { role: 'server' as const, nat: SEQ(21020), publicIp: '203.0.113.2' };
  const dv = nextPunchPlan(new Map(), visitor, { nat: server.nat, publicIp: server.publicIp });
  const ds = nextPunchPlan(new Map(), server, { nat: visitor.nat, publicIp: visitor.publicIp });
  assert.equal(dv.key, ds.key);
  assert.deepEqual(dv.plan.kind === 'predict' && [dv.plan.role, dv.plan.address, dv.plan.first], [
    'sweep',
    '203.0.113.2',
    21021,
  ]);
  assert.deepEqual(ds.plan.kind === 'predict' && [ds.plan.role, ds.plan.first], ['fan', 20011]);
  assert.equal(dv.attemptMs, 15_000);
  assert.match(dv.reason, /port prediction, both sides sequential \(sweep\)/);
  // Sequential x cone: the cone side probes a window, the sequential side its candidates.
  const cone = { role: 'server' as const, nat: CONE, publicIp: '203.0.113.2' };
  const w = nextPunchPlan(new Map(), cone, { nat: visitor.nat, publicIp: visitor.publicIp });
  assert.deepEqual(w.plan.kind === 'predict' && [w.plan.role, w.plan.first], ['window', 20011]);
  const c = nextPunchPlan(new Map(), visitor, { nat: CONE, publicIp: cone.publicIp });
  assert.equal(c.plan.kind === 'predict' && c.plan.role, 'candidates');
  // The prediction failed: the same pair goes to the birthday stage next.
  let mem: PunchMemory = new Map();
  mem = recordPunch(mem, c, false, 0);
  assert.equal(nextPunchPlan(mem, visitor, { nat: CONE, publicIp: cone.publicIp }).plan.kind, 'open-sockets');
  // Without the peer's public IP there is nothing to aim at: plain probing.
  assert.equal(nextPunchPlan(new Map(), cone, { nat: visitor.nat }).plan.kind, 'plain');
});
