/**
 * UDP services (`--proto udp`): the UserDatagram body, the flow table, the
 * session's unreliable datagrams (outside KCP, any order, never split), and
 * both peers' flow handling with real UDP sockets on loopback between two
 * real sessions joined by in-memory paths.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Session } from '../src/session/session.js';
import type { Path } from '../src/session/path.js';
import { cryptoReady } from '../src/crypto/index.js';
import { MAX_RELAY_DATAGRAM_LEN } from '../src/wire/datagram.js';
import {
  decodeUserDatagram,
  encodeUserDatagram,
  maxUserPayload,
  USER_DATAGRAM_OVERHEAD,
} from '../src/wire/user-datagram.js';
import { FlowTable, MAX_UDP_FLOWS, sweepIntervalFor, UDP_SWEEP_MAX_MS } from '../src/udp/flow-table.js';
import { newUdpCounters, totalDrops } from '../src/udp/stats.js';
import { UdpServeFlows } from '../peer/udp-serve.js';
import { UdpVisitor } from '../peer/udp-visit.js';
import { nullLogger } from '../src/util/log.js';
import { sleep } from '../src/util/backoff.js';
import { ConfigError, parseConfig, PeerConfig } from '../src/config/index.js';
import { ControlClient, FatalError } from '../peer/control-client.js';
import { Procs, SECRET } from './helpers/tunnel.js';
import { sessionKeys } from './helpers/session-keys.js';
import { MemPath } from './helpers/mem-path.js';

test('UserDatagram body: flow id and payload, flow 0 and short bodies refused', () => {
  const body = encodeUserDatagram(0xdeadbeef, Buffer.from('hello'));
  const d = decodeUserDatagram(body);
  assert.equal(d?.flow, 0xdeadbeef);
  assert.ok(d);
  assert.equal(Buffer.from(d.payload).toString(), 'hello');
  assert.equal(decodeUserDatagram(encodeUserDatagram(0, Buffer.from('x'))), null);
  assert.equal(decodeUserDatagram(new Uint8Array(3)), null);
  assert.equal(decodeUserDatagram(encodeUserDatagram(7, new Uint8Array(0)))?.payload.length, 0);
  assert.equal(maxUserPayload(1452), 1452 - USER_DATAGRAM_OVERHEAD);
  assert.equal(maxUserPayload(10), 0);
});

test('FlowTable: ids never 0, one flow per key, capped, idle flows swept', () => {
  const t = new FlowTable<string>({ maxFlows: 3, idleMs: 1000 });
  const a = t.open('10.0.0.1:1', () => 'a', 0)!;
  const b = t.open('10.0.0.1:2', () => 'b', 0)!;
  assert.ok(a.id > 0 && b.id > 0 && a.id !== b.id);
  assert.equal(t.lookup('10.0.0.1:1'), a);
  assert.equal(t.get(b.id), b);
  assert.ok(t.open('10.0.0.1:3', () => 'c', 0));
  assert.equal(
    t.open('10.0.0.1:4', () => 'd', 0),
    null,
    'over the cap',
  );
  t.touch(a, 900);
  const gone = t.sweep(1500);
  assert.deepEqual(gone.map((f) => f.value).sort(), ['b', 'c']);
  assert.equal(t.size, 1);
  assert.equal(t.lookup('10.0.0.1:2'), undefined);
  // The serve side keeps the peer's ids.
  const s = new FlowTable<number>({ maxFlows: 1 });
  assert.equal(s.openAs(42, (id) => id * 2, 0)?.value, 84);
  assert.equal(s.openAs(42, () => -1, 0)?.value, 84, 'the same flow again');
  assert.equal(
    s.openAs(43, () => 0, 0),
    null,
  );
  assert.equal(s.clear().length, 1);
  assert.equal(new FlowTable().maxFlows, MAX_UDP_FLOWS);
  assert.equal(sweepIntervalFor(60_000), UDP_SWEEP_MAX_MS);
  assert.ok(sweepIntervalFor(1000) <= 1000);
});

/** A path that keeps what it is given (sealed datagrams), for delivering by hand. */
class Capture implements Path {
  closed = false;
  readonly sent: Buffer[] = [];
  constructor(
    readonly kind: 'relay' | 'direct',
    readonly maxDatagram: number,
    readonly remote = 'capture',
  ) {}
  send(d: Uint8Array): void {
    this.sent.push(Buffer.from(d));
  }
  close(): void {
    this.closed = true;
  }
}

