#!/usr/bin/env node
// The attacker of the netns lab: a small tool run inside the lab's `attacker`
// namespace (203.0.113.66) that throws unauthenticated traffic at the peers'
// public endpoints and at the rendezvous, and reports what it did as JSON.
// It only ever sends to the addresses it is given (all inside the lab).
//
//   lab-attacker [--udp-target HOST:PORT]...   peers' public data endpoints
//                [--stun-target HOST:PORT]...  rendezvous UDP ports
//                [--random N]       random datagrams per target (udp and stun targets)
//                [--forged N]       per udp target: sealed-datagram headers (type 0xA1..0xA5),
//                                   random or learned receiver index, random or just-ahead counter,
//                                   random "ciphertext"
//                [--stun-junk N]    per target (udp and stun): malformed STUN and STUN that is no
//                                   Binding request (never a request a STUN server must answer)
//                [--learn FILE.pcap]  learn receiver indexes and counters per udp target from a capture
//                [--replay FILE.pcap] re-send captured UDP payloads to their original destination
//                                   (only those going to a --udp-target), from our own address
//                [--replay-head N] [--replay-tail N] [--replay-rounds R] [--replay-gap-ms MS]
//                                   per round: the first N and the last N datagrams of the file as
//                                   it is at that moment (the file may still be growing); the report
//                                   counts as replayRecent those within the replay window (4064) of the
//                                   newest counter captured for their receiver
//                [--tcp HOST:PORT --tcp-conns N [--tcp-concurrency C] [--hold-ms MS]]
//                                   open N idle TCP connections (send nothing), hold them MS
//                [--pps N]          UDP send rate cap (default 20000)
//                [--seed S]         seed for the junk generator (default random)
//
// Output, one JSON object per line on stdout:
//   {"event":"ready","port":N}                       UDP socket bound
//   {"event":"udp_done", ...counts}                  random/forged/junk/replay all sent
//   {"event":"tcp_opened", ...counts}                every TCP attempt settled; holding now
//   {"event":"report","udp":{...},"tcp":{...},"received":{...}}   then exit 0
// `received` counts every datagram that came back to our UDP socket (there
// should be none: the test also checks with tcpdump).
//
// The pcap reader (parsePcap) is exported for the tests.

import dgram from 'node:dgram';
import { mulberry32 } from '../src/util/prng.js';
import net from 'node:net';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  decodeStun,
  encodeStun,
  isStunPacket,
  MAGIC_COOKIE,
  StunAttr,
  StunClass,
  StunMethod,
} from '../src/stun/message.js';
import { DATAGRAM_OVERHEAD, MAX_DATAGRAM_LEN } from '../src/wire/datagram.js';
import { sleep } from '../src/util/backoff.js';

// ---------------------------------------------------------------- pcap

export interface PcapPacket {
  /** seconds since the epoch, fractional */
  ts: number;
  src: string;
  dst: string;
  proto: 'udp' | 'tcp' | 'icmp' | 'other';
  sport: number;
  dport: number;
  /** UDP payload (or the bytes after the IPv4 header for other protocols); a view into the file's buffer */
  payload: Buffer;
  /** ICMP type and code, for proto 'icmp' */
  icmpType?: number;
  icmpCode?: number;
}

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_RAW = 101;
const LINKTYPE_LINUX_SLL = 113;

/**
 * Reads a classic pcap file (as tcpdump -w writes it): IPv4 over Ethernet,
 * Linux cooked or raw IP. Stops quietly at a truncated last record, so a file
 * that tcpdump is still writing can be read. Non-IPv4 frames are skipped.
 */
