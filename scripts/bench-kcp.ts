/**
 * KCP throughput benchmark: our TypeScript KCP against ikcp.c (the node-kcp
 * native addon), each talking to itself over real UDP sockets on loopback,
 * with the same settings and the same driver, without loss and with 10% loss
 * through test/helpers/lossy-udp. Reports MB/s and CPU ms per MB (median of
 * N runs) and writes the "kcp" key of bench/results.json.
 *
 *   npm run bench:kcp
 *     (or: node dist/scripts/bench-kcp.js [--mb 40] [--mb-loss 12] [--runs 3] [--cap-ms 10000] [--no-write])
 *
 * Both ends live in this one process, so CPU per MB is the cost of sender +
 * receiver (+ forwarder when lossy) together; it is the same harness for both
 * implementations, so the ratio is what matters.
 */
import dgram from 'node:dgram';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { createLossyForwarder } from '../test/helpers/lossy-udp.js';
import { cPort, oursPort, type KcpPort, type KcpSettings } from '../test/helpers/kcp-ports.js';
import type { LossyForwarder } from '../test/helpers/lossy-udp.js';

type Impl = 'ours' | 'c';

const SETTINGS: KcpSettings = { stream: false, nodelay: [1, 10, 2, 1], wnd: 1024, mtu: 1400 };
const MESSAGE_BYTES = 16 * 1024;

function makePort(impl: Impl, conv: number, out: (b: Buffer) => void): KcpPort {
  return impl === 'ours' ? oursPort(conv, out, SETTINGS) : cPort(conv, out, SETTINGS);
}

/** A KCP endpoint on a UDP socket, driven by check() timers and a per-turn flush after input. */
class Endpoint {
  readonly sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  port!: KcpPort;
  received = 0;
  datagramsOut = 0;
  bytesOut = 0;
  private remote = 0;
  private timer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  private closed = false;
  onService: (() => void) | null = null;

  constructor() {
    this.sock.on('error', () => {});
  }

  async bind(): Promise<number> {
    await new Promise<void>((r) => this.sock.bind(0, '127.0.0.1', r));
    return this.sock.address().port;
  }

  start(impl: Impl, conv: number, remote: number): void {
    this.remote = remote;
    this.port = makePort(impl, conv, (b) => {
      this.datagramsOut++;
      this.bytesOut += b.length;
      if (!this.closed) this.sock.send(b, this.remote, '127.0.0.1');
    });
    this.sock.on('message', (msg) => {
      if (this.closed) return;
      // Advance KCP's clock first: RTT samples are taken against it during input.
      this.port.update(performance.now());
      this.port.input(msg);
      this.immediate ??= setImmediate(this.batch);
    });
    this.tick();
  }

  private batch = (): void => {
    this.immediate = null;
    if (this.closed) return;
    this.service();
    this.port.flush();
  };

  private tick = (): void => {
    this.timer = null;
    if (this.closed) return;
    this.service();
    const d = Math.max(1, Math.min(10, this.port.delay(performance.now())));
    this.timer = setTimeout(this.tick, d);
  };

  private service(): void {
    const p = this.port;
    for (let m = p.recv(); m; m = p.recv()) this.received += m.length;
    this.onService?.();
    p.update(performance.now());
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.port?.close();
    await new Promise<void>((r) => this.sock.close(() => r()));
  }
}

interface RunResult {
  mbps: number;
  cpuMsPerMb: number;
  seconds: number;
  bytes: number;
  complete: boolean;
}

