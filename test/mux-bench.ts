/**
 * Mux throughput benchmark (not part of the test run):
 *   npx tsc -p . && node dist/test/mux-bench.js
 * Prints absolute figures and, because the build machine is shared, the ratio
 * to a baseline that moves the same bytes through the same in-memory link in
 * 1200-byte messages without the mux (one allocation and copy per message,
 * like the mux's own framing).
 */
import { once } from 'node:events';
import { Mux, type MuxStream } from '../src/mux/index.js';
import { decodeMuxFrame, encodeMuxData } from '../src/wire/mux-frame.js';

const TOTAL = 64 * 1024 * 1024;
const FRAME = 1200;
const CAPACITY = 256;

/** Two endpoints joined by queues delivered in setImmediate batches. */
function link(onMessage: [(m: Uint8Array) => void, (m: Uint8Array) => void], onDrain: [() => void, () => void]) {
  const q: Uint8Array[][] = [[], []];
  const timer: (NodeJS.Immediate | null)[] = [null, null];
  const deliver = (i: 0 | 1) => {
    timer[i] = null;
    const batch = q[i];
    q[i] = [];
    for (const m of batch) onMessage[i](m);
    onDrain[i]();
    if (q[i].length && !timer[i]) timer[i] = setImmediate(() => deliver(i));
  };
  return {
    send: (i: 0 | 1, m: Uint8Array) => {
      q[i].push(m);
      if (!timer[i]) timer[i] = setImmediate(() => deliver(i));
    },
    canSend: (i: 0 | 1) => q[i].length < CAPACITY,
  };
}

async function baseline(): Promise<number> {
  let got = 0;
  let resume: (() => void) | null = null;
  const l = link([(m) => (got += m.length), () => {}], [() => resume?.(), () => {}]);
  const src = Buffer.alloc(64 * 1024, 1);
  const t0 = performance.now();
  for (let sent = 0; sent < TOTAL;) {
    while (!l.canSend(0)) await new Promise<void>((r) => (resume = r));
    for (let off = 0; off < src.length && l.canSend(0); off += FRAME, sent += FRAME) {
      const m = Buffer.allocUnsafe(FRAME);
      src.copy(m, 0, off % src.length, (off % src.length) + FRAME);
      l.send(0, m);
    }
  }
  while (got < TOTAL) await new Promise((r) => setImmediate(r));
  return TOTAL / ((performance.now() - t0) / 1000);
}

async function viaMux(streams: number): Promise<number> {
  const muxes: Mux[] = [];
  const l = link(
    [(m) => muxes[1].receive(m), (m) => muxes[0].receive(m)],
    [() => muxes[0].pump(), () => muxes[1].pump()],
  );
  muxes.push(
    new Mux({ role: 'client', sendMessage: (f) => l.send(0, f), canSend: () => l.canSend(0) }),
    new Mux({ role: 'server', sendMessage: (f) => l.send(1, f), canSend: () => l.canSend(1) }),
  );
  const [a, b] = muxes;
  let got = 0;
  b.on('stream', (s: MuxStream) => {
    s.on('error', () => {});
    s.on('data', (c: Buffer) => (got += c.length));
  });
  const chunk = Buffer.alloc(64 * 1024, 1);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const s = a.openStream();
      s.on('error', () => {});
      for (let sent = 0; sent < TOTAL / streams; sent += chunk.length) if (!s.write(chunk)) await once(s, 'drain');
      s.end();
    }),
  );
  while (got < TOTAL) await new Promise((r) => setImmediate(r));
  const rate = TOTAL / ((performance.now() - t0) / 1000);
  a.destroy();
  b.destroy();
  return rate;
}

function codec(): number {
  const payload = Buffer.alloc(1390, 7);
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < 500) {
    for (let i = 0; i < 1000; i++) if (!decodeMuxFrame(encodeMuxData(5, payload)).ok) throw new Error('codec');
    n += 1000;
  }
  return n / ((performance.now() - t0) / 1000);
}

const mb = (x: number) => `${(x / 1e6).toFixed(0)} MB/s`;
console.log(`encode+decode 1400-byte DATA frame: ${(codec() / 1e6).toFixed(2)} M frames/s`);
const base = await baseline();
console.log(`baseline, same link, no mux: ${mb(base)}`);
for (const n of [1, 16]) {
  const r = await viaMux(n);
  console.log(`mux, ${n} stream(s), 64 MiB: ${mb(r)}  (${(r / base).toFixed(2)}x baseline)`);
}
