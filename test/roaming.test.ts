// Roaming on loopback with the real binaries: a session keeps its id, keys,
// KCP state and streams when its relay leg or its control connection is cut.
// The standalone relay and the rendezvous sit behind a TCP proxy run by the
// test (a network element, not a mock), which cuts a connection with a RST,
// as a vanished address does. The transfer on one TCP connection must
// complete exactly, and no second session may appear.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { eventsOf } from '../scripts/proc.js';
import { Procs, echoTransfer, outputOf, waitForEvent, SECRET } from './helpers/tunnel.js';

/** Forwards every connection to `target`; remembers them so a test can cut one. */
class CutProxy {
  readonly conns: { down: net.Socket; up: net.Socket; bytes: number }[] = [];
  private server!: net.Server;
  port = 0;

  constructor(private readonly target: number) {}

  async start(): Promise<this> {
    this.server = net.createServer((down) => {
      const up = net.connect({ port: this.target, host: '127.0.0.1' });
      const c = { down, up, bytes: 0 };
      this.conns.push(c);
      for (const s of [down, up]) s.on('error', () => {});
      down.on('data', (d: Buffer) => {
        c.bytes += d.length;
      });
      up.on('data', (d: Buffer) => {
        c.bytes += d.length;
      });
      down.pipe(up);
      up.pipe(down);
      down.on('close', () => up.destroy());
      up.on('close', () => down.destroy());
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  /** Cuts a connection with a RST both ways, as a vanished address would end it. */
  cut(c: { down: net.Socket; up: net.Socket }): void {
    c.down.resetAndDestroy();
    c.up.resetAndDestroy();
  }

  close(): void {
    for (const c of this.conns) {
      c.down.destroy();
      c.up.destroy();
    }
    this.server.close();
  }
}

async function until(what: string, cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const SIZE = 40 * 1024 * 1024;

test('relay leg and control connection cut mid-transfer: the same session resumes, the transfer is exact', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const relay = p.spawnCli('relay', ['--listen', '127.0.0.1:0', '--key', 'roam-key', '--log-format', 'json']);
  const rr = await waitForEvent(relay, 'ready', 10_000);
  const relayProxy = await new CutProxy(Number(rr.port)).start();
  t.after(() => relayProxy.close());
  const rdv = await p.rendezvous(['--relay', `127.0.0.1:${relayProxy.port}`, '--relay-key', 'roam-key']);
  const rdvProxy = await new CutProxy(rdv.port).start();
  t.after(() => rdvProxy.close());
  const via = `127.0.0.1:${rdvProxy.port}`;
  const echo = await p.echoServer();
  const serve = await p.serve('roam', `127.0.0.1:${echo.port}`, via, SECRET, ['--mode', 'relay', '--no-admin']);
  const visit = await p.visit('roam', via, SECRET, ['--mode', 'relay', '--no-admin']);
  const first = await waitForEvent(visit.child, 'path', 10_000);
  const sid = String(first.sid);

  const transfer = echoTransfer(visit.port, SIZE, 120_000);
  // Cut the busier relay leg a quarter of the way in.
  await until('a quarter of the transfer', () => relayProxy.conns.some((c) => c.bytes > SIZE / 2), 60_000);
  const leg = relayProxy.conns.reduce((a, b) => (a.bytes >= b.bytes ? a : b));
  relayProxy.cut(leg);
  // And the visitor's control connection (the last one opened), while the relay is still away.
  rdvProxy.cut(rdvProxy.conns[rdvProxy.conns.length - 1]);

  const r = await transfer.catch((e: Error) => {
    for (const [n, c] of [
      ['visit', visit.child],
      ['serve', serve],
      ['relay', relay],
      ['rdv', rdv.child],
    ] as const)
      console.error(
        `--- ${n}\n${outputOf(c)
          .stderr.split('\n')
          .filter((l) => !l.includes('"debug"'))
          .slice(-30)
          .join('\n')}`,
      );
    throw e;
  });
  assert.equal(r.gotBytes, SIZE);
  assert.equal(r.got, r.sent, 'every byte came back, in order');

  const resumes = [...eventsOf(visit.child, 'resume'), ...eventsOf(serve, 'resume')];
  assert.ok(
    resumes.some((e) => e.what === 'relay' && e.sid === sid),
    `a relay resume was logged: ${JSON.stringify(resumes)}`,
  );
  await waitForEvent(visit.child, (o) => o.event === 'resume' && o.what === 'rendezvous', 20_000);
  for (const child of [visit.child, serve]) {
    assert.equal(eventsOf(child, 'session_closed').length, 0, 'no session closed');
    for (const e of eventsOf(child, 'path')) assert.equal(e.sid, sid, 'one session id throughout');
  }
  assert.ok(relayProxy.conns.length >= 3, 'a new relay connection replaced the cut one');
});
