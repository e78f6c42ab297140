#!/usr/bin/env node
// Tiny UDP probe for the netns lab self-check: proves what a NAT router does,
// independently of the project's own STUN code.
//
//   reflect --ip A --ip B --port P --port Q
//       binds every (ip, port) pair; answers requests, counts data.
//       Prints {"event":"ready"} on stderr once bound.
//   probe --to IP:PORT[/change] ... [--bind IP:PORT] [--timeout MS] [--tries N] [--size BYTES]
//       from ONE socket, asks each target what source address it saw;
//       change = none|port|ip|both asks the reflector to answer from its other
//       port/address (RFC 5780 style). --size pads the request AND asks for an
//       answer padded to that many bytes, --reply BYTES only the answer (path
//       MTU checks). Prints one JSON result on stdout.
//   burst --to IP:PORT --n N --tag T [--size BYTES]
//       sends N datagrams, then asks how many arrived. Prints JSON on stdout.
//   listen --bind IP:PORT --ms MS
//       counts datagrams that arrive within MS. Prints JSON on stdout.
//   send --to IP:PORT --n N [--bind IP:PORT]
//       sends N datagrams and exits.
//   connected --to IP:PORT --size BYTES --n N
//       from a *connected* socket, sends N datagrams of BYTES (100 ms apart)
//       and reports each send's result and any socket error (an ICMP
//       "fragmentation needed" shows up as an EMSGSIZE error). JSON on stdout.
//
// Wire format: one JSON object per datagram.
//   {"op":"echo","id":1,"change":"port"} -> {"op":"echo","id":1,"seen":"ip:port","via":"ip:port"}
//   ... "reply":N asks for the answer padded (field "pad") to N bytes
//   {"op":"data","tag":"t"}              -> (counted, no reply)
//   {"op":"count","tag":"t","id":2}      -> {"op":"count","tag":"t","id":2,"n":137}

import dgram from 'node:dgram';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { sleep } from '../src/util/backoff.js';

export type Change = 'none' | 'port' | 'ip' | 'both';

export interface ProbeResult {
  to: string;
  change: Change;
  /** the source address the reflector saw (our mapped address), null if no answer */
  seen: string | null;
  /** the address the answer came from */
  via: string | null;
}

export interface ProbeReport {
  local: string;
  results: ProbeResult[];
}

interface Args {
  cmd: string;
  opts: Map<string, string[]>;
}

function parseArgs(argv: string[]): Args {
  const [cmd = '', ...rest] = argv;
  const opts = new Map<string, string[]>();
  for (let i = 0; i < rest.length; i++) {
    const k = rest[i];
    if (!k.startsWith('--')) throw new Error(`unexpected argument ${k}`);
    const v = rest[++i];
    if (v === undefined) throw new Error(`${k} needs a value`);
    opts.set(k.slice(2), [...(opts.get(k.slice(2)) ?? []), v]);
  }
  return { cmd, opts };
}

function one(a: Args, k: string, dflt?: string): string {
  const v = a.opts.get(k)?.[0] ?? dflt;
  if (v === undefined) throw new Error(`--${k} is required`);
  return v;
}

