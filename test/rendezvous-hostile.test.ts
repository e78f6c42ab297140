/**
 * The rendezvous against clients that misbehave on purpose, in process, with
 * real sockets on loopback: a frame dripped a byte at a time to hold a
 * connection without a hello, control messages on a connection already
 * handed to the relay, and round trips that would push a punch delay past
 * what the wire allows. Each was seen working against the server before its fix.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { RendezvousServer } from '../rendezvous/server.js';
import { Registry } from '../rendezvous/registry.js';
import { MAX_RTT_MS, punchDelays } from '../rendezvous/punch-timing.js';
import { FrameDecoder, PROTOCOL_VERSION } from '../src/wire/frame.js';
import { encodeControl, parseControl, type ControlMessage } from '../src/wire/control.js';
import { issueTicket, newSessionId } from '../src/wire/ticket.js';
import { nullLogger } from '../src/util/log.js';
import { sleep } from '../src/util/backoff.js';

async function rendezvous(t: TestContext, handshakeTimeoutMs = 10_000) {
  const server = new RendezvousServer({ host: '127.0.0.1', port: 0, log: nullLogger, handshakeTimeoutMs });
  const addr = await server.listen();
  t.after(() => server.close());
  return { server, port: addr.port };
}

/** A raw TCP client: what it was sent, and whether the server closed it. */
function rawClient(port: number) {
  const sock = net.connect({ port, host: '127.0.0.1' });
  const got: ControlMessage[] = [];
  let closed = false;
  const dec = new FrameDecoder();
  sock.on('data', (d: Buffer) => {
    for (const f of dec.push(d).frames) {
      const r = parseControl(f.body);
      if (r.ok) got.push(r.msg);
    }
  });
  sock.on('error', () => {});
  sock.on('close', () => (closed = true));
  return { sock, got, closed: () => closed, ready: new Promise<void>((r) => sock.once('connect', () => r())) };
}

test('a frame dripped a byte at a time does not hold a connection past the handshake timeout', async (t) => {
  const { port } = await rendezvous(t, 600);
  const c = rawClient(port);
  t.after(() => c.sock.destroy());
  await c.ready;
  const header = Buffer.from([0, 0, 0x3e, 0x80, PROTOCOL_VERSION, 1]); // a 16 000-byte control frame
  c.sock.write(header);
  // Each byte resets an idle timer; only a deadline for the hello ends this.
  for (let i = 0; i < 20 && !c.closed(); i++) {
    c.sock.write('x');
    await sleep(150);
  }
  assert.ok(c.closed(), 'closed within 3 s');
  assert.equal((c.got.find((m) => m.type === 'error') as { code?: string } | undefined)?.code, 'timeout');
});

test('a connection handed to the relay reads no more control messages (no hello, no names on it)', async (t) => {
  const { server, port } = await rendezvous(t);
  const relayKey = (server as unknown as { relayKey: Uint8Array }).relayKey;
  const c = rawClient(port);
  t.after(() => c.sock.destroy());
  await c.ready;
  // A valid ticket for a session whose other side never comes: the leg waits in the relay.
  c.sock.write(encodeControl({ type: 'relay_bind', ticket: issueTicket(relayKey, newSessionId(), 'visitor') }));
  await sleep(100);
  c.sock.write(encodeControl({ type: 'hello', version: PROTOCOL_VERSION, software: 'test' }));
  await sleep(300);
  assert.equal(c.closed(), false, 'the leg still waits for its pair');
  assert.deepEqual(
    c.got.map((m) => m.type),
    [],
    'no welcome: the hello went nowhere',
  );
  assert.equal(server.connectionCount, 0, 'the relay accounts for it, not the rendezvous');
});

test('punch delays stay within what the punch message carries, whatever round trip a peer claimed', () => {
  for (const [v, s] of [
    [1e15, 0],
    [0, -1e15],
    [Number.MAX_VALUE, 3],
    [MAX_RTT_MS * 3, MAX_RTT_MS],
  ]) {
    const d = punchDelays(v, s);
    for (const x of [d.visitor, d.server]) assert.ok(Number.isInteger(x) && x >= 0 && x <= 10_000, `${v}/${s}: ${x}`);
  }
  assert.deepEqual(punchDelays(40, 10), { visitor: 20, server: 35 }, 'ordinary round trips as before');
});

test("registry: a connection's names are found without a scan, and stay right across take-overs and releases", () => {
  const r = new Registry<string>();
  assert.ok(r.claim('Alpha', 'k1', 'c1').ok);
  assert.ok(r.claim('beta', 'k1', 'c1').ok);
  assert.ok(r.claim('gamma', 'k2', 'c3').ok);
  const moved = r.claim('BETA', 'k1', 'c2'); // the same key from a new connection
  assert.ok(moved.ok && moved.replaced?.conn === 'c1');
  assert.equal(r.claim('alpha', 'k9', 'c4').ok, false, 'another key is refused');
  assert.deepEqual(r.releaseConn('c1'), ['Alpha']);
  assert.ok(r.release('gamma', 'c3'));
  assert.deepEqual(r.releaseConn('c3'), []);
  assert.deepEqual(r.releaseConn('c2'), ['BETA']);
  assert.equal(r.size, 0);
  assert.deepEqual(r.releaseConn('c2'), [], 'twice is nothing');
});
