import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE_DATAGRAM_IPV4,
  BASE_DATAGRAM_IPV6,
  BLACK_HOLE_LOSSES,
  ERROR_RETRY_MS,
  MAX_PROBES,
  MIN_DATAGRAM_IPV4,
  PROBE_TIMEOUT_MS,
  PmtuSearch,
  RAISE_TIMER_MS,
  datagramForMtu,
  mtuForDatagram,
  type PmtuChange,
  type PmtuEvent,
  type PmtuOutput,
} from '../src/punch/pmtu.js';

/**
 * A simulated path: datagrams up to `limit` bytes arrive (acks come back
 * after `rttMs`), bigger ones vanish without a trace. Drives the search by
 * its own nextWakeAt, as an owner would, in virtual time.
 */
class SimPath {
  now = 0;
  probes: number[] = [];
  changes: PmtuChange[] = [];
  private acks: { at: number; id: number; size: number }[] = [];
  constructor(
    readonly s: PmtuSearch,
    public limit: number,
    readonly rttMs = 20,
  ) {}

  apply(out: PmtuOutput): PmtuOutput {
    if (out.change) this.changes.push(out.change);
    if (out.probe) {
      this.probes.push(out.probe.size);
      if (out.probe.size <= this.limit) this.acks.push({ at: this.now + this.rttMs, ...out.probe });
    }
    return out;
  }

  send(ev: PmtuEvent): PmtuOutput {
    return this.apply(this.s.handle(ev, this.now));
  }

  /** Runs until virtual time `until`, or until `stop()` holds after an event (bounded). */
  runUntil(until: number, stop?: () => boolean): void {
    for (let i = 0; i < 10_000; i++) {
      if (stop?.()) return;
      this.acks.sort((a, b) => a.at - b.at);
      const ack = this.acks[0];
      const wake = this.s.nextWakeAt;
      const next = Math.min(ack?.at ?? Infinity, wake ?? Infinity);
      if (next > until) {
        this.now = until;
        return;
      }
      this.now = Math.max(this.now, next);
      if (ack && ack.at <= this.now) {
        this.acks.shift();
        this.send({ type: 'probe-acked', id: ack.id, size: ack.size });
      } else {
        this.send({ type: 'tick' });
      }
    }
    assert.fail('simulation did not settle in 10000 steps');
  }

  /** Runs until the search is complete (or `maxMs` passed). */
  settle(maxMs = 120_000): void {
    const end = this.now + maxMs;
    this.runUntil(end, () => this.s.state === 'search-complete');
  }
}

const v4 = (mtu: number) => datagramForMtu(mtu, 'IPv4');
const v6 = (mtu: number) => datagramForMtu(mtu, 'IPv6');

test('sizes: exact IP/UDP header arithmetic', () => {
  assert.equal(v4(1500), 1472);
  assert.equal(v6(1500), 1452);
  assert.equal(v6(1280), 1232);
  assert.equal(BASE_DATAGRAM_IPV6, 1232);
  assert.equal(BASE_DATAGRAM_IPV4, 1200);
  assert.equal(MIN_DATAGRAM_IPV4, 548);
  assert.equal(mtuForDatagram(1472), 1500);
  assert.equal(mtuForDatagram(1452, 'IPv6'), 1500);
});

test('disabled until started: base size, no probes, no timers', () => {
  const s = new PmtuSearch();
  assert.equal(s.state, 'disabled');
  assert.equal(s.maxDatagram, BASE_DATAGRAM_IPV4);
  assert.equal(s.nextWakeAt, null);
  const out = s.handle({ type: 'tick' }, 5000);
  assert.equal(out.probe, null);
  assert.equal(out.change, null);
});