export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad address ${s}`);
  return { host: s.slice(0, i), port };
}

function parseMsg(buf: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(buf.toString('utf8'));
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function bind(sock: dgram.Socket, host: string, port: number): Promise<void> {
  return new Promise((res, rej) => {
    sock.once('error', rej);
    sock.bind(port, host, () => {
      sock.off('error', rej);
      res();
    });
  });
}

/** JSON of `obj` with a "pad" field making it exactly `size` bytes (or as small as it gets). */
function padded(obj: Record<string, unknown>, size: number): string {
  const bare = JSON.stringify({ ...obj, pad: '' });
  return JSON.stringify({ ...obj, pad: 'x'.repeat(Math.max(0, size - bare.length)) });
}

// -- reflector ---------------------------------------------------------------

async function reflect(a: Args): Promise<void> {
  const ips = a.opts.get('ip') ?? [];
  const ports = (a.opts.get('port') ?? []).map(Number);
  if (ips.length < 1 || ports.length < 1) throw new Error('reflect needs --ip and --port');
  const socks = new Map<string, dgram.Socket>();
  const counts = new Map<string, number>();
  const key = (ipI: number, portI: number) => `${ipI}/${portI}`;
  for (let i = 0; i < ips.length; i++) {
    for (let j = 0; j < ports.length; j++) {
      const s = dgram.createSocket('udp4');
      await bind(s, ips[i], ports[j]);
      socks.set(key(i, j), s);
      s.on('message', (buf, rinfo) => {
        const m = parseMsg(buf);
        if (!m) return;
        const seen = `${rinfo.address}:${rinfo.port}`;
        if (m.op === 'echo') {
          const ch = m.change;
          const ii = ch === 'ip' || ch === 'both' ? (i + 1) % ips.length : i;
          const jj = ch === 'port' || ch === 'both' ? (j + 1) % ports.length : j;
          const out = socks.get(key(ii, jj))!;
          const via = `${ips[ii]}:${ports[jj]}`;
          const answer = { op: 'echo', id: m.id, seen, via };
          const want = typeof m.reply === 'number' && m.reply > 0 && m.reply <= 65_000 ? m.reply : 0;
          out.send(padded(answer, want), rinfo.port, rinfo.address);
        } else if (m.op === 'data' && typeof m.tag === 'string') {
          counts.set(m.tag, (counts.get(m.tag) ?? 0) + 1);
        } else if (m.op === 'count' && typeof m.tag === 'string') {
          s.send(
            JSON.stringify({ op: 'count', tag: m.tag, id: m.id, n: counts.get(m.tag) ?? 0 }),
            rinfo.port,
            rinfo.address,
          );
        }
      });
    }
  }
  process.stderr.write(JSON.stringify({ event: 'ready', ips, ports }) + '\n');
  const stop = () => {
    for (const s of socks.values()) s.close();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// -- request/response on one socket ------------------------------------------

/** Send `msg` up to `tries` times until a reply with the same id arrives. */
async function ask(
  sock: dgram.Socket,
  to: { host: string; port: number },
  msg: Record<string, unknown>,
  tries: number,
  timeoutMs: number,
  size = 0,
): Promise<{ m: Record<string, unknown>; from: string } | null> {
  for (let t = 0; t < tries; t++) {
    const got = await new Promise<{ m: Record<string, unknown>; from: string } | null>((res) => {
      const onMsg = (buf: Buffer, rinfo: dgram.RemoteInfo) => {
        const m = parseMsg(buf);
        if (m && m.id === msg.id && m.op === msg.op) done({ m, from: `${rinfo.address}:${rinfo.port}` });
      };
      const timer = setTimeout(() => done(null), timeoutMs);
      const done = (v: { m: Record<string, unknown>; from: string } | null) => {
        clearTimeout(timer);
        sock.off('message', onMsg);
        res(v);
      };
      sock.on('message', onMsg);
      sock.send(size > 0 ? padded(msg, size) : JSON.stringify(msg), to.port, to.host);
    });
    if (got) return got;
  }
  return null;
}

async function openSocket(a: Args): Promise<dgram.Socket> {
  const sock = dgram.createSocket('udp4');
  const b = splitHostPort(one(a, 'bind', '0.0.0.0:0'));
  await bind(sock, b.host, b.port);
  return sock;
}

async function probe(a: Args): Promise<ProbeReport> {
  const timeoutMs = Number(one(a, 'timeout', '400'));
  const tries = Number(one(a, 'tries', '3'));
  const size = Number(one(a, 'size', '0'));
  const sock = await openSocket(a);
  try {
    const addr = sock.address();
    const results: ProbeResult[] = [];
    let id = 1;
    for (const t of a.opts.get('to') ?? []) {
      const [hp, change = 'none'] = t.split('/');
      if (!['none', 'port', 'ip', 'both'].includes(change)) throw new Error(`bad change ${change}`);
      const to = splitHostPort(hp);
      const req: Record<string, unknown> = { op: 'echo', id: id++, change };
      const reply = Number(one(a, 'reply', String(size)));
      if (reply > 0) req.reply = reply;
      const r = await ask(sock, to, req, tries, timeoutMs, size);
      results.push({
        to: hp,
        change: change as Change,
        seen: typeof r?.m.seen === 'string' ? r.m.seen : null,
        via: r ? r.from : null,
      });
    }
    return { local: `${addr.address}:${addr.port}`, results };
  } finally {
    sock.close();
  }
}

async function burst(a: Args): Promise<{ sent: number; received: number | null }> {
  const to = splitHostPort(one(a, 'to'));
  const n = Number(one(a, 'n', '200'));
  const tag = one(a, 'tag', `t${process.pid}`);
  const size = Number(one(a, 'size', '0'));
  const sock = await openSocket(a);
  try {
    // JSON with padding up to `size` bytes, so rate limits can be exercised.
    const bare = JSON.stringify({ op: 'data', tag, pad: '' });
    const payload = JSON.stringify({ op: 'data', tag, pad: 'x'.repeat(Math.max(0, size - bare.length)) });
    for (let i = 0; i < n; i++) {
      sock.send(payload, to.port, to.host);
      // Pace the burst so local queues never drop: only the lab's loss should count.
      if (i % 10 === 9) await sleep(2);
    }
    await sleep(100);
    // The count query crosses the same lossy link: retry it.
    const r = await ask(sock, to, { op: 'count', tag, id: 1 }, 20, 300);
    return { sent: n, received: typeof r?.m.n === 'number' ? r.m.n : null };
  } finally {
    sock.close();
  }
}

async function listen(a: Args): Promise<{ local: string; received: number; from: string[] }> {
  const sock = await openSocket(a);
  const ms = Number(one(a, 'ms', '1000'));
  const from = new Set<string>();
  let received = 0;
  sock.on('message', (_b, rinfo) => {
    received++;
    from.add(`${rinfo.address}:${rinfo.port}`);
  });
  process.stderr.write(JSON.stringify({ event: 'ready' }) + '\n');
  const ad = sock.address();
  await sleep(ms);
  sock.close();
  return { local: `${ad.address}:${ad.port}`, received, from: [...from] };
}

async function send(a: Args): Promise<{ sent: number }> {
  const to = splitHostPort(one(a, 'to'));
  const n = Number(one(a, 'n', '5'));
  const sock = await openSocket(a);
  try {
    for (let i = 0; i < n; i++) {
      sock.send(JSON.stringify({ op: 'data', tag: 'send', i }), to.port, to.host);
      await sleep(20);
    }
    await sleep(50);
    return { sent: n };
  } finally {
    sock.close();
  }
}

async function connected(a: Args): Promise<{ sends: string[]; errors: string[] }> {
  const to = splitHostPort(one(a, 'to'));
  const size = Number(one(a, 'size', '1400'));
  const n = Number(one(a, 'n', '5'));
  const sock = dgram.createSocket('udp4');
  const sends: string[] = [];
  const errors: string[] = [];
  sock.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
  await new Promise<void>((res) => sock.connect(to.port, to.host, res));
  try {
    for (let i = 0; i < n; i++) {
      await new Promise<void>((res) =>
        sock.send(Buffer.alloc(size, 0x20), (e) => {
          sends.push(e ? ((e as NodeJS.ErrnoException).code ?? e.message) : 'ok');
          res();
        }),
      );
      await sleep(100);
    }
    return { sends, errors };
  } finally {
    sock.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  switch (a.cmd) {
    case 'reflect':
      await reflect(a);
      return;
    case 'probe':
      console.log(JSON.stringify(await probe(a)));
      return;
    case 'burst':
      console.log(JSON.stringify(await burst(a)));
      return;
    case 'listen':
      console.log(JSON.stringify(await listen(a)));
      return;
    case 'send':
      console.log(JSON.stringify(await send(a)));
      return;
    case 'connected':
      console.log(JSON.stringify(await connected(a)));
      return;
    default:
      throw new Error(
        'usage: lab-probe reflect|probe|burst|listen|send|connected ... (see the header of scripts/lab-probe.ts)',
      );
  }
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(`lab-probe: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  });
}