test('session: user datagrams skip KCP, arrive in any order, once, and are dropped whole when too large', async () => {
  await cryptoReady();
  const keys = sessionKeys('udp datagrams');
  const a = new Session({ keys: keys.visitor, role: 'visitor', log: nullLogger, sid: 'udp-a' });
  const b = new Session({ keys: keys.server, role: 'server', log: nullLogger, sid: 'udp-b' });
  try {
    assert.equal(a.sendUserDatagram(1, Buffer.from('x')), 'no_path');
    const out = new Capture('direct', 1452);
    const inb = new Capture('direct', 1452);
    a.setPath('direct', out);
    const got: [number, string][] = [];
    b.on('datagram', (flow: number, p: Uint8Array) => got.push([flow, Buffer.from(p).toString()]));
    const before = out.sent.length;
    for (let i = 0; i < 5; i++) assert.equal(a.sendUserDatagram(9, Buffer.from(`d${i}`)), null);
    const mine = out.sent.slice(before).filter((d) => d[0] === 0xa9);
    assert.equal(mine.length, 5, 'one sealed datagram each, sent at once');
    assert.equal(a.kcp.waitSnd(), 0, 'nothing went into KCP');
    // Reordered within the replay window: every one is taken; a replay is not.
    for (const d of [...mine].reverse()) assert.equal(b.receive(d, inb), true);
    assert.equal(b.receive(mine[2], inb), false, 'a replayed datagram is rejected');
    assert.deepEqual(
      got,
      [4, 3, 2, 1, 0].map((i) => [9, `d${i}`]),
    );
    // Larger than the path: dropped, never split.
    const max = maxUserPayload(out.maxDatagram);
    const n = out.sent.length;
    assert.equal(a.sendUserDatagram(1, new Uint8Array(max)), null);
    assert.equal(a.sendUserDatagram(1, new Uint8Array(max + 1)), 'too_large');
    assert.equal(out.sent.length, n + 1);
    assert.equal(out.sent[n].length, 1452, 'the largest fits the path exactly');
  } finally {
    a.close();
    b.close();
  }
});

test('session: on the relay, user datagrams go as relay-sized records', async () => {
  await cryptoReady();
  const keys = sessionKeys('udp relay');
  const a = new Session({ keys: keys.visitor, role: 'visitor', log: nullLogger, sid: 'udp-ra' });
  try {
    const relay = new Capture('relay', MAX_RELAY_DATAGRAM_LEN);
    a.setPath('relay', relay);
    assert.equal(a.sendUserDatagram(1, new Uint8Array(8000)), null);
    assert.equal(a.sendUserDatagram(1, new Uint8Array(maxUserPayload(MAX_RELAY_DATAGRAM_LEN) + 1)), 'too_large');
    assert.equal(relay.sent.filter((d) => d[0] === 0xa9 && d.length === 8000 + USER_DATAGRAM_OVERHEAD).length, 1);
  } finally {
    a.close();
  }
});