export function parsePcap(buf: Buffer): PcapPacket[] {
  if (buf.length < 24) return [];
  const magicLE = buf.readUInt32LE(0);
  let le: boolean;
  let nano = false;
  if (magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d) {
    le = true;
    nano = magicLE === 0xa1b23c4d;
  } else if (buf.readUInt32BE(0) === 0xa1b2c3d4 || buf.readUInt32BE(0) === 0xa1b23c4d) {
    le = false;
    nano = buf.readUInt32BE(0) === 0xa1b23c4d;
  } else {
    throw new Error('not a pcap file (bad magic)');
  }
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const link = u32(20) & 0xffff;
  const out: PcapPacket[] = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const sec = u32(off);
    const frac = u32(off + 4);
    const incl = u32(off + 8);
    if (off + 16 + incl > buf.length) break; // still being written
    const frame = buf.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    const ip = ipOf(frame, link);
    if (!ip) continue;
    const p = parseIpv4(ip, sec + frac / (nano ? 1e9 : 1e6));
    if (p) out.push(p);
  }
  return out;
}

function ipOf(frame: Buffer, link: number): Buffer | null {
  let off: number;
  let etherType: number;
  if (link === LINKTYPE_ETHERNET) {
    if (frame.length < 14) return null;
    etherType = frame.readUInt16BE(12);
    off = 14;
    if (etherType === 0x8100 && frame.length >= 18) {
      etherType = frame.readUInt16BE(16);
      off = 18;
    }
  } else if (link === LINKTYPE_LINUX_SLL) {
    if (frame.length < 16) return null;
    etherType = frame.readUInt16BE(14);
    off = 16;
  } else if (link === LINKTYPE_RAW) {
    return frame;
  } else {
    return null;
  }
  return etherType === 0x0800 ? frame.subarray(off) : null;
}

function parseIpv4(ip: Buffer, ts: number): PcapPacket | null {
  if (ip.length < 20 || ip[0] >> 4 !== 4) return null;
  const ihl = (ip[0] & 0x0f) * 4;
  const total = Math.min(ip.readUInt16BE(2), ip.length);
  if (ihl < 20 || total < ihl) return null;
  const src = `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`;
  const dst = `${ip[16]}.${ip[17]}.${ip[18]}.${ip[19]}`;
  const body = ip.subarray(ihl, total);
  const proto = ip[9];
  if (proto === 17 && body.length >= 8) {
    const len = Math.min(body.readUInt16BE(4), body.length);
    return {
      ts,
      src,
      dst,
      proto: 'udp',
      sport: body.readUInt16BE(0),
      dport: body.readUInt16BE(2),
      payload: body.subarray(8, Math.max(8, len)),
    };
  }
  if (proto === 6 && body.length >= 4)
    return { ts, src, dst, proto: 'tcp', sport: body.readUInt16BE(0), dport: body.readUInt16BE(2), payload: body };
  if (proto === 1 && body.length >= 2)
    return { ts, src, dst, proto: 'icmp', sport: 0, dport: 0, payload: body, icmpType: body[0], icmpCode: body[1] };
  return { ts, src, dst, proto: 'other', sport: 0, dport: 0, payload: body };
}

