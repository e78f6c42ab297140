/**
 * DirectPathManager's state machine (src/punch/direct.ts, the diagram in
 * docs/ARCHITECTURE.md): two real managers on real loopback UDP sockets, with
 * real sessions. Every change of state is logged as `path_state`; the tests
 * read those and the public state, never private fields. No timing asserts:
 * waits are bounded polls.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DirectPathManager, type DirectStateName } from '../src/punch/direct.js';
import { PeerSocket } from '../src/punch/peer-socket.js';
import { Session } from '../src/session/session.js';
import type { Path } from '../src/session/path.js';
import { cryptoReady } from '../src/crypto/index.js';
import { MAX_RELAY_DATAGRAM_LEN } from '../src/wire/datagram.js';
import type { Logger } from '../src/util/log.js';
import { sessionKeys } from './helpers/session-keys.js';
import { waitFor } from './helpers/wait.js';

await cryptoReady();

/** A logger that keeps the `path_state` transitions. */
function recorder(): Logger & { moves: { from: string; to: string; why: string }[] } {
  const moves: { from: string; to: string; why: string }[] = [];
  const log = {
    moves,
    debug(event: string, _m: string, f?: Record<string, unknown>) {
      if (event === 'path_state') moves.push({ from: String(f?.from), to: String(f?.to), why: String(f?.why) });
    },
    info() {},
    warn() {},
    error() {},
    child: () => log,
  };
  return log;
}

/** A relay stand-in that is always open and delivers nothing (the peers talk over UDP). */
const fakeRelay = (): Path => ({
  kind: 'relay',
  remote: 'relay',
  maxDatagram: MAX_RELAY_DATAGRAM_LEN,
  closed: false,
  send() {},
  close() {},
});

async function pair(opts: { heartbeatMs?: number; deadAfterMs?: number; attemptMs?: number } = {}) {
  const keys = sessionKeys('direct-state test');
  const side = async (role: 'visitor' | 'server', k: typeof keys.visitor) => {
    const log = recorder();
    const session = new Session({ keys: k, role, log, sid: `state-${role}` });
    const socket = await PeerSocket.open('127.0.0.1');
    const relay = fakeRelay();
    const direct = new DirectPathManager({ session, socket, log, relay: () => relay, ...opts });
    direct.deliverTo(session.deliver);
    session.setPath('relay', relay);
    return { session, socket, direct, log, relay };
  };
  const a = await side('visitor', keys.visitor);
  const b = await side('server', keys.server);
  const close = () => {
    for (const s of [a, b]) {
      s.session.close('test over');
      try {
        s.socket.close();
      } catch {
        /* a test closed it already */
      }
    }
  };
  return { a, b, close };
}

const here = (port: number) => ({ address: '127.0.0.1', port, family: 'IPv4' as const, kind: 'host' as const });

test('idle -> punching -> direct on both sides; the session moves onto the direct path', async (t) => {
  const { a, b, close } = await pair();
  t.after(close);
  assert.equal(a.direct.stateName, 'idle');
  a.direct.punch([here(b.socket.port)], { kind: 'plain' });
  b.direct.punch([here(a.socket.port)], { kind: 'plain' });
  assert.equal(a.direct.stateName, 'punching');
  await waitFor(() => a.direct.stateName === 'direct' && b.direct.stateName === 'direct', 10_000, 'both direct');
  assert.equal(a.session.path, a.direct.path);
  assert.notEqual(a.session.path, null);
  assert.equal(a.direct.attempts, 1);
  assert.equal(a.direct.successes, 1);
  assert.deepEqual(
    a.log.moves.slice(0, 2).map((m) => `${m.from}->${m.to}`),
    ['idle->punching', 'punching->direct'],
  );
});

test('direct -> retry-wait when the path goes silent: the session falls back to the relay', async (t) => {
  const { a, b, close } = await pair({ heartbeatMs: 50, deadAfterMs: 400 });
  t.after(close);
  a.direct.punch([here(b.socket.port)], { kind: 'plain' });
  b.direct.punch([here(a.socket.port)], { kind: 'plain' });
  await waitFor(() => a.direct.stateName === 'direct', 10_000, 'a direct');
  // The peer goes away without a word: nothing answers a's heartbeats.
  b.session.close('gone');
  b.socket.close();
  await waitFor(() => a.direct.stateName === 'retry-wait', 10_000, 'a notices the silence');
  assert.equal(a.direct.path, null);
  assert.equal(a.session.path, a.relay, 'back on the relay');
  assert.ok(a.log.moves.some((m) => m.from === 'direct' && m.to === 'retry-wait'));
  assert.equal(b.direct.stateName, 'closed');
});

test('punching -> retry-wait when a round gets no answer; the retry punches again', async (t) => {
  const { a, b, close } = await pair({ attemptMs: 100 });
  t.after(close);
  // Nothing answers on the port a probes: the round runs out.
  b.socket.close();
  a.direct.punch([here(9)], { kind: 'plain' });
  await waitFor(() => a.direct.stateName === 'retry-wait', 10_000, 'round over');
  assert.equal(a.direct.path, null);
  assert.equal(a.session.path, a.relay);
  await waitFor(() => a.direct.attempts >= 2, 10_000, 'a second round after the backoff');
  const seen = new Set(a.log.moves.map((m) => `${m.from}->${m.to}`));
  assert.ok(seen.has('punching->retry-wait'), [...seen].join(', '));
  assert.ok(seen.has('retry-wait->punching'), [...seen].join(', '));
});

test('closed guards every public method; recover() hopes for nothing before a first success', async (t) => {
  const { a, close } = await pair();
  t.after(close);
  assert.equal(a.direct.recover(1000, 'test'), false, 'never direct: nothing to recover');
  assert.equal(a.direct.stateName, 'idle');
  a.session.close('test');
  const name: DirectStateName = a.direct.stateName;
  assert.equal(name, 'closed');
  a.direct.punch([here(9)], { kind: 'plain' });
  assert.equal(a.direct.stateName, 'closed');
  assert.equal(a.direct.attempts, 0);
  assert.equal(a.direct.recover(1000, 'test'), false);
  assert.deepEqual(a.log.moves.at(-1), { from: 'idle', to: 'closed', why: 'session closed' });
});

test('a plan of none leaves the manager idle', async (t) => {
  const { a, close } = await pair();
  t.after(close);
  a.direct.punch([here(9)], {
    kind: 'none',
    cause: 'both NATs are symmetric',
    reason: 'both NATs are symmetric; staying on the relay',
  });
  assert.equal(a.direct.stateName, 'idle');
  assert.equal(a.direct.attempts, 0);
});
