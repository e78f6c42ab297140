/**
 * The mux on top of the project's real KCP (message mode), two instances wired
 * back to back in memory with a virtual clock and deterministic datagram loss.
 * Nothing is mocked: every mux frame is a KCP message, every KCP datagram goes
 * through input() on the other side, losses are repaired by KCP's ARQ.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { Kcp } from '../src/kcp/index.js';
import { Mux, type MuxStream } from '../src/mux/index.js';
import { MuxCmd, decodeMuxFrame } from '../src/wire/mux-frame.js';
import { randomData, readAll, sha256, withTimeout } from './mux-harness.js';

/** KCP segments queued or unacked above which the mux holds back; keeps KCP's queue short. */
const KCP_BACKLOG = 64;

class KcpSide {
  readonly kcp: Kcp;
  readonly mux: Mux;
  inbox: Buffer[] = [];
  dropped = 0;
  peer!: KcpSide;

  constructor(
    role: 'client' | 'server',
    private readonly lossPercent: number,
    private readonly rng: () => number,
  ) {
    this.kcp = new Kcp(0x11223344, (buf) => this.peer.inbox.push(Buffer.from(buf)));
    this.kcp.setNodelay(1, 10, 2, 1);
    this.kcp.setWndSize(256, 256);
    this.kcp.setMtu(1400);
    this.mux = new Mux({
      role,
      sendMessage: (frame) => {
        const rc = this.kcp.send(frame);
        assert.equal(rc, 0, 'kcp.send refused a mux frame');
      },
      canSend: () => this.kcp.waitSnd() < KCP_BACKLOG,
    });
  }

  /** Feeds datagrams that arrived, dropping some; then hands complete messages to the mux. */
  deliver(): void {
    const batch = this.inbox;
    this.inbox = [];
    for (const d of batch) {
      if (this.rng() * 100 < this.lossPercent) {
        this.dropped++;
        continue;
      }
      assert.equal(this.kcp.input(d), 0);
    }
  }

  drainMessages(): void {
    let m: Buffer | null;
    while ((m = this.kcp.recv())) this.mux.receive(m);
  }
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 0x100000000;
  };
}

function kcpPair(lossPercent: number) {
  const rng = lcg(12345);
  const a = new KcpSide('client', lossPercent, rng);
  const b = new KcpSide('server', lossPercent, rng);
  a.peer = b;
  b.peer = a;
  let now = 1000;
  let stopped = false;
  /** Virtual time in 5 ms steps; one event-loop turn per step lets the streams run. */
  const run = async (done: () => boolean, maxSteps: number): Promise<number> => {
    for (let step = 0; step < maxSteps; step++) {
      if (done() || stopped) return now;
      now += 5;
      for (const s of [a, b]) s.deliver();
      for (const s of [a, b]) s.kcp.update(now);
      for (const s of [a, b]) s.drainMessages();
      for (const s of [a, b]) s.mux.pump();
      await tick();
    }
    assert.fail(`not done after ${maxSteps} virtual steps`);
  };
  const close = () => {
    stopped = true;
    for (const s of [a, b]) {
      for (const st of s.mux.openStreams()) st.on('error', () => {});
      s.mux.destroy();
    }
  };
  return { a, b, run, close, now: () => now };
}

test('mux over real KCP, 3% loss: 20 echoed streams, sha256-checked; an interactive one stays prompt', async (t) => {
  const p = kcpPair(3);
  t.after(() => p.close());
  p.b.mux.on('stream', (s: MuxStream) => s.pipe(s));

  const jobs: Promise<void>[] = [];
  let finished = 0;
  for (let i = 0; i < 20; i++) {
    const data = randomData(100_000 + i * 5000);
    const s = p.a.mux.openStream();
    jobs.push(
      readAll(s).then((back) => {
        assert.equal(sha256(back), sha256(data), `stream ${s.id}`);
        finished++;
      }),
    );
    s.end(data);
  }

  // While the bulk streams run, a small request/response on another stream.
  const chat = p.a.mux.openStream();
  let chatReply = '';
  chat.on('data', (c: Buffer) => (chatReply += c.toString()));
  let framesBetween = -1;
  let counting = false;
  let counted = 0;
  const origReceive = p.b.mux.receive.bind(p.b.mux);
  // Count mux frames B receives between the chat write and the chat message (frames, not time).
  p.b.mux.receive = (m: Uint8Array) => {
    if (counting) {
      const r = decodeMuxFrame(m);
      if (r.ok && r.frame.cmd === MuxCmd.Data && r.frame.streamId === chat.id) {
        framesBetween = counted;
        counting = false;
      } else counted++;
    }
    origReceive(m);
  };

  await p.run(() => p.b.mux.bytesReceived > 300_000, 20_000);
  counting = true;
  chat.write('ping');
  await p.run(() => chatReply === 'ping', 20_000);
  assert.ok(finished < 20, 'bulk streams were still running');
  // Ahead of the chat frame: what KCP already held (waitSnd < KCP_BACKLOG) plus at most
  // one frame per bulk stream (round-robin). Without the mux's short queue it would wait behind ~2 MB.
  assert.ok(
    framesBetween >= 0 && framesBetween <= KCP_BACKLOG + 20 + 4,
    `${framesBetween} frames before the chat message`,
  );

  chat.end();
  await p.run(() => finished === 20, 100_000);
  await withTimeout(Promise.all(jobs), 5000, 'all echoes verified');
  await p.run(() => p.a.mux.streamCount === 0 && p.b.mux.streamCount === 0, 10_000);
  assert.equal(p.a.kcp.isDeadLink(), false);
  assert.ok(p.a.dropped + p.b.dropped > 20, 'loss was exercised');
  t.diagnostic(
    `chat waited behind ${framesBetween} frames; virtual time ${p.now() - 1000} ms; ` +
      `${p.b.mux.framesReceived} frames to B; ${p.a.dropped + p.b.dropped} datagrams dropped`,
  );
});