test('1500-byte IPv4 path: base, then every listed size up to 1472, one probe each', () => {
  const s = new PmtuSearch();
  const p = new SimPath(s, v4(1500));
  const first = p.send({ type: 'start' });
  assert.equal(s.state, 'base');
  assert.deepEqual(first.probe && first.probe.size, 1200);
  p.settle();
  assert.equal(s.state, 'search-complete');
  assert.equal(s.maxDatagram, 1472);
  assert.deepEqual(p.probes, [1200, 1252, 1372, 1392, 1422, 1432, 1452, 1464, 1472]);
  assert.deepEqual(
    p.changes.map((c) => [c.old, c.new, c.reason]),
    [
      [1200, 1252, 'probe-acked'],
      [1252, 1372, 'probe-acked'],
      [1372, 1392, 'probe-acked'],
      [1392, 1422, 'probe-acked'],
      [1422, 1432, 'probe-acked'],
      [1432, 1452, 'probe-acked'],
      [1452, 1464, 'probe-acked'],
      [1464, 1472, 'probe-acked'],
    ],
  );
  // 9 round trips, no timeout.
  assert.ok(p.now < PROBE_TIMEOUT_MS, `took ${p.now} ms`);
  // Nothing left but the raise timer.
  assert.equal(s.probing, null);
  assert.equal(s.nextWakeAt, p.now + RAISE_TIMER_MS);
});

test('1500-byte IPv6 path: base 1232, ends at 1452', () => {
  const s = new PmtuSearch({ family: 'IPv6' });
  const p = new SimPath(s, v6(1500));
  p.send({ type: 'start' });
  p.settle();
  assert.equal(p.probes[0], 1232);
  assert.equal(s.maxDatagram, 1452);
  assert.equal(Math.max(...p.probes), 1452);
});

test('1280 path: stops at 1252 after MAX_PROBES lost probes of the next size', () => {
  const s = new PmtuSearch();
  const p = new SimPath(s, v4(1280));
  p.send({ type: 'start' });
  p.settle();
  assert.equal(s.state, 'search-complete');
  assert.equal(s.maxDatagram, 1252);
  assert.deepEqual(p.probes, [1200, 1252, ...Array<number>(MAX_PROBES).fill(1372)]);
  assert.equal(s.snapshot().failedAt, 1372);
  // Data never went above what passed.
  assert.ok(p.changes.every((c) => c.new <= 1252));
});

test('a path below base: base fails, error state uses the minimum, base is retried and recovers', () => {
  const s = new PmtuSearch();
  const p = new SimPath(s, 1000); // e.g. a peer that does not answer, or a tiny MTU
  p.send({ type: 'start' });
  p.runUntil(MAX_PROBES * PROBE_TIMEOUT_MS + 10);
  assert.equal(s.state, 'error');
  assert.equal(s.maxDatagram, MIN_DATAGRAM_IPV4);
  assert.deepEqual(p.changes.at(-1), { old: 1200, new: 548, reason: 'base-failed', state: 'error' });
  p.limit = v4(1500);
  p.runUntil(p.now + ERROR_RETRY_MS + 100);
  assert.notEqual(s.state, 'error');
  p.settle();
  assert.equal(s.maxDatagram, 1472);
  assert.ok(p.changes.some((c) => c.reason === 'base-confirmed' && c.new === 1200));
});

/** A search completed on a 1500 path, at 1472. */
function at1472(opts = {}): { s: PmtuSearch; p: SimPath } {
  const s = new PmtuSearch(opts);
  const p = new SimPath(s, v4(1500));
  p.send({ type: 'start' });
  p.settle();
  assert.equal(s.maxDatagram, 1472);
  p.changes.length = 0;
  p.probes.length = 0;
  return { s, p };
}

