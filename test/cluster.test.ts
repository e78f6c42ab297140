/**
 * Several rendezvous nodes sharing one registry on Redis (issue #9), end to
 * end: a real redis-server on loopback, rendezvous nodes and peers as real
 * processes of the built CLIs. Skipped, with a message, without redis-server.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Procs, echoTransfer, waitForEvent, waitExit, outputOf, SECRET } from './helpers/tunnel.js';
import { eventsOf, lineCount } from '../scripts/proc.js';
import { identityReady } from '../src/crypto/identity.js';
import { RedisProc, redisMissing, servedBy, SimPeer, until } from './cluster-helpers.js';
import { CutProxy } from './helpers/cut-proxy.js';

const missing = redisMissing();
if (missing) process.stderr.write(`# ${missing}\n`);

const TTL_S = 3;
const PEER = ['--no-admin'];

/** A persistent TCP connection through a visit port, for "an open connection keeps working". */
class EchoConn {
  private buf = Buffer.alloc(0);
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => (this.buf = Buffer.concat([this.buf, d])));
    sock.on('error', () => {});
  }
  static open(port: number): Promise<EchoConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1' }, () => resolve(new EchoConn(s)));
      s.once('error', reject);
    });
  }
  /** Writes `text` and waits for it to come back whole. */
  async roundTrip(text: string, timeoutMs = 10_000): Promise<boolean> {
    this.buf = Buffer.alloc(0);
    this.sock.write(text);
    return until(() => this.buf.toString() === text, timeoutMs, 20);
  }
  close(): void {
    this.sock.destroy();
  }
}

