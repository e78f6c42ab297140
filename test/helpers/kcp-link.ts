/**
 * Two Kcp endpoints joined in memory with a simulated clock, for tests that
 * drive KCP's timing (RTO, probes, dead link) in milliseconds of real time.
 */
import assert from 'node:assert/strict';
import { Kcp, KCP_OVERHEAD, decodeSegmentHeader, kcpErrorName } from '../../src/kcp/index.js';
import type { SegmentHeader } from '../../src/kcp/index.js';

/** Every segment header in one datagram. */
export function segments(d: Uint8Array): SegmentHeader[] {
  const out: SegmentHeader[] = [];
  let p = 0;
  while (p + KCP_OVERHEAD <= d.length) {
    const h = decodeSegmentHeader(d, p)!;
    out.push(h);
    p += KCP_OVERHEAD + h.len;
  }
  return out;
}

export type Filter = (d: Buffer, from: 'a' | 'b') => boolean;

/**
 * Two Kcp endpoints joined by a simulated link with a fixed one-way delay.
 * `filter` returning false drops a datagram; `log` records every datagram sent.
 */
export class SimLink {
  now = 0;
  readonly a: Kcp;
  readonly b: Kcp;
  filter: Filter = () => true;
  readonly log: { from: 'a' | 'b'; at: number; segs: SegmentHeader[] }[] = [];
  private inflight: { at: number; to: 'a' | 'b'; d: Buffer }[] = [];

  constructor(
    conv: number,
    readonly delay = 5,
    opts: { stream?: boolean } = {},
  ) {
    this.a = new Kcp(conv, (d) => this.carry(d, 'a'), opts);
    this.b = new Kcp(conv, (d) => this.carry(d, 'b'), opts);
  }

  private carry(d: Buffer, from: 'a' | 'b'): void {
    const copy = Buffer.from(d); // d is only valid during the call
    this.log.push({ from, at: this.now, segs: segments(copy) });
    if (!this.filter(copy, from)) return;
    this.inflight.push({ at: this.now + this.delay, to: from === 'a' ? 'b' : 'a', d: copy });
  }

  /** Advances the clock by dt ms: updates both ends and delivers what is due. */
  step(dt = 1): void {
    this.now += dt;
    this.a.update(this.now);
    this.b.update(this.now);
    const due = this.inflight.filter((x) => x.at <= this.now);
    this.inflight = this.inflight.filter((x) => x.at > this.now);
    for (const x of due) {
      const rc = (x.to === 'a' ? this.a : this.b).input(x.d);
      assert.equal(rc, 0, `input rejected a datagram the peer produced: ${kcpErrorName(rc)}`);
    }
  }

  /** Steps until cond() or maxMs of simulated time; returns whether cond held. */
  runUntil(cond: () => boolean, maxMs: number, dt = 1): boolean {
    const end = this.now + maxMs;
    while (this.now < end) {
      if (cond()) return true;
      this.step(dt);
    }
    return cond();
  }

  cmdsFrom(from: 'a' | 'b', since = 0): number[] {
    return this.log.filter((l) => l.from === from && l.at >= since).flatMap((l) => l.segs.map((s) => s.cmd));
  }
}
