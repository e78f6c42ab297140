#!/usr/bin/env node
// UDP services and checking clients for the UDP tunnel tests (`--proto udp`),
// run inside a lab namespace or on loopback. One JSON line per event on stdout.
//
//   lab-udp echo --bind 127.0.0.1:0
//       -> {"event":"ready","port":N}; sends every datagram back to its sender
//   lab-udp dns-server --bind 127.0.0.1:0
//       -> {"event":"ready","port":N}; answers each A query for NAME with one A record
//          whose address is derived from NAME (dnsAnswerFor), as a tiny DNS responder would
//   lab-udp client --to HOST:PORT --count N --size BYTES [--ports K] [--window W] [--timeout-ms T]
//       -> {"event":"result","sent":N,"received":N,"lost":N,"wrongPort":N,"corrupt":N,"lossPct":X,"ms":N}
//          N datagrams from K client sockets (round robin), at most W unanswered at once; each one
//          must come back to the socket that sent it with its payload intact. A datagram not back
//          within LOST_AFTER_MS counts as lost.
//   lab-udp dns --to HOST:PORT --count N [--timeout-ms T]
//       -> {"event":"result","sent":N,"answered":N,"wrong":N,"ms":N}: one query at a time
//   lab-udp send --to HOST:PORT --size BYTES [--count N]
//       -> {"event":"result","sent":N}: fire and forget (oversized datagrams, a service that is down)

import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';

/** A datagram not answered within this long counts as lost (and frees its window slot). */
const LOST_AFTER_MS = 2000;
/** Client header: socket index (4) + sequence number (4). */
const HEADER = 8;

