// UDP services (`--proto udp`, issue 22) across real NATs with the real
// binaries: a UDP echo service behind NAT b, reached through `peer visit
// --proto udp` on host a. On the direct path (cone x cone): 2000 datagrams of
// 1000 B come back intact, 50 client ports at once each get their own
// replies, idle flows expire and the serve side's sockets close, oversized
// datagrams are dropped and counted, a DNS-style responder answers through
// its own name, datagrams keep flowing after the visitor's NAT changes its
// address (roaming), and a service that is down is counted without a crash.
// On the relay (symmetric x symmetric): the same 2000 datagrams.
//
// Counters come from the peers' admin sockets (`peer status` JSON): the
// namespaces share /tmp, so each peer gets its own socket path.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ChildProcess } from 'node:child_process';
import { adminRequest } from '../peer/admin.js';
import type { PeerStatus } from '../peer/app.js';
import { maxUserPayload } from '../src/wire/user-datagram.js';
import { stopProcess, waitForEvent } from './lab.js';
import { LAB_UDP, RDV, SECRET, sleep, startTunnelLab, uniquePrefix, type TunnelLab } from './helpers.js';

/** The bar on a lossless lab link. */
const MAX_LOSS_PCT = 2;
/** --udp-idle-timeout of these tests, seconds: short, so expiry is seen within the test. */
const IDLE_S = 2;

interface UdpResult {
  sent: number;
  received: number;
  lost: number;
  wrongPort: number;
  corrupt: number;
  lossPct: number;
  ms: number;
}

/** Runs a lab-udp command inside host a; resolves with its result line. */
async function udpClient(tl: TunnelLab, port: number, args: string[], timeoutMs = 60_000) {
  const child = tl.lab.spawnNode('a', LAB_UDP, [...args, '--to', `127.0.0.1:${port}`]);
  try {
    return await waitForEvent(child, 'result', timeoutMs);
  } finally {
    await stopProcess(child, 500);
  }
}

async function status(sock: string): Promise<PeerStatus> {
  return (await adminRequest(sock, 'status')) as unknown as PeerStatus;
}

/** The `udp` counters of the only entry of the peer at `sock`. */
async function udpOf(sock: string) {
  const s = await status(sock);
  const u = s.entries[0]?.udp;
  assert.ok(u, `a udp entry in ${JSON.stringify(s.entries)}`);
  return u;
}

/** UDP sockets the process `pid` holds in `node`'s namespace. */
async function udpSockets(tl: TunnelLab, node: string, pid: number): Promise<number> {
  const r = await tl.lab.exec(node, ['ss', '-uanpH']);
  return r.stdout.split('\n').filter((l) => l.includes(`pid=${pid},`)).length;
}

/** Polls `check` every 100 ms for up to `ms`; the last value. */
async function until<T>(ms: number, get: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  let v = await get();
  for (const end = Date.now() + ms; !ok(v) && Date.now() < end;) {
    await sleep(100);
    v = await get();
  }
  return v;
}

function adminArgs(prefix: string, who: string): string[] {
  return ['--admin', `/tmp/${prefix}-${who}.sock`, '--udp-idle-timeout', String(IDLE_S)];
}

function assertEcho(r: Record<string, unknown>, what: string, tl: TunnelLab): void {
  const res = r as unknown as UdpResult;
  assert.equal(res.corrupt, 0, `${what}: payloads intact ${JSON.stringify(res)}`);
  assert.equal(res.wrongPort, 0, `${what}: replies reach the client that asked ${JSON.stringify(res)}`);
  assert.ok(res.lossPct <= MAX_LOSS_PCT, `${what}: loss ${res.lossPct}% ${JSON.stringify(res)}\n${tl.dump()}`);
}