export function readPcapFile(file: string): PcapPacket[] {
  try {
    return parsePcap(readFileSync(file));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

// ---------------------------------------------------------------- junk

interface Target {
  host: string;
  port: number;
}
const key = (t: Target) => `${t.host}:${t.port}`;

function hostPort(s: string): Target {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535 || net.isIPv4(s.slice(0, i)) === false)
    throw new Error(`bad IPv4 HOST:PORT ${s}`);
  return { host: s.slice(0, i), port };
}

const prng = mulberry32;

class Junk {
  private rnd: () => number;
  constructor(seed: number) {
    this.rnd = prng(seed);
  }

  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  /** Anything: 1..1500 random bytes, a third of them short. */
  random(): Buffer {
    const n = this.int(3) === 0 ? 1 + this.int(40) : 1 + this.int(1500);
    return this.bytes(n);
  }

  /**
   * A datagram that looks like one of ours: type 0xA1..0xA5, a receiver index
   * (a learned one when given, else random), a counter (just ahead of a
   * learned one, or random), then random bytes where ciphertext and tag go.
   */
  forged(learned?: { receiver: number; counter: bigint }): Buffer {
    const len = DATAGRAM_OVERHEAD + this.int(MAX_DATAGRAM_LEN - DATAGRAM_OVERHEAD + 1);
    const b = this.bytes(len);
    b[0] = 0xa1 + this.int(5);
    if (learned && this.int(4) !== 0) {
      b.writeUInt32BE(learned.receiver >>> 0, 1);
      // Counters the real sender is about to use: a window that moved on a forgery would drop the real ones.
      b.writeBigUInt64BE(BigInt.asUintN(64, learned.counter + BigInt(1 + this.int(3000))), 5);
    }
    return b;
  }

  /**
   * STUN-looking junk that no STUN server has to answer: malformed messages
   * (bad length, overrun, bad FINGERPRINT, attribute after FINGERPRINT,
   * malformed known attributes, old cookie, high bits set, too short) and
   * well-formed messages that are not Binding requests (responses,
   * indications, other methods) or that ask for a reply to port 0.
   */
  stun(): Buffer {
    const tid = this.bytes(12);
    const request = (extra: Partial<Parameters<typeof encodeStun>[0]> = {}) =>
      encodeStun({
        cls: StunClass.Request,
        method: StunMethod.Binding,
        transactionId: tid,
        software: 'x',
        fingerprint: true,
        ...extra,
      });
    const kind = this.int(13);
    switch (kind) {
      case 0: {
        // length field one word too long
        const b = request();
        b.writeUInt16BE(b.readUInt16BE(2) + 4, 2);
        return b;
      }
      case 1: {
        // length not a multiple of 4
        const b = Buffer.concat([request({ fingerprint: false }), Buffer.from([0, 0])]);
        b.writeUInt16BE(b.length - 20, 2);
        return b;
      }
      case 2: {
        // an attribute whose length runs past the end
        const b = request({ fingerprint: false });
        b.writeUInt16BE(0x7ff0, 22);
        return b;
      }
      case 3: {
        // FINGERPRINT that does not match
        const b = request();
        b[b.length - 1] ^= 0x5a;
        return b;
      }
      case 4: {
        // an attribute after FINGERPRINT
        const b = Buffer.concat([request(), Buffer.from([0x80, 0x22, 0, 4, 0x41, 0x41, 0x41, 0x41])]);
        b.writeUInt16BE(b.length - 20, 2);
        return b;
      }
      case 5: {
        // CHANGE-REQUEST of the wrong size (a malformed known attribute)
        return request({ attributes: [{ type: StunAttr.ChangeRequest, value: Buffer.from([0, 0]) }] });
      }
      case 6: {
        // RFC 3489 header (no magic cookie)
        const b = request({ fingerprint: false });
        b.writeUInt32BE((MAGIC_COOKIE ^ 0xffffffff) >>> 0, 4);
        return b;
      }
      case 7: {
        // top bits set
        const b = request();
        b[0] |= 0xc0;
        return b;
      }
      case 8: // a bare, truncated header
        return request().subarray(0, 4 + this.int(16));
      case 9: // a Binding success response nobody asked for
        return encodeStun({
          cls: StunClass.SuccessResponse,
          method: StunMethod.Binding,
          transactionId: tid,
          xorMappedAddress: { address: '203.0.113.66', port: 1 + this.int(65535), family: 'IPv4' },
          fingerprint: true,
        });
      case 10: // an indication
        return encodeStun({
          cls: StunClass.Indication,
          method: StunMethod.Binding,
          transactionId: tid,
          fingerprint: true,
        });
      case 11: // another method (TURN Allocate)
        return encodeStun({ cls: StunClass.Request, method: 0x003, transactionId: tid, fingerprint: true });
      default: // RESPONSE-PORT 0: nowhere to answer to
        return request({ responsePort: 0 });
    }
  }
}

/** Whether a STUN server would have to answer this (a well-formed Binding request); the attacker never sends those. */
export function isAnswerableStun(b: Buffer): boolean {
  if (!isStunPacket(b)) return false;
  const m = decodeStun(b);
  return m !== null && m.cls === StunClass.Request && m.method === StunMethod.Binding && m.responsePort !== 0;
}

// ---------------------------------------------------------------- UDP

class Sender {
  sent = 0;
  errors = 0;
  /** datagrams sent per destination HOST:PORT */
  readonly perTarget: Record<string, number> = {};
  private windowStart = performance.now();
  private inWindow = 0;
  private pending: Promise<void>[] = [];

  constructor(
    private readonly sock: dgram.Socket,
    private readonly pps: number,
  ) {}

  /**
   * Queues one datagram, pacing to `pps`; waits for the kernel to take a
   * batch of 32 at a time (one await per datagram would make a loaded
   * machine, not the rate cap, set the pace).
   */
  async send(b: Buffer, to: Target): Promise<void> {
    if (this.inWindow >= this.pps / 50) {
      await this.flush();
      const wait = 20 - (performance.now() - this.windowStart);
      if (wait > 0) await sleep(wait);
      this.windowStart = performance.now();
      this.inWindow = 0;
    }
    this.inWindow++;
    this.pending.push(
      new Promise<void>((r) =>
        this.sock.send(b, to.port, to.host, (err) => {
          if (err) this.errors++;
          else {
            this.sent++;
            this.perTarget[key(to)] = (this.perTarget[key(to)] ?? 0) + 1;
          }
          r();
        }),
      ),
    );
    if (this.pending.length >= 32) await this.flush();
  }

  /** Waits until every queued datagram has been handed to the kernel. */
  async flush(): Promise<void> {
    const p = this.pending;
    this.pending = [];
    await Promise.all(p);
  }
}

/** Entries of the receivers' replay window (docs/SECURITY.md). */
const REPLAY_WINDOW = 4064n;

interface Learned {
  receiver: number;
  counter: bigint;
}

/** Per destination: receiver indexes seen in captured datagrams of ours, with the highest counter of each. */
function learn(packets: PcapPacket[], targets: Target[]): Map<string, Learned[]> {
  const want = new Set(targets.map(key));
  const by = new Map<string, Map<number, bigint>>();
  for (const p of packets) {
    const k = `${p.dst}:${p.dport}`;
    if (
      p.proto !== 'udp' ||
      !want.has(k) ||
      p.payload.length < DATAGRAM_OVERHEAD ||
      p.payload[0] < 0xa1 ||
      p.payload[0] > 0xa5
    )
      continue;
    const m = by.get(k) ?? new Map<number, bigint>();
    const r = p.payload.readUInt32BE(1);
    const c = p.payload.readBigUInt64BE(5);
    if ((m.get(r) ?? -1n) < c) m.set(r, c);
    by.set(k, m);
  }
  const out = new Map<string, Learned[]>();
  for (const [k, m] of by)
    out.set(
      k,
      [...m].map(([receiver, counter]) => ({ receiver, counter })),
    );
  return out;
}

// ---------------------------------------------------------------- TCP

interface TcpReport {
  attempted: number;
  connected: number;
  connectFailed: number;
  /** first error code the server sent, per code (e.g. limit, timeout) */
  errors: Record<string, number>;
  /** connections the server closed while we held them */
  closedByServer: number;
  /** connections still open when we let go */
  openAtEnd: number;
  /** ms from the first attempt until every attempt had settled */
  openMs: number;
}

/** Reads frames (4-byte length, version, kind, JSON body) just far enough to get the first error code. */
function firstErrorCode(buf: Buffer): string | null {
  if (buf.length < 6) return null;
  const len = buf.readUInt32BE(0);
  if (buf.length < 6 + len || buf[5] !== 1) return null;
  try {
    const m = JSON.parse(buf.subarray(6, 6 + len).toString('utf8')) as { type?: string; code?: string };
    return m.type === 'error' ? String(m.code) : `message:${m.type}`;
  } catch {
    return 'unparsable';
  }
}

async function tcpFlood(
  to: Target,
  n: number,
  concurrency: number,
  holdMs: number,
  onOpened: (r: TcpReport) => void,
): Promise<TcpReport> {
  const r: TcpReport = {
    attempted: 0,
    connected: 0,
    connectFailed: 0,
    errors: {},
    closedByServer: 0,
    openAtEnd: 0,
    openMs: 0,
  };
  const socks = new Set<net.Socket>();
  let holding = true;
  const t0 = performance.now();
  const one = () =>
    new Promise<void>((done) => {
      r.attempted++;
      const s = net.connect({ host: to.host, port: to.port });
      let buf = Buffer.alloc(0);
      let coded = false;
      let connected = false;
      const timer = setTimeout(() => s.destroy(new Error('connect timeout')), 10_000);
      s.on('connect', () => {
        clearTimeout(timer);
        connected = true;
        r.connected++;
        socks.add(s);
        done();
      });
      s.on('data', (d: Buffer) => {
        if (coded || buf.length > 65536) return;
        buf = Buffer.concat([buf, d]);
        const code = firstErrorCode(buf);
        if (code) {
          coded = true;
          r.errors[code] = (r.errors[code] ?? 0) + 1;
        }
      });
      s.on('error', () => {});
      s.on('close', () => {
        clearTimeout(timer);
        socks.delete(s);
        if (!connected) {
          r.connectFailed++;
          done();
        } else if (holding) {
          r.closedByServer++;
        }
      });
    });
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(concurrency, n)) }, async () => {
    while (next < n) {
      next++;
      await one();
    }
  });
  await Promise.all(workers);
  r.openMs = Math.round(performance.now() - t0);
  // The kernel completes handshakes before the server accepts them, so refusals
  // trickle in after every connect has settled: snapshot once the number of
  // open connections has not changed for 1 s (at most 8 s).
  for (
    let last = -1, stableSince = performance.now(), end = performance.now() + 8000;
    performance.now() < end;
    await sleep(100)
  ) {
    if (socks.size !== last) {
      last = socks.size;
      stableSince = performance.now();
    } else if (performance.now() - stableSince >= 1000) {
      break;
    }
  }
  onOpened({ ...r, errors: { ...r.errors }, openAtEnd: socks.size });
  await sleep(holdMs);
  holding = false;
  r.openAtEnd = socks.size;
  for (const s of socks) s.destroy();
  return r;
}