test('black hole: big data lost while small acks pass shrinks to base at once, then finds 1252', () => {
  const { s, p } = at1472();
  p.limit = v4(1280);
  p.send({ type: 'data-acked', size: 29 }); // a heartbeat ack before
  for (let i = 0; i < BLACK_HOLE_LOSSES - 1; i++) {
    p.now += 50;
    assert.equal(p.send({ type: 'data-lost', size: 1472 }).change, null, `loss ${i + 1} is not enough`);
  }
  p.now += 50;
  p.send({ type: 'data-acked', size: 29 }); // small still passes
  p.now += 50;
  const out = p.send({ type: 'data-lost', size: 1472 });
  assert.deepEqual(out.change, { old: 1472, new: 1200, reason: 'black-hole', state: 'base' });
  assert.equal(s.maxDatagram, 1200);
  assert.equal(out.probe?.size, 1200, 'base is confirmed with a probe');
  p.settle();
  assert.equal(s.maxDatagram, 1252);
  // An ordinary search from base (congestion loses data the same way, so the
  // size lost is not ruled out): it climbs until a size's probes all fail.
  assert.deepEqual(p.probes, [1200, 1252, ...Array<number>(MAX_PROBES).fill(1372)]);
});

test('black hole verdict from a burst of congestion loss: the search climbs back to the size in use', () => {
  const { s, p } = at1472();
  p.send({ type: 'data-acked', size: 29 });
  for (let i = 0; i < BLACK_HOLE_LOSSES; i++) {
    p.now += 50;
    p.send({ type: 'data-lost', size: 1472 }); // the path carries 1472 (p.limit): the losses were a queue overflowing
    if (i === 0) p.send({ type: 'data-acked', size: 29 });
  }
  assert.equal(s.maxDatagram, 1200, 'the verdict shrinks at once');
  p.settle();
  assert.equal(s.maxDatagram, 1472, 'and its own probes bring it back before any raise timer');
});

test('black hole: evidence must be consecutive, big, and beside small acks that pass', () => {
  // A big ack in the middle resets the count.
  {
    const { s, p } = at1472();
    for (let i = 0; i < 2 * BLACK_HOLE_LOSSES; i++) {
      p.now += 10;
      p.send({ type: 'data-acked', size: 29 });
      p.send({ type: 'data-lost', size: 1472 });
      if (i % (BLACK_HOLE_LOSSES - 1) === BLACK_HOLE_LOSSES - 2) p.send({ type: 'data-acked', size: 1472 });
    }
    assert.equal(s.maxDatagram, 1472, 'random loss of big datagrams among acked big ones is no black hole');
  }
  // Nothing passes at all: a dead path, not a small MTU.
  {
    const { s, p } = at1472();
    for (let i = 0; i < 3 * BLACK_HOLE_LOSSES; i++) {
      p.now += 10;
      p.send({ type: 'data-lost', size: 1472 });
    }
    assert.equal(s.maxDatagram, 1472);
    // ...until a small datagram is acknowledged after the losses.
    p.now += 10;
    assert.equal(p.send({ type: 'data-acked', size: 100 }).change?.reason, 'black-hole');
  }
  // Small datagrams lost do not count.
  {
    const { s, p } = at1472();
    for (let i = 0; i < 3 * BLACK_HOLE_LOSSES; i++) {
      p.now += 10;
      p.send({ type: 'data-lost', size: 1200 });
      p.send({ type: 'data-acked', size: 29 });
    }
    assert.equal(s.maxDatagram, 1472);
  }
});

test('raise timer: a 1280 path whose bottleneck goes away grows back within the raise timer', () => {
  const s = new PmtuSearch();
  const p = new SimPath(s, v4(1280));
  p.send({ type: 'start' });
  p.settle();
  assert.equal(s.maxDatagram, 1252);
  const doneAt = p.now;
  p.limit = v4(1500);
  p.runUntil(doneAt + RAISE_TIMER_MS - 1);
  assert.equal(s.maxDatagram, 1252, 'no probing before the raise timer');
  assert.equal(s.state, 'search-complete');
  p.runUntil(doneAt + RAISE_TIMER_MS + 1000);
  assert.equal(s.maxDatagram, 1472);
  assert.ok(doneAt + RAISE_TIMER_MS + 1000 < 2 * 60_000 + doneAt, 'within 2 minutes');
});