test('UDP service on the direct path (cone x cone): echo, 50 ports, expiry, sizes, DNS, roaming, down', async (t) => {
  const prefix = uniquePrefix('udpd');
  const serveSock = `/tmp/${prefix}-serve.sock`;
  const visitSock = `/tmp/${prefix}-visit.sock`;
  const tl = await startTunnelLab(
    t,
    { a: 'cone', b: 'cone' },
    {
      prefix,
      udp: true,
      debug: false,
      serveArgs: adminArgs(prefix, 'serve'),
      visitArgs: adminArgs(prefix, 'visit'),
    },
  );
  if (!tl) return t.skip('network namespaces are not available');
  await tl.waitPath('direct', 20_000);
  const servePid = tl.serve.pid!;
  const baseSockets = await udpSockets(tl, 'b', servePid);

  await t.test('2000 datagrams of 1000 B come back intact', async () => {
    const r = await udpClient(tl, tl.visitPort, ['client', '--count', '2000', '--size', '1000']);
    t.diagnostic(`direct: ${JSON.stringify(r)}`);
    assertEcho(r, 'direct', tl);
    const s = await status(visitSock);
    assert.equal(s.tunnels[0]?.path, 'direct');
    assert.ok(s.entries[0].udp!.datagramsSent >= 2000);
  });

  await t.test('50 client ports at once: replies reach the right client; one serve socket each', async () => {
    const r = await udpClient(tl, tl.visitPort, ['client', '--count', '1000', '--size', '200', '--ports', '50']);
    assertEcho(r, '50 ports', tl);
    const u = await udpOf(serveSock);
    assert.ok(u.flows >= 50, `serve flows ${u.flows}`);
    const socks = await udpSockets(tl, 'b', servePid);
    assert.ok(socks >= baseSockets + 50, `serve UDP sockets: ${socks}, ${baseSockets} before`);
  });

  await t.test('idle flows expire and their sockets close', async () => {
    const u = await until(
      IDLE_S * 1000 + 5000,
      () => udpOf(serveSock),
      (v) => v.flows === 0,
    );
    assert.equal(u.flows, 0, 'serve flows after the idle timeout');
    // Each side sweeps on its own clock, and the visit side heard the last reply after the serve side sent it.
    const v = await until(
      2000,
      () => udpOf(visitSock),
      (x) => x.flows === 0,
    );
    assert.equal(v.flows, 0, 'visit flows after the idle timeout');
    const socks = await until(
      2000,
      () => udpSockets(tl, 'b', servePid),
      (n) => n <= baseSockets,
    );
    // At most the count before the flows (a port-mapping or STUN socket of the serve may have closed since).
    assert.ok(socks <= baseSockets, `the flow sockets are closed: ${socks} UDP sockets, ${baseSockets} before`);
  });

  await t.test('oversized datagrams are dropped and counted', async () => {
    const before = (await udpOf(visitSock)).drops.too_large;
    const path = (await status(visitSock)).tunnels[0]?.pathMtu?.datagram ?? 1472;
    const size = maxUserPayload(path) + 1;
    await udpClient(tl, tl.visitPort, ['send', '--size', String(size), '--count', '3']);
    const u = await until(
      2000,
      () => udpOf(visitSock),
      (v) => v.drops.too_large >= before + 3,
    );
    assert.equal(u.drops.too_large, before + 3);
    // The largest that fits still goes through.
    const r = await udpClient(tl, tl.visitPort, ['client', '--count', '20', '--size', String(size - 1)]);
    assertEcho(r, 'largest datagram', tl);
  });

  await t.test('a DNS-style responder answers through the tunnel', async () => {
    const dns = tl.lab.spawnNode('b', LAB_UDP, ['dns-server', '--bind', '127.0.0.1:0']);
    let serve: ChildProcess | null = null;
    let visit: ChildProcess | null = null;
    try {
      const dnsPort = Number((await waitForEvent(dns, 'ready', 10_000)).port);
      const common = ['--server', `${RDV.host}:${RDV.port}`, '--secret', SECRET, '--no-admin', '--log-format', 'json'];
      serve = tl.lab.spawnCli('b', 'peer', [
        'serve',
        '--name',
        'dns',
        '--local',
        `127.0.0.1:${dnsPort}`,
        '--proto',
        'udp',
        ...common,
      ]);
      await waitForEvent(serve, 'ready', 20_000);
      visit = tl.lab.spawnCli('a', 'peer', ['visit', 'dns', '--bind', '127.0.0.1:0', '--proto', 'udp', ...common]);
      const port = Number((await waitForEvent(visit, 'ready', 20_000)).port);
      const r = await udpClient(tl, port, ['dns', '--count', '200']);
      t.diagnostic(`dns: ${JSON.stringify(r)}`);
      assert.equal(r.wrong, 0, JSON.stringify(r));
      assert.ok(Number(r.answered) >= 196, JSON.stringify(r));
    } finally {
      for (const c of [visit, serve, dns]) if (c) await stopProcess(c, 2000);
    }
  });

  await t.test('datagrams flow again after the visitor NAT changes its address (roaming)', async () => {
    const sid = (await status(visitSock)).tunnels[0]?.sid;
    await tl.lab.changeWanAddress('ra');
    // The session follows: relay while the hole is re-punched, then direct again.
    const r = await until(
      30_000,
      () => udpClient(tl, tl.visitPort, ['client', '--count', '200', '--size', '1000']),
      (v) => Number(v.lossPct) <= MAX_LOSS_PCT,
    );
    assertEcho(r, 'after roaming', tl);
    assert.equal((await status(visitSock)).tunnels[0]?.sid, sid, 'the same session');
  });

  await t.test('the service is down (ICMP port unreachable): counted, no crash', async () => {
    await stopProcess(tl.echo, 2000);
    const before = (await udpOf(serveSock)).drops.unreachable;
    await udpClient(tl, tl.visitPort, ['send', '--size', '100', '--count', '20']);
    const u = await until(
      3000,
      () => udpOf(serveSock),
      (v) => v.drops.unreachable > before,
    );
    assert.ok(u.drops.unreachable > before, JSON.stringify(u.drops));
    assert.equal(tl.serve.exitCode, null, 'serve still runs');
    assert.ok((await status(serveSock)).entries[0].up);
  });
});

test('UDP service on the relay (symmetric x symmetric): 2000 datagrams of 1000 B', async (t) => {
  const prefix = uniquePrefix('udpr');
  const visitSock = `/tmp/${prefix}-visit.sock`;
  const tl = await startTunnelLab(
    t,
    { a: 'symmetric', b: 'symmetric' },
    { prefix, udp: true, debug: false, visitArgs: adminArgs(prefix, 'visit') },
  );
  if (!tl) return t.skip('network namespaces are not available');
  const r = await udpClient(tl, tl.visitPort, ['client', '--count', '2000', '--size', '1000']);
  t.diagnostic(`relay: ${JSON.stringify(r)}`);
  assertEcho(r, 'relay', tl);
  const s = await status(visitSock);
  assert.equal(s.tunnels[0]?.path, 'relay');
  assert.equal(tl.pathSequence().includes('direct'), false);
});