function out(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function parseArgs(argv: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const a = argv[i];
    if (!a.startsWith('--') || argv[i + 1] === undefined) throw new Error(`bad argument ${a}`);
    m.set(a.slice(2), argv[i + 1]);
  }
  return m;
}

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad HOST:PORT ${s}`);
  return { host: s.slice(0, i), port };
}

function num(args: Map<string, string>, key: string, dflt: number): number {
  const v = args.get(key);
  const n = v === undefined ? dflt : Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`bad --${key} ${v}`);
  return n;
}

function bindServer(args: Map<string, string>, onMessage: (s: dgram.Socket, m: Buffer, r: dgram.RemoteInfo) => void) {
  const { host, port } = hostPort(args.get('bind') ?? '127.0.0.1:0');
  const sock = dgram.createSocket('udp4');
  let count = 0;
  sock.on('message', (m, r) => {
    count++;
    onMessage(sock, m, r);
  });
  sock.bind(port, host, () => out({ event: 'ready', port: sock.address().port }));
  const stop = () => {
    out({ event: 'stopped', datagrams: count });
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** Payload byte i of datagram `seq`: deterministic, so the receiver checks every byte. */
function fill(buf: Buffer, seq: number): void {
  for (let i = HEADER; i < buf.length; i++) buf[i] = (seq * 31 + i * 7) & 0xff;
}

function intact(buf: Buffer, seq: number): boolean {
  for (let i = HEADER; i < buf.length; i++) if (buf[i] !== ((seq * 31 + i * 7) & 0xff)) return false;
  return true;
}

async function client(args: Map<string, string>): Promise<void> {
  const to = hostPort(args.get('to') ?? '');
  const count = num(args, 'count', 2000);
  const size = Math.max(HEADER, num(args, 'size', 1000));
  const nPorts = Math.max(1, num(args, 'ports', 1));
  const window = Math.max(1, num(args, 'window', 32));
  const timeoutMs = num(args, 'timeout-ms', 60_000);
  const socks = await Promise.all(
    Array.from(
      { length: nPorts },
      () =>
        new Promise<dgram.Socket>((resolve) => {
          const s = dgram.createSocket('udp4');
          s.bind(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const t0 = performance.now();
  const due = new Map<number, number>(); // seq -> deadline
  let next = 0;
  let received = 0;
  let lost = 0;
  let wrongPort = 0;
  let corrupt = 0;
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  const pump = () => {
    while (due.size < window && next < count) {
      const seq = next++;
      const idx = seq % nPorts;
      const buf = Buffer.allocUnsafe(size);
      buf.writeUInt32BE(idx, 0);
      buf.writeUInt32BE(seq, 4);
      fill(buf, seq);
      due.set(seq, performance.now() + LOST_AFTER_MS);
      socks[idx].send(buf, to.port, to.host);
    }
    if (next >= count && due.size === 0) finish();
  };
  socks.forEach((s, idx) =>
    s.on('message', (m) => {
      if (m.length < HEADER) return void corrupt++;
      const seq = m.readUInt32BE(4);
      if (!due.delete(seq)) return; // late (already counted lost) or a duplicate
      received++;
      if (m.readUInt32BE(0) !== idx) wrongPort++;
      else if (m.length !== size || !intact(m, seq)) corrupt++;
      pump();
    }),
  );
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [seq, d] of due)
      if (d < now) {
        due.delete(seq);
        lost++;
      }
    pump();
  }, 50);
  const limit = setTimeout(finish, timeoutMs);
  pump();
  await done;
  clearInterval(sweep);
  clearTimeout(limit);
  lost += due.size;
  const sent = next;
  out({
    event: 'result',
    sent,
    received,
    lost,
    wrongPort,
    corrupt,
    lossPct: sent ? Math.round((10000 * (sent - received)) / sent) / 100 : 0,
    ms: Math.round(performance.now() - t0),
  });
  for (const s of socks) s.close();
}

// --- A tiny DNS (RFC 1035) query and answer: one A question, one A answer. ---

function encodeName(name: string): Buffer {
  const parts = name.split('.').filter(Boolean);
  return Buffer.concat([
    ...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p)])),
    Buffer.from([0]),
  ]);
}

/** The A record the responder gives NAME: 198.18.x.y from a hash of the name (checkable by the client). */
export function dnsAnswerFor(name: string): number[] {
  let h = 0;
  for (const c of name) h = (h * 33 + c.charCodeAt(0)) >>> 0;
  return [198, 18, (h >>> 8) & 0xff, h & 0xff];
}

function dnsQuery(id: number, name: string): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  return Buffer.concat([header, encodeName(name), Buffer.from([0, 1, 0, 1])]); // A, IN
}

/** The question's name and where the question ends, or null. */
function readQuestion(m: Buffer): { name: string; end: number } | null {
  if (m.length < 17) return null;
  const labels: string[] = [];
  let i = 12;
  for (let n = 0; n < 64 && i < m.length; n++) {
    const len = m[i];
    if (len === 0) return { name: labels.join('.'), end: i + 5 };
    if (len > 63 || i + 1 + len > m.length) return null;
    labels.push(m.toString('latin1', i + 1, i + 1 + len));
    i += 1 + len;
  }
  return null;
}

function dnsServer(args: Map<string, string>): void {
  bindServer(args, (sock, m, r) => {
    const q = readQuestion(m);
    if (!q || q.end > m.length) return;
    const header = Buffer.from(m.subarray(0, 12));
    header.writeUInt16BE(0x8180, 2); // QR, RD, RA, NOERROR
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(1, 6); // ANCOUNT
    header.writeUInt32BE(0, 8);
    const answer = Buffer.concat([
      Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]), // name pointer, A, IN, TTL 60, RDLENGTH 4
      Buffer.from(dnsAnswerFor(q.name)),
    ]);
    sock.send(Buffer.concat([header, m.subarray(12, q.end), answer]), r.port, r.address);
  });
}

async function dnsClient(args: Map<string, string>): Promise<void> {
  const to = hostPort(args.get('to') ?? '');
  const count = num(args, 'count', 100);
  const timeoutMs = num(args, 'timeout-ms', 30_000);
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const t0 = performance.now();
  let answered = 0;
  let wrong = 0;
  let sent = 0;
  for (let i = 0; i < count && performance.now() - t0 < timeoutMs; i++) {
    const id = (i * 7919 + 1) & 0xffff;
    const name = `host${i}.lab.example`;
    sent++;
    const reply = await new Promise<Buffer | null>((resolve) => {
      const timer = setTimeout(() => {
        sock.off('message', on);
        resolve(null);
      }, LOST_AFTER_MS);
      const on = (m: Buffer) => {
        if (m.length < 12 || m.readUInt16BE(0) !== id) return;
        clearTimeout(timer);
        sock.off('message', on);
        resolve(m);
      };
      sock.on('message', on);
      sock.send(dnsQuery(id, name), to.port, to.host);
    });
    if (!reply) continue;
    const q = readQuestion(reply);
    const ok =
      (reply.readUInt16BE(2) & 0x8000) !== 0 &&
      reply.readUInt16BE(6) === 1 &&
      q?.name === name &&
      reply.length === q.end + 16 &&
      reply.subarray(q.end + 12).equals(Buffer.from(dnsAnswerFor(name)));
    if (ok) answered++;
    else wrong++;
  }
  out({ event: 'result', sent, answered, wrong, ms: Math.round(performance.now() - t0) });
  sock.close();
}

async function send(args: Map<string, string>): Promise<void> {
  const to = hostPort(args.get('to') ?? '');
  const count = num(args, 'count', 1);
  const size = num(args, 'size', 100);
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  for (let i = 0; i < count; i++)
    await new Promise<void>((r) => sock.send(Buffer.alloc(size, i & 0xff), to.port, to.host, () => r()));
  out({ event: 'result', sent: count });
  sock.close();
}

const [cmd, ...rest] = process.argv.slice(2);
const args = parseArgs(rest);
if (cmd === 'echo') bindServer(args, (s, m, r) => s.send(m, r.port, r.address));
else if (cmd === 'dns-server') dnsServer(args);
else if (cmd === 'client') void client(args);
else if (cmd === 'dns') void dnsClient(args);
else if (cmd === 'send') void send(args);
else {
  process.stderr.write('usage: lab-udp echo|dns-server|client|dns|send ...\n');
  process.exit(2);
}