// ---------------------------------------------------------------- main

function out(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

function parseArgs(argv: string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i += 2) {
    const a = argv[i];
    const v = argv[i + 1];
    if (!a.startsWith('--') || v === undefined) throw new Error(`expected --flag value, got ${a}`);
    m.set(a.slice(2), [...(m.get(a.slice(2)) ?? []), v]);
  }
  return m;
}

async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const num = (k: string, d: number) => {
    const v = Number(a.get(k)?.[0] ?? d);
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${k} must be a number >= 0`);
    return v;
  };
  const udpTargets = (a.get('udp-target') ?? []).map(hostPort);
  const stunTargets = (a.get('stun-target') ?? []).map(hostPort);
  const seed = num('seed', crypto.randomInt(2 ** 31));
  const junk = new Junk(seed);

  const sock = dgram.createSocket('udp4');
  const received: { count: number; from: Record<string, number> } = { count: 0, from: {} };
  sock.on('message', (_m, rinfo) => {
    received.count++;
    const k = `${rinfo.address}:${rinfo.port}`;
    received.from[k] = (received.from[k] ?? 0) + 1;
  });
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.bind(0, '0.0.0.0', () => r()));
  out({ event: 'ready', port: sock.address().port, seed });

  // TCP runs alongside the UDP attack.
  const tcpTo = a.get('tcp')?.[0];
  const tcp = tcpTo
    ? tcpFlood(hostPort(tcpTo), num('tcp-conns', 1000), num('tcp-concurrency', 64), num('hold-ms', 5000), (r) =>
        out({ event: 'tcp_opened', ...r }),
      )
    : Promise.resolve(null);

  const sender = new Sender(sock, num('pps', 20_000));
  const udp = {
    random: 0,
    forged: 0,
    forgedLearned: 0,
    stunJunk: 0,
    replayed: 0,
    replayRecent: 0,
    replayRounds: 0,
    skippedAnswerable: 0,
    learnedReceivers: 0,
  };
  const learnFile = a.get('learn')?.[0];
  const learned = learnFile ? learn(readPcapFile(learnFile), udpTargets) : new Map<string, Learned[]>();
  udp.learnedReceivers = [...learned.values()].reduce((n, l) => n + l.length, 0);

  const nRandom = num('random', 0);
  const nForged = num('forged', 0);
  const nStun = num('stun-junk', 0);
  // Interleave everything across targets, so every target gets junk throughout the attack.
  const rounds = Math.max(nRandom, nForged, nStun);
  for (let i = 0; i < rounds; i++) {
    for (const t of [...udpTargets, ...stunTargets]) {
      if (i < nRandom) {
        const b = junk.random();
        if (isAnswerableStun(b)) udp.skippedAnswerable++;
        else {
          await sender.send(b, t);
          udp.random++;
        }
      }
      if (i < nStun) {
        const b = junk.stun();
        if (isAnswerableStun(b)) udp.skippedAnswerable++;
        else {
          await sender.send(b, t);
          udp.stunJunk++;
        }
      }
      if (i < nForged) {
        const l = learned.get(key(t));
        const pick = l?.length ? l[junk.int(l.length)] : undefined;
        const b = junk.forged(pick);
        await sender.send(b, t);
        udp.forged++;
        if (pick && b.readUInt32BE(1) === pick.receiver) udp.forgedLearned++;
      }
    }
  }

  const replayFile = a.get('replay')?.[0];
  if (replayFile) {
    const want = new Set(udpTargets.map(key));
    const head = num('replay-head', 500);
    const tail = num('replay-tail', 500);
    const nRounds = num('replay-rounds', 1);
    for (let r = 0; r < nRounds; r++) {
      if (r > 0) await sleep(num('replay-gap-ms', 1000));
      const pk = readPcapFile(replayFile).filter((p) => p.proto === 'udp' && want.has(`${p.dst}:${p.dport}`));
      const pick = pk.length <= head + tail ? pk : [...pk.slice(0, head), ...pk.slice(pk.length - tail)];
      const newest = learn(pk, udpTargets);
      for (const p of pick) {
        // Recent: within REPLAY_WINDOW of the newest counter captured for its receiver, so the
        // receiver must reject it by its replay bitmap, not merely as "too old".
        const top = newest
          .get(`${p.dst}:${p.dport}`)
          ?.find((l) => p.payload.length >= DATAGRAM_OVERHEAD && l.receiver === p.payload.readUInt32BE(1));
        if (top && top.counter - p.payload.readBigUInt64BE(5) < REPLAY_WINDOW) udp.replayRecent++;
        if (isAnswerableStun(p.payload)) {
          udp.skippedAnswerable++;
          continue;
        }
        await sender.send(p.payload, { host: p.dst, port: p.dport });
        udp.replayed++;
      }
      udp.replayRounds++;
    }
  }
  await sender.flush();
  out({ event: 'udp_done', ...udp, sent: sender.sent, sendErrors: sender.errors });

  const tcpReport = await tcp;
  // Anything a target might still send back in answer has had time to arrive.
  await sleep(num('linger-ms', 500));
  sock.close();
  out({
    event: 'report',
    seed,
    udp: { ...udp, sent: sender.sent, sendErrors: sender.errors, perTarget: sender.perTarget },
    tcp: tcpReport,
    received,
  });
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(`lab-attacker: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}