/** Two sessions over an in-memory direct path, the visit side's UDP listener and the serve side's flows. */
async function udpTunnel(local: { host: string; port: number }, idleMs = 60_000, maxFlows?: number) {
  await cryptoReady();
  const keys = sessionKeys('udp flows');
  const a = new Session({ keys: keys.visitor, role: 'visitor', log: nullLogger, sid: 'udp-fa' });
  const b = new Session({ keys: keys.server, role: 'server', log: nullLogger, sid: 'udp-fb' });
  const pa = new MemPath('direct', 'mem-a', 1452);
  const pb = new MemPath('direct', 'mem-b', 1452);
  pa.peer = { session: b, path: pb };
  pb.peer = { session: a, path: pa };
  a.setPath('direct', pa);
  b.setPath('direct', pb);
  const visitStats = newUdpCounters();
  const serveStats = newUdpCounters();
  const visitor = new UdpVisitor({ log: nullLogger, stats: visitStats, idleMs, maxFlows, wantSession: () => {} });
  const addr = await visitor.listen({ host: '127.0.0.1', port: 0 });
  visitor.attach(a);
  const flows = new UdpServeFlows(b, { local, log: nullLogger, stats: serveStats, idleMs });
  return {
    port: addr.port,
    visitStats,
    serveStats,
    flows,
    visitor,
    close: () => {
      visitor.close();
      a.close();
      b.close();
      pa.close();
      pb.close();
    },
  };
}

