/**
 * The dashboard's per-session rate and path history (rendezvous/traffic.ts),
 * fed path reports with chosen times. The server is a stand-in with only what
 * TrafficHistory reads (its events and an empty snapshot): no I/O here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { TrafficHistory } from '../rendezvous/traffic.js';
import type { RendezvousServer } from '../rendezvous/server.js';

/** A history over a standalone-relay rendezvous (no embedded relay: both series come from the reports). */
function history(): TrafficHistory {
  const server = { events: new EventEmitter(), relay: null, snapshot: () => ({ sessions: [{ sid: 's1' }] }) };
  const h = new TrafficHistory(server as unknown as RendezvousServer, 60_000);
  return h;
}

const report = (path: 'relay' | 'direct', relay: number, direct: number, remote = '192.0.2.7:4000') => ({
  type: 'path_report' as const,
  sid: 's1',
  path,
  remote,
  bytes: { relay, direct },
});

test('the rate spans whole report intervals: two reports moments apart at a path change do not zero it', () => {
  const h = history();
  const t0 = 1_000_000;
  h.report('s1', 'visitor', report('relay', 0, 0), t0);
  h.report('s1', 'visitor', report('relay', 500_000, 0), t0 + 5000);
  assert.equal(h.session('s1', t0, t0 + 5000)?.rateBps, 100_000);
  // The move to direct: both sides report within milliseconds, with nearly the same counts.
  h.report('s1', 'visitor', report('direct', 600_000, 1000), t0 + 6000);
  h.report('s1', 'server', report('direct', 600_000, 1200), t0 + 6010);
  const s = h.session('s1', t0, t0 + 6010)!;
  assert.equal(s.rateBps, 100_000, 'the rate of the last full span stands');
  assert.deepEqual(s.paths, ['relay', 'direct']);
  assert.equal(s.directAfterS, 6);
  // The next periodic report measures from the last span's start (t0 + 5000).
  h.report('s1', 'visitor', report('direct', 600_000, 500_000), t0 + 11_000);
  assert.equal(h.session('s1', t0, t0 + 11_000)?.rateBps, Math.round(600_000 / 6));
  // Past RATE_FRESH_MS without a report, the session is idle.
  assert.equal(h.session('s1', t0, t0 + 30_000)?.rateBps, 0);
  h.close();
});

test('bytes counted before the first report are not a rate; endpoints are known only on a direct path', () => {
  const h = history();
  const t0 = 2_000_000;
  h.report('s1', 'visitor', report('relay', 9_000_000, 0, '203.0.113.10:7000'), t0);
  h.report('s1', 'visitor', report('relay', 9_010_000, 0, '203.0.113.10:7000'), t0 + 5000);
  const s = h.session('s1', t0, t0 + 5000)!;
  assert.equal(s.rateBps, 2000);
  assert.deepEqual(s.endpoints, { visitor: null, server: null }, 'a relay path remote is the relay, not the peer');
  h.report('s1', 'visitor', report('direct', 9_010_000, 10, '198.51.100.2:5000'), t0 + 5100);
  h.report('s1', 'server', report('direct', 9_010_000, 10, '192.0.2.9:6000'), t0 + 5110);
  assert.deepEqual(h.session('s1', t0, t0 + 5110)!.endpoints, {
    visitor: '192.0.2.9:6000',
    server: '198.51.100.2:5000',
  });
  h.close();
});

test("the chart splits each session's rate by the path its recent bytes took, not its bytes since the start", () => {
  const h = history();
  const t0 = 3_000_000;
  h.report('s1', 'visitor', report('relay', 0, 0), t0);
  h.report('s1', 'visitor', report('relay', 50_000_000, 0), t0 + 5000);
  h.sample(t0 + 5000);
  // Moved: 50 MB on the relay before, 1 MB/s direct since.
  h.report('s1', 'visitor', report('direct', 50_000_000, 5_000_000), t0 + 10_000);
  h.sample(t0 + 10_000);
  const st = h.status();
  assert.deepEqual(st.relayBps, [10_000_000, 0]);
  assert.deepEqual(st.directBps, [0, 1_000_000]);
  h.close();
});
