/**
 * Micro-benchmark of the crypto hot path: `node dist/scripts/bench/crypto.js [packets]`.
 * Seals and opens 1400-byte datagrams (1371-byte payloads, the size KCP emits
 * with mtu 1400 minus our overhead) on one core, with both AEAD backends, and
 * times a full handshake. Prints payload MB/s per CPU-second of this process
 * (process.cpuUsage), so time spent descheduled on a busy shared machine does
 * not count; wall-clock figures are only that close on an idle core.
 */
import { DatagramType, DATAGRAM_OVERHEAD } from '../../src/wire/datagram.js';
import { allDatagramAeads, type DatagramAead } from '../../src/crypto/aead.js';
import { DatagramOpener, DatagramSealer } from '../../src/crypto/datagram.js';
import { createInitiator, respond, type SessionKeys } from '../../src/crypto/handshake.js';
import { cryptoReady, sodium } from '../../src/crypto/sodium.js';

const PACKET = 1400;
const PAYLOAD = PACKET - DATAGRAM_OVERHEAD;
const ROUNDS = 5;

function keysPair(): { a: SessionKeys; b: SessionKeys } {
  const s = sodium();
  const k1 = s.randombytes_buf(32);
  const k2 = s.randombytes_buf(32);
  return {
    a: { sendKey: k1, recvKey: k2, localIndex: 1, remoteIndex: 2, conv: 1, isInitiator: true },
    b: { sendKey: k2, recvKey: k1, localIndex: 2, remoteIndex: 1, conv: 1, isInitiator: false },
  };
}

function mbps(bytes: number, ms: number): number {
  return bytes / (ms / 1000) / 1e6;
}

/** CPU milliseconds (user + system) used by this process since `since`. */
function cpuMs(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
}

/** Best of ROUNDS, so a neighbour's burst on a shared machine does not decide the figure. */
function best(fn: () => number): number {
  let top = 0;
  for (let r = 0; r < ROUNDS; r++) top = Math.max(top, fn());
  return top;
}

function benchSealer(packets: number): { seal: number; open: number } {
  const { a, b } = keysPair();
  const payload = sodium().randombytes_buf(PAYLOAD);
  const seal = best(() => {
    const s = new DatagramSealer(a);
    const t = process.cpuUsage();
    for (let i = 0; i < packets; i++) s.seal(DatagramType.Data, payload);
    return mbps(packets * PAYLOAD, cpuMs(t));
  });
  const s = new DatagramSealer(a);
  const sealed: Uint8Array[] = [];
  for (let i = 0; i < packets; i++) sealed.push(s.seal(DatagramType.Data, payload));
  const open = best(() => {
    // A fresh opener per round, so the same datagrams are new to it.
    const o = new DatagramOpener(b);
    const t = process.cpuUsage();
    for (let i = 0; i < packets; i++) {
      if (!o.open(sealed[i])) throw new Error('open failed');
    }
    return mbps(packets * PAYLOAD, cpuMs(t));
  });
  return { seal, open };
}

function benchBackend(be: DatagramAead, packets: number): { seal: number; open: number } {
  const key = sodium().randombytes_buf(32);
  const payload = sodium().randombytes_buf(PAYLOAD);
  const out = new Uint8Array(PACKET);
  out[0] = DatagramType.Data;
  const seal = best(() => {
    const t = process.cpuUsage();
    for (let i = 0; i < packets; i++) be.seal(key, payload, out);
    return mbps(packets * PAYLOAD, cpuMs(t));
  });
  const open = best(() => {
    const t = process.cpuUsage();
    for (let i = 0; i < packets; i++) if (!be.open(key, out)) throw new Error('open failed');
    return mbps(packets * PAYLOAD, cpuMs(t));
  });
  return { seal, open };
}

function benchHandshake(n: number): number {
  const psk = sodium().randombytes_buf(32);
  const t = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const hs = createInitiator(psk, { initiatorIndex: i, conv: i, context: 'bench' });
    hs.finish(respond(psk, hs.message, { responderIndex: i, context: 'bench' }).response);
  }
  return cpuMs(t) / n;
}

async function main(): Promise<void> {
  await cryptoReady();
  const packets = Number(process.argv[2] ?? 50_000);
  const r = benchSealer(packets);
  console.log(
    `DatagramSealer.seal  ${r.seal.toFixed(1)} MB/s payload (${PACKET}-byte datagrams, best of ${ROUNDS} x ${packets})`,
  );
  console.log(`DatagramOpener.open  ${r.open.toFixed(1)} MB/s payload`);
  for (const be of allDatagramAeads()) {
    const x = benchBackend(be, packets);
    console.log(`  backend ${be.name.padEnd(7)} seal ${x.seal.toFixed(1)} MB/s, open ${x.open.toFixed(1)} MB/s`);
  }
  console.log(`handshake (initiator + responder, both sides) ${benchHandshake(200).toFixed(2)} CPU-ms`);
}

await main();