export async function runOnce(
  impl: Impl,
  bytes: number,
  loss: number,
  capMs: number,
  conv: number,
): Promise<RunResult> {
  const sender = new Endpoint();
  const receiver = new Endpoint();
  let forwarder: LossyForwarder | null = null;
  try {
    const sPort = await sender.bind();
    const rPort = await receiver.bind();
    let toReceiver = rPort;
    let toSender = sPort;
    if (loss > 0) {
      forwarder = await createLossyForwarder({ target: { port: rPort }, dropRate: loss, seed: conv });
      if (process.env.BENCH_DEBUG) {
        const f = forwarder;
        const iv = setInterval(
          () =>
            console.error('fwd', JSON.stringify(f.stats), 'waitSnd', sender.port?.waitSnd(), 'rcvd', receiver.received),
          500,
        );
        iv.unref();
      }
      toReceiver = forwarder.port;
      toSender = forwarder.port;
    }
    const payload = randomBytes(MESSAGE_BYTES);
    let queued = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    sender.start(impl, conv, toReceiver);
    receiver.start(impl, conv, toSender);
    // Keep about two windows' worth queued: enough to never starve the window.
    sender.onService = () => {
      const p = sender.port;
      while (queued < bytes && p.waitSnd() < 2 * SETTINGS.wnd) {
        p.send(payload);
        queued += payload.length;
      }
    };
    sender.onService();
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (receiver.received >= bytes || performance.now() - t0 > capMs) {
          clearInterval(poll);
          resolve();
        }
      }, 2);
      receiver.onService = () => {
        if (receiver.received >= bytes) {
          clearInterval(poll);
          resolve();
        }
      };
    });
    const seconds = (performance.now() - t0) / 1000;
    if (process.env.BENCH_DEBUG) {
      console.error(
        impl,
        'sender out',
        sender.datagramsOut,
        sender.bytesOut,
        'receiver out',
        receiver.datagramsOut,
        receiver.bytesOut,
      );
    }
    const cpu = process.cpuUsage(cpu0);
    const mb = receiver.received / 1e6;
    return {
      mbps: mb / seconds,
      cpuMsPerMb: (cpu.user + cpu.system) / 1000 / Math.max(mb, 1e-9),
      seconds,
      bytes: receiver.received,
      complete: receiver.received >= bytes,
    };
  } finally {
    await sender.close();
    await receiver.close();
    await forwarder?.close();
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

async function main(): Promise<void> {
  const runs = arg('runs', 3);
  const mbLossless = arg('mb', 40);
  const mbLossy = arg('mb-loss', 12);
  const capMs = arg('cap-ms', 10000);
  const write = !process.argv.includes('--no-write');

  const scenarios = [
    { key: 'lossless', loss: 0, bytes: mbLossless * 1e6 },
    { key: 'loss10', loss: 0.1, bytes: mbLossy * 1e6 },
  ] as const;
  const results: Record<string, Record<Impl, RunResult[]>> = {};
  let conv = 1;
  const tStart = performance.now();
  // Warm-up: JIT both paths and the sockets before measuring.
  await runOnce('ours', 2e6, 0, 3000, conv++);
  await runOnce('c', 2e6, 0, 3000, conv++);
  for (const sc of scenarios) {
    results[sc.key] = { ours: [], c: [] };
    for (let i = 0; i < runs; i++) {
      // Alternate so background load on a shared machine hits both alike.
      for (const impl of (i % 2 ? ['c', 'ours'] : ['ours', 'c']) as Impl[]) {
        const r = await runOnce(impl, sc.bytes, sc.loss, capMs, conv++);
        results[sc.key][impl].push(r);
        process.stderr.write(
          `  ${sc.key} ${impl.padEnd(4)} run ${i + 1}: ${r1(r.mbps)} MB/s, ` +
            `${r1(r.cpuMsPerMb)} cpu-ms/MB${r.complete ? '' : ' (hit time cap)'}\n`,
        );
      }
    }
  }

  const med = (k: string, impl: Impl, f: 'mbps' | 'cpuMsPerMb') => median(results[k][impl].map((r) => r[f]));
  const rows = scenarios.map((sc) => ({
    scenario: sc.key,
    ours_mbps: r1(med(sc.key, 'ours', 'mbps')),
    c_mbps: r1(med(sc.key, 'c', 'mbps')),
    ratio: r2(med(sc.key, 'ours', 'mbps') / med(sc.key, 'c', 'mbps')),
    ours_cpu_ms_per_mb: r1(med(sc.key, 'ours', 'cpuMsPerMb')),
    c_cpu_ms_per_mb: r1(med(sc.key, 'c', 'cpuMsPerMb')),
  }));
  console.log(
    `\nKCP loopback UDP, fast mode (nodelay 1, interval 10, resend 2, nc 1), wnd ${SETTINGS.wnd}, ` +
      `mtu ${SETTINGS.mtu}, ${MESSAGE_BYTES / 1024} KiB messages, median of ${runs}`,
  );
  console.table(rows);
  const [ll, l10] = rows;
  console.log(
    `ratio ours/C (no loss): ${ll.ratio}   (10% loss): ${l10.ratio}   ` +
      `total ${r1((performance.now() - tStart) / 1000)} s`,
  );

  if (!write) return;
  const file = fileURLToPath(new URL('../../bench/results.json', import.meta.url));
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    // missing or unreadable: start a fresh file
  }
  all.kcp = {
    ratio_vs_c: ll.ratio,
    ours_mbps: ll.ours_mbps,
    c_mbps: ll.c_mbps,
    loss10: { ratio_vs_c: l10.ratio, ours_mbps: l10.ours_mbps, c_mbps: l10.c_mbps },
    cpu_ms_per_mb: {
      ours: ll.ours_cpu_ms_per_mb,
      c: ll.c_cpu_ms_per_mb,
      ours_loss10: l10.ours_cpu_ms_per_mb,
      c_loss10: l10.c_cpu_ms_per_mb,
    },
    settings: {
      nodelay: SETTINGS.nodelay,
      wnd: SETTINGS.wnd,
      mtu: SETTINGS.mtu,
      message_bytes: MESSAGE_BYTES,
      mb_lossless: mbLossless,
      mb_loss10: mbLossy,
    },
    runs,
    command: 'npm run bench:kcp',
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model ?? 'unknown', node: process.version },
  };
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(all, null, 2) + '\n');
  console.log(`wrote ${file} (key "kcp")`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