async function echoServer(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

async function clients(n: number): Promise<dgram.Socket[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<dgram.Socket>((resolve) => {
          const s = dgram.createSocket('udp4');
          s.bind(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
}

test('flows: 50 clients at once each get their own replies; idle flows close their sockets', async () => {
  const echo = await echoServer();
  const t = await udpTunnel({ host: '127.0.0.1', port: echo.address().port }, 400);
  const socks = await clients(50);
  try {
    const got = socks.map(() => [] as string[]);
    socks.forEach((s, i) => s.on('message', (m) => got[i].push(m.toString())));
    for (let round = 0; round < 3; round++)
      socks.forEach((s, i) => s.send(Buffer.from(`client ${i} round ${round}`), t.port, '127.0.0.1'));
    for (let i = 0; i < 100 && got.some((g) => g.length < 3); i++) await sleep(20);
    socks.forEach((_, i) =>
      assert.deepEqual(
        got[i].sort(),
        [0, 1, 2].map((r) => `client ${i} round ${r}`),
      ),
    );
    assert.equal(t.flows.flows, 50, 'one socket towards the service per client');
    assert.equal(t.serveStats.flows, 50);
    assert.equal(t.visitStats.datagramsSent, 150);
    assert.equal(t.visitStats.datagramsReceived, 150);
    assert.equal(totalDrops(t.visitStats) + totalDrops(t.serveStats), 0);
    // Idle for longer than the idle timeout (400 ms, swept every 250 ms): both sides forget them.
    for (let i = 0; i < 100 && (t.serveStats.flows > 0 || t.visitStats.flows > 0); i++) await sleep(20);
    assert.equal(t.serveStats.flows, 0, 'the serve side closed every flow socket');
    assert.equal(t.visitStats.flows, 0);
    // A client that comes back after expiry gets a fresh flow and is answered.
    socks[0].send(Buffer.from('again'), t.port, '127.0.0.1');
    for (let i = 0; i < 100 && !got[0].includes('again'); i++) await sleep(20);
    assert.ok(got[0].includes('again'));
    assert.equal(t.serveStats.flowsOpened, 51);
  } finally {
    for (const s of socks) s.close();
    t.close();
    echo.close();
  }
});

test('flows: oversized datagrams are dropped and counted; a service that is down is counted, no crash', async () => {
  // A port with nothing on it: bind, note, close.
  const gone = dgram.createSocket('udp4');
  await new Promise<void>((r) => gone.bind(0, '127.0.0.1', () => r()));
  const port = gone.address().port;
  gone.close();
  const t = await udpTunnel({ host: '127.0.0.1', port });
  const [c] = await clients(1);
  try {
    c.send(Buffer.alloc(maxUserPayload(1452) + 1), t.port, '127.0.0.1');
    c.send(Buffer.alloc(maxUserPayload(1452)), t.port, '127.0.0.1');
    // Apart, so that each reaches the service's host after the last one's ICMP error
    // came back (sent in one turn, they leave in one batch and draw one error).
    for (let i = 0; i < 5; i++) {
      c.send(Buffer.from(`ping ${i}`), t.port, '127.0.0.1');
      await sleep(30);
    }
    for (let i = 0; i < 100 && t.serveStats.drops.unreachable < 2; i++) await sleep(20);
    assert.equal(t.visitStats.drops.too_large, 1);
    assert.equal(t.visitStats.datagramsSent, 6);
    assert.equal(t.serveStats.datagramsReceived, 6, 'the largest that fits went through');
    assert.ok(t.serveStats.drops.unreachable >= 2, JSON.stringify(t.serveStats));
  } finally {
    c.close();
    t.close();
  }
});

test('config: proto = "udp" and udp-idle-timeout on entries; anything else is a config error', () => {
  const c = parseConfig(
    [
      'udp-idle-timeout = 30',
      '[[serve]]',
      'name = "wg"',
      'local = "127.0.0.1:51820"',
      'proto = "udp"',
      '[[visit]]',
      'name = "dns"',
      'bind = "127.0.0.1:5353"',
      'proto = "udp"',
      'udp-idle-timeout = 5',
    ].join('\n'),
    PeerConfig,
  );
  assert.equal(c.serve[0].proto, 'udp');
  assert.equal(c.visit[0]['udp-idle-timeout'], 5);
  assert.equal(c['udp-idle-timeout'], 30);
  assert.throws(
    () => parseConfig('[[serve]]\nname = "x"\nlocal = "127.0.0.1:1"\nproto = "sctp"', PeerConfig),
    ConfigError,
  );
  assert.throws(() => parseConfig('udp-idle-timeout = 0', PeerConfig), ConfigError);
});

test('flows: a client beyond the per-session cap is dropped and counted; the others go on', async () => {
  const echo = await echoServer();
  const t = await udpTunnel({ host: '127.0.0.1', port: echo.address().port }, 60_000, 2);
  const socks = await clients(3);
  try {
    const got = socks.map(() => 0);
    socks.forEach((s, i) => s.on('message', () => got[i]++));
    for (const s of socks) s.send(Buffer.from('hi'), t.port, '127.0.0.1');
    for (let i = 0; i < 100 && got[0] + got[1] < 2; i++) await sleep(20);
    await sleep(50);
    assert.deepEqual(got, [1, 1, 0]);
    assert.equal(t.visitStats.drops.flow_limit, 1);
    assert.equal(t.visitStats.flows, 2);
  } finally {
    for (const s of socks) s.close();
    t.close();
    echo.close();
  }
});

test('rendezvous: a connect without proto (an older visitor) to a UDP name gets mode_mismatch', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  await p.serve('old-visitor', '127.0.0.1:9', rdv.addr, SECRET, ['--proto', 'udp', '--no-admin']);
  const c = new ControlClient({ server: { host: '127.0.0.1', port: rdv.port } });
  await c.connect();
  try {
    const ask = (proto?: 'tcp' | 'udp') =>
      c.request(
        {
          type: 'connect',
          reqId: `r-${proto ?? 'none'}`,
          name: 'old-visitor',
          hs: Buffer.alloc(90).toString('base64'),
          mode: 'auto',
          candidates: [],
          ...(proto ? { proto } : {}),
        },
        (_m): _m is never => false,
        5000,
      );
    const code = async (proto?: 'tcp' | 'udp') => {
      try {
        await ask(proto);
        return 'answered';
      } catch (e) {
        assert.ok(e instanceof FatalError, String(e));
        return e.code;
      }
    };
    assert.equal(await code(), 'mode_mismatch');
    assert.equal(await code('tcp'), 'proto_mismatch');
  } finally {
    c.close();
  }
});