test('raise timer is configurable; a raise on an unchanged path costs MAX_PROBES probes and changes nothing', () => {
  const s = new PmtuSearch({ raiseTimerMs: 5000 });
  const p = new SimPath(s, v4(1400));
  p.send({ type: 'start' });
  p.settle();
  assert.equal(s.maxDatagram, 1372);
  p.probes.length = 0;
  p.changes.length = 0;
  p.runUntil(p.now + 5000 + MAX_PROBES * PROBE_TIMEOUT_MS + 100);
  assert.deepEqual(p.probes, Array<number>(MAX_PROBES).fill(1392));
  assert.deepEqual(p.changes, []);
  assert.equal(s.state, 'search-complete');
});

test('ICMP too big: lowers to the hint at once and validates it with a probe of that size', () => {
  const { s, p } = at1472();
  p.limit = v4(1400);
  const out = p.send({ type: 'ptb', mtu: 1400 });
  assert.deepEqual(out.change, { old: 1472, new: 1372, reason: 'ptb', state: 'searching' });
  assert.equal(out.probe?.size, 1372);
  p.settle();
  assert.equal(s.maxDatagram, 1372);
  assert.deepEqual(p.probes, [1372], 'nothing above the hint is probed before the raise timer');
});

test('lying ICMP too big (path smaller still): the validation probe fails, back to base, then search', () => {
  const { s, p } = at1472();
  p.limit = v4(1280);
  p.send({ type: 'ptb', mtu: 1400 });
  assert.equal(s.maxDatagram, 1372);
  p.runUntil(p.now + MAX_PROBES * PROBE_TIMEOUT_MS + 10);
  assert.ok(p.changes.some((c) => c.reason === 'probe-failed' && c.new === 1200));
  p.settle();
  assert.equal(s.maxDatagram, 1252);
});

test('ICMP too big for a probe in flight: that size fails at once and the hinted size is probed next', () => {
  const s = new PmtuSearch();
  // MTU 1470 is in no list: without the ICMP the search would end at 1432 (MTU 1460).
  const p = new SimPath(s, v4(1470));
  p.send({ type: 'start' });
  p.runUntil(10_000, () => s.probing === 1452);
  assert.equal(s.probing, 1452);
  assert.equal(s.maxDatagram, 1432);
  const out = p.send({ type: 'ptb', mtu: 1470 });
  assert.equal(out.change, null, 'the size in use is not affected');
  assert.equal(out.probe?.size, 1442);
  p.settle();
  assert.equal(s.maxDatagram, 1442);
  assert.equal(p.probes.filter((x) => x === 1452).length, 1, 'no retries of the size the ICMP refused');
  assert.ok(p.now < PROBE_TIMEOUT_MS, 'no probe timeout was waited for');
});

test('upper bound: never probes above --max-datagram, and reaches it exactly', () => {
  const s = new PmtuSearch({ maxDatagram: 1400 });
  const p = new SimPath(s, v4(1500));
  p.send({ type: 'start' });
  p.settle();
  assert.equal(s.maxDatagram, 1400);
  assert.ok(Math.max(...p.probes) <= 1400);
  assert.equal(p.probes.at(-1), 1400);
  // An ICMP hint above the bound is no reason to probe above it either.
  p.runUntil(p.now + RAISE_TIMER_MS + 10_000);
  assert.ok(Math.max(...p.probes) <= 1400);
  // A bound below base: base is the bound, nothing is probed above it.
  const low = new PmtuSearch({ maxDatagram: 1100 });
  const q = new SimPath(low, v4(1500));
  q.send({ type: 'start' });
  q.settle();
  assert.equal(low.maxDatagram, 1100);
  assert.deepEqual(q.probes, [1100]);
});

