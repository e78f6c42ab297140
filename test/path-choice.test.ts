/**
 * The path choice (src/session/path-choice.ts): which path a datagram takes,
 * given what the path managers reported. Pure functions over real Path
 * objects; then the same rules seen through a Session's setPath().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { activePath, choosePath, segmentSizeFor, type PathSet } from '../src/session/path-choice.js';
import type { Path, PathKind } from '../src/session/path.js';
import { Session } from '../src/session/session.js';
import { cryptoReady } from '../src/crypto/index.js';
import { DATAGRAM_OVERHEAD, MAX_DATAGRAM_LEN, MAX_RELAY_DATAGRAM_LEN } from '../src/wire/datagram.js';
import { nullLogger } from '../src/util/log.js';
import { sessionKeys } from './helpers/session-keys.js';

await cryptoReady();

class TestPath implements Path {
  closed = false;
  sent: Uint8Array[] = [];
  constructor(
    readonly kind: PathKind,
    readonly remote: string,
    readonly maxDatagram: number,
  ) {}
  send(datagram: Uint8Array): void {
    if (!this.closed) this.sent.push(datagram);
  }
  close(): void {
    this.closed = true;
  }
}

const relay = () => new TestPath('relay', 'relay', MAX_RELAY_DATAGRAM_LEN);
const direct = () => new TestPath('direct', 'udp', MAX_DATAGRAM_LEN);
const SMALL = 100;
const LARGE = 60_000;

test('no path reported, none used before: no-path', () => {
  const paths: PathSet = { relay: null, direct: null, current: null };
  assert.equal(activePath(paths), null);
  assert.equal(choosePath(paths, SMALL), 'no-path');
});

test('relay only: every size the relay carries goes there', () => {
  const r = relay();
  const paths: PathSet = { relay: r, direct: null, current: null };
  assert.equal(choosePath(paths, SMALL), r);
  assert.equal(choosePath(paths, LARGE), r);
  assert.equal(choosePath(paths, MAX_RELAY_DATAGRAM_LEN + 1), 'too-large');
});

test('direct beats the relay; a datagram too large for UDP finishes on the open relay', () => {
  const r = relay();
  const d = direct();
  const paths: PathSet = { relay: r, direct: d, current: r };
  assert.equal(activePath(paths), d);
  assert.equal(choosePath(paths, SMALL), d);
  assert.equal(choosePath(paths, MAX_DATAGRAM_LEN), d);
  assert.equal(choosePath(paths, MAX_DATAGRAM_LEN + 1), r);
});

test('direct only (or the relay closed): a relay-sized datagram has no path', () => {
  const d = direct();
  assert.equal(choosePath({ relay: null, direct: d, current: d }, LARGE), 'too-large');
  const r = relay();
  r.close();
  assert.equal(choosePath({ relay: r, direct: d, current: d }, LARGE), 'too-large');
  assert.equal(choosePath({ relay: r, direct: d, current: d }, SMALL), d);
});

test('a closed direct path gives way to the open relay', () => {
  const r = relay();
  const d = direct();
  d.close();
  assert.equal(activePath({ relay: r, direct: d, current: d }), r);
});

test('neither available: the path used last stays (a closed one drops; a silent direct one may come back)', () => {
  const r = relay();
  r.close();
  assert.equal(choosePath({ relay: null, direct: null, current: r }, SMALL), r);
  const d = direct();
  assert.equal(choosePath({ relay: null, direct: null, current: d }, SMALL), d);
  assert.equal(choosePath({ relay: null, direct: null, current: d }, LARGE), 'too-large');
});

test('segment size: the relay records until the session has been direct, UDP-sized from then on', () => {
  assert.equal(segmentSizeFor(relay(), false), MAX_RELAY_DATAGRAM_LEN);
  assert.equal(segmentSizeFor(relay(), true), MAX_DATAGRAM_LEN);
  assert.equal(segmentSizeFor(direct(), false), MAX_DATAGRAM_LEN);
  assert.equal(segmentSizeFor(direct(), true), MAX_DATAGRAM_LEN);
});

test('Session.setPath: reported paths move the session as the choice says, one path event per change', () => {
  const keys = sessionKeys('path-choice test');
  const s = new Session({ keys: keys.visitor, role: 'visitor', log: nullLogger, sid: 'choice' });
  try {
    const events: [string, string | null][] = [];
    s.on('path', (p: Path, prev: Path | null) => events.push([p.remote, prev?.remote ?? null]));
    const r = relay();
    const d = direct();
    s.setPath('relay', r);
    assert.equal(s.path, r);
    assert.ok(s.kcp.snapshot().mss > MAX_DATAGRAM_LEN, 'relay-sized segments before any direct path');
    s.setPath('relay', r); // reported twice: no change
    s.setPath('direct', d);
    assert.equal(s.path, d);
    assert.ok(s.kcp.snapshot().mss <= MAX_DATAGRAM_LEN - DATAGRAM_OVERHEAD);
    s.setPath('direct', null); // heartbeats stopped: back to the relay, UDP-sized segments kept
    assert.equal(s.path, r);
    assert.ok(s.kcp.snapshot().mss <= MAX_DATAGRAM_LEN - DATAGRAM_OVERHEAD);
    s.setPath('relay', null); // and the relay went too: the session stays on it (sends drop) for the manager to decide
    assert.equal(s.path, r);
    s.setPath('direct', d);
    assert.equal(s.path, d);
    assert.deepEqual(events, [
      ['relay', null],
      ['udp', 'relay'],
      ['relay', 'udp'],
      ['udp', 'relay'],
    ]);
  } finally {
    s.close('test over');
  }
});