describe('rendezvous cluster on Redis', { skip: missing ?? false }, () => {
  let redis: RedisProc;
  before(async () => {
    await identityReady();
    redis = await RedisProc.start();
  });
  after(async () => {
    await redis?.stop();
  });

  const nodeArgs = (id: string, extra: string[] = []) => [
    '--registry',
    redis.url,
    '--node-id',
    id,
    '--registry-ttl',
    String(TTL_S),
    ...extra,
  ];

  async function cluster(t: { after(fn: () => Promise<void>): void }, ids: string[]) {
    const p = new Procs();
    t.after(() => p.cleanup());
    const nodes = await Promise.all(ids.map((id) => p.rendezvous(nodeArgs(id))));
    for (const n of nodes) {
      const ready = eventsOf(n.child, 'ready')[0];
      assert.equal(ready?.registry, 'up', 'each node reports the registry up when ready');
    }
    const echo = await p.echoServer();
    return { p, nodes, echo };
  }

  for (const mode of ['relay', 'auto'] as const) {
    test(`serve on node A, visit through node B: data exact (--mode ${mode})`, async (t) => {
      const { p, nodes, echo } = await cluster(t, [`x-${mode}-a`, `x-${mode}-b`]);
      const [A, B] = nodes;
      const name = `cross-${mode}`;
      const serve = await p.serve(name, `127.0.0.1:${echo.port}`, A.addr, SECRET, ['--mode', mode, ...PEER]);
      const visit = await p.visit(name, B.addr, SECRET, ['--mode', mode, ...PEER]);
      // The visitor's relay leg goes to its own node (B), which pipes it to A's relay.
      const first = await waitForEvent(visit.child, 'path', 10_000);
      if (mode === 'relay') assert.equal(first.remote, B.addr);
      const r = await echoTransfer(visit.port, 3 * 1024 * 1024, 60_000);
      assert.equal(r.gotBytes, 3 * 1024 * 1024);
      assert.equal(r.got, r.sent);
      if (mode === 'auto') {
        // The punch was brokered across nodes: both sides got `punch` and a hole opened.
        await waitForEvent(visit.child, (o) => o.event === 'path' && o.path === 'direct', 20_000);
        await waitForEvent(serve, (o) => o.event === 'path' && o.path === 'direct', 20_000);
        const again = await echoTransfer(visit.port, 1024 * 1024, 30_000);
        assert.equal(again.got, again.sent);
      } else {
        assert.equal(eventsOf(visit.child, (o) => o.event === 'path' && o.path === 'direct').length, 0);
      }
      assert.equal(eventsOf(A.child, 'registered').length, 1, 'the name is held by node A');
      assert.equal(eventsOf(B.child, 'registered').length, 0);
    });
  }

  test("duplicate name across nodes refused while its owner lives; a dead node's names expire (TTL)", async (t) => {
    const { p, nodes, echo } = await cluster(t, ['dup-a', 'dup-b']);
    const [A, B] = nodes;
    // Single address on purpose: this serve keeps retrying A and never moves its name.
    await p.serve('dup-name', `127.0.0.1:${echo.port}`, A.addr, SECRET, ['--mode', 'relay', ...PEER]);
    const second = p.spawnCli('peer', [
      'serve',
      '--name',
      'dup-name',
      '--local',
      `127.0.0.1:${echo.port}`,
      '--server',
      B.addr,
      '--secret',
      SECRET,
      '--log-format',
      'json',
      ...PEER,
    ]);
    const code = await waitExit(second, 15_000);
    assert.notEqual(code, 0, 'a second serve with the same name on another node exits non-zero');
    assert.match(outputOf(second).stderr, /already served by someone else/);

    const sim = await SimPeer.connect(B.port);
    t.after(() => sim.close());
    const refused = await sim.register('dup-name');
    assert.equal(refused.type, 'error');
    assert.equal(refused.type === 'error' && refused.code, 'name_taken');

    process.kill(-A.child.pid!, 'SIGKILL');
    const killedAt = Date.now();
    const early = await sim.register('dup-name');
    assert.equal(
      early.type === 'error' && early.code,
      'name_taken',
      'still refused right after the owner node died (within the TTL)',
    );
    let took: number | null = null;
    const ok = await until(
      async () => {
        const r = await sim.register('dup-name');
        if (r.type === 'registered') took = Date.now() - killedAt;
        return r.type === 'registered';
      },
      (TTL_S + 4) * 1000,
      250,
    );
    assert.ok(ok, "the name can be registered elsewhere once the dead node's entry expired");
    process.stderr.write(`# dead node's name free again after ${took} ms (TTL ${TTL_S} s)\n`);
    assert.ok(took! <= (TTL_S + 1.5) * 1000, `expired within the TTL (+ polling slack): ${took} ms`);
  });

  test('a node stopped with SIGTERM gives its names back at once (no TTL wait)', async (t) => {
    const { p, nodes, echo } = await cluster(t, ['gs-a', 'gs-b']);
    const [A, B] = nodes;
    await p.serve('graceful', `127.0.0.1:${echo.port}`, A.addr, SECRET, ['--mode', 'relay', ...PEER]);
    const sim = await SimPeer.connect(B.port);
    t.after(() => sim.close());
    assert.equal((await sim.register('graceful')).type, 'error', 'held by the serve on A');
    process.kill(-A.child.pid!, 'SIGTERM');
    assert.notEqual(await waitExit(A.child, 10_000), null, 'node A exits on SIGTERM');
    const t0 = Date.now();
    const r = await sim.register('graceful');
    assert.equal(r.type, 'registered', `another key may take the name as soon as node A is gone: ${JSON.stringify(r)}`);
    assert.ok(Date.now() - t0 < TTL_S * 1000);
  });

  test('node A killed: serve fails over to B, next visit succeeds, an open direct tunnel keeps working', async (t) => {
    const { p, nodes, echo } = await cluster(t, ['fo-a', 'fo-b']);
    const [A, B] = nodes;
    const list = `${A.addr},${B.addr}`;
    const serve = await p.serve('failover', `127.0.0.1:${echo.port}`, list, SECRET, PEER);
    assert.equal(eventsOf(serve, 'ready')[0]?.server, A.addr);
    const v1 = await p.visit('failover', list, SECRET, PEER);
    await waitForEvent(v1.child, (o) => o.event === 'path' && o.path === 'direct', 20_000);
    const conn = await EchoConn.open(v1.port);
    t.after(() => conn.close());
    assert.ok(await conn.roundTrip('before the node dies'));

    const mark = lineCount(serve);
    process.kill(-A.child.pid!, 'SIGKILL');
    const moved = await waitForEvent(serve, (o) => o.event === 'ready' && o.reconnect === true, 20_000, {
      after: mark,
    });
    assert.equal(moved.server, B.addr, 'serve re-registered through node B');

    // The direct tunnel never needed node A: the open connection and new ones keep working.
    assert.ok(await conn.roundTrip('after the node died'), 'an open connection over the direct path keeps working');
    const r1 = await echoTransfer(v1.port, 512 * 1024, 30_000);
    assert.equal(r1.got, r1.sent);
    assert.equal(eventsOf(v1.child, 'session_closed').length, 0, 'the direct session was not torn down');

    // A new visitor with the same list: A refuses the connection, B brokers (the name moved at once: same key).
    const v2 = await p.visit('failover', list, SECRET, ['--mode', 'relay', ...PEER]);
    const r2 = await echoTransfer(v2.port, 1024 * 1024, 30_000);
    assert.equal(r2.got, r2.sent);
  });

  test('Redis restarted: nodes serve local names meanwhile, then recover and re-assert their names', async (t) => {
    const { p, nodes, echo } = await cluster(t, ['rr-a', 'rr-b']);
    const [A, B] = nodes;
    await p.serve('survivor', `127.0.0.1:${echo.port}`, A.addr, SECRET, ['--mode', 'relay', ...PEER]);
    const sticky = await SimPeer.connect(A.port);
    t.after(() => sticky.close());
    assert.equal((await sticky.register('sticky')).type, 'registered');
    const before = await p.visit('survivor', B.addr, SECRET, ['--mode', 'relay', ...PEER]);
    const r0 = await echoTransfer(before.port, 256 * 1024, 30_000);
    assert.equal(r0.got, r0.sent);

    const marks = nodes.map((n) => lineCount(n.child));
    await redis.stop();
    await Promise.all(nodes.map((n, i) => waitForEvent(n.child, 'registry_down', 10_000, { after: marks[i] })));

    // Local names keep working on their node.
    const local = await p.visit('survivor', A.addr, SECRET, ['--mode', 'relay', ...PEER]);
    const r1 = await echoTransfer(local.port, 256 * 1024, 30_000);
    assert.equal(r1.got, r1.sent);
    // New registrations are refused rather than risk a duplicate.
    const sim = await SimPeer.connect(B.port);
    t.after(() => sim.close());
    const refused = await sim.register('newcomer');
    assert.equal(refused.type === 'error' && refused.code, 'service_unavailable');
    // Cross-node visits fail clearly, not wrongly.
    const cross = await sim.connectTo('survivor', 10_000);
    assert.equal(cross.type === 'error' && cross.code, 'service_unavailable');
    // A serve whose connection drops during the outage gets its name
    // back on the same node with the same key; no other key does.
    sticky.close();
    const again = await SimPeer.connect(A.port, { identity: sticky.identity });
    t.after(() => again.close());
    const other = await SimPeer.connect(A.port);
    t.after(() => other.close());
    assert.ok(
      await until(
        async () =>
          (await other.register('sticky')).type === 'error' && (await again.register('sticky')).type === 'registered',
        5000,
        100,
      ),
      'same key re-registers during the outage',
    );
    assert.equal((await other.register('sticky')).type, 'error');

    const upMarks = nodes.map((n) => lineCount(n.child));
    await redis.restart(); // empty: nothing was persisted
    await Promise.all(nodes.map((n, i) => waitForEvent(n.child, 'registry_up', 15_000, { after: upMarks[i] })));
    // Node A wrote its name back; a visit through B reaches it again.
    // (The real serve answers our dummy handshake with auth_failed: that answer came from it, through both nodes.)
    const back = await until(
      async () => {
        const r = await sim.connectTo('survivor', 5000);
        return r.type === 'error' && r.code === 'auth_failed';
      },
      10_000,
      250,
    );
    assert.ok(back, 'cross-node brokering works again');
    const after = await p.visit('survivor', B.addr, SECRET, ['--mode', 'relay', ...PEER]);
    const r2 = await echoTransfer(after.port, 256 * 1024, 30_000);
    assert.equal(r2.got, r2.sent);
    assert.equal((await sim.register('newcomer')).type, 'registered');
    // The name re-taken during the outage was re-asserted in Redis and is reachable from node B.
    assert.equal(servedBy(await sim.connectTo('sticky')), 'sticky');
  });

  // Roaming in a cluster (CLUSTER.md "Resuming in a cluster"): the node that brokered a session is the only one
  // holding its record, so a visitor whose control connection to it is lost must come back there, not move on to
  // the next node of its list, and re-announce the session with session_resume.
  test('control lost with --server a,b: the visitor resumes its session on the node that brokered it', async (t) => {
    const { p, nodes, echo } = await cluster(t, ['res-a', 'res-b']);
    const [A, B] = nodes;
    // The visitor reaches A through a proxy that can cut its control connection (the first one it opens there).
    const proxy = await new CutProxy(A.port).start();
    t.after(() => proxy.close());
    const serve = await p.serve('resumed', `127.0.0.1:${echo.port}`, A.addr, SECRET, ['--mode', 'relay', ...PEER]);
    const visit = await p.visit('resumed', `127.0.0.1:${proxy.port},${B.addr}`, SECRET, ['--mode', 'relay', ...PEER]);
    const first = await waitForEvent(visit.child, 'path', 10_000);
    const sid = String(first.sid);
    const conn = await EchoConn.open(visit.port);
    t.after(() => conn.close());
    assert.ok(await conn.roundTrip('before'), 'echo before the cut');

    proxy.cut(proxy.conns[0]);
    const back = await waitForEvent(
      visit.child,
      (o) => (o.event === 'resume' || o.event === 'resume_failed') && o.what === 'rendezvous',
      20_000,
    );
    assert.equal(back.event, 'resume', `the session came back at the rendezvous: ${JSON.stringify(back)}`);
    assert.equal(back.sid, sid);
    assert.ok(
      eventsOf(A.child, (o) => o.event === 'session_resumed' && o.sid === sid).length > 0,
      'node A took it back',
    );
    assert.equal(eventsOf(B.child, 'session_resumed').length, 0);
    assert.ok(await conn.roundTrip('after'), 'the open connection still echoes');
    for (const child of [visit.child, serve]) {
      assert.equal(eventsOf(child, 'session_closed').length, 0, 'no session closed');
      for (const e of eventsOf(child, 'path')) assert.equal(e.sid, sid, 'one session id throughout');
    }
  });
});