test('bad inputs are ignored without a change: stale acks, absurd ICMP, nonsense sizes and times', () => {
  const { s, p } = at1472();
  const before = s.snapshot();
  const bad: PmtuEvent[] = [
    { type: 'probe-acked', id: 999_999, size: 1472 }, // never sent
    { type: 'probe-acked', id: 1, size: 1472 }, // id of a probe long answered
    { type: 'ptb', mtu: 0 },
    { type: 'ptb', mtu: 67 },
    { type: 'ptb', mtu: 70_000 },
    { type: 'ptb', mtu: Number.NaN },
    { type: 'ptb', mtu: 1400.5 },
    { type: 'ptb', mtu: 1500 }, // not below anything in use
    { type: 'data-lost', size: -1 },
    { type: 'data-acked', size: Number.POSITIVE_INFINITY },
    { type: 'nonsense' } as unknown as PmtuEvent,
  ];
  for (const ev of bad) {
    const out = p.send(ev);
    assert.equal(out.change, null, JSON.stringify(ev));
    assert.equal(out.probe, null, JSON.stringify(ev));
    assert.ok(out.ignored, `${JSON.stringify(ev)} must be reported as ignored`);
  }
  assert.equal(s.handle({ type: 'tick' }, Number.NaN).ignored, 'now is not a finite number');
  assert.deepEqual(s.snapshot(), before);
  assert.equal(s.ignoredInputs, bad.length + 1);

  // An ack whose id is in flight but whose size is not the probe's.
  const t = new PmtuSearch();
  const first = t.handle({ type: 'start' }, 0).probe!;
  assert.ok(t.handle({ type: 'probe-acked', id: first.id, size: first.size + 1 }, 1).ignored);
  assert.equal(t.state, 'base');
  assert.equal(t.handle({ type: 'probe-acked', id: first.id, size: first.size }, 2).ignored, null);
  assert.equal(t.state, 'searching');
  // IPv6: an MTU below 1280 is impossible.
  const six = new PmtuSearch({ family: 'IPv6' });
  const q = new SimPath(six, v6(1500));
  q.send({ type: 'start' });
  q.settle();
  assert.ok(q.send({ type: 'ptb', mtu: 1000 }).ignored);
  assert.equal(six.maxDatagram, 1452);
});

test('an ack of an earlier try of the same size counts', () => {
  const s = new PmtuSearch();
  const a = s.handle({ type: 'start' }, 0).probe!;
  const b = s.handle({ type: 'tick' }, PROBE_TIMEOUT_MS).probe!;
  assert.equal(b.size, a.size);
  assert.notEqual(b.id, a.id);
  assert.equal(s.handle({ type: 'probe-acked', id: a.id, size: a.size }, PROBE_TIMEOUT_MS + 5).ignored, null);
  assert.equal(s.state, 'searching');
});

test('stop returns to disabled at base; start again searches from base', () => {
  const { s, p } = at1472();
  const out = p.send({ type: 'stop' });
  assert.deepEqual(out.change, { old: 1472, new: 1200, reason: 'stop', state: 'disabled' });
  assert.equal(s.nextWakeAt, null);
  assert.ok(p.send({ type: 'ptb', mtu: 1300 }).ignored);
  p.send({ type: 'start' });
  p.settle();
  assert.equal(s.maxDatagram, 1472);
});

test('options are checked', () => {
  assert.throws(() => new PmtuSearch({ maxDatagram: 100 }), RangeError);
  assert.throws(() => new PmtuSearch({ maxDatagram: 70_000 }), RangeError);
  assert.throws(() => new PmtuSearch({ probeTimeoutMs: 0 }), RangeError);
  assert.throws(() => new PmtuSearch({ maxProbes: Number.NaN }), RangeError);
  assert.throws(() => new PmtuSearch({ family: 'IPX' as 'IPv4' }), RangeError);
  assert.deepEqual(new PmtuSearch({ maxDatagram: 1300 }).candidates, [1252, 1300]);
});
