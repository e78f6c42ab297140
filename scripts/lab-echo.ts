#!/usr/bin/env node
// TCP echo server and checking client for the netns tests, run inside a lab
// namespace (lab.spawnNode / lab.exec). Everything is printed as one JSON line
// per event on stdout, so tests parse results instead of scraping text.
//
//   lab-echo server --bind 127.0.0.1:0
//       -> {"event":"ready","port":N}; echoes every connection, half-close aware
//   lab-echo client --to 127.0.0.1:PORT --bytes N [--chunk 65536] [--delay-ms 0] [--timeout-ms 60000]
//       -> {"event":"progress",...} lines at most every 500 ms, then
//          {"event":"result","ok":true|false,"bytes":N,"gotBytes":N,"sent":sha256,"got":sha256,"ms":N,"error"?:...}
//       exit 0 when every byte came back intact, 1 otherwise.
//
// `--delay-ms` sleeps between chunks, making a slow transfer that is still in
// flight when the tunnel changes path.

import crypto from 'node:crypto';
import net from 'node:net';

function out(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function parseArgs(argv: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`${a} needs a value`);
    m.set(a.slice(2), v);
    i++;
  }
  return m;
}

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad HOST:PORT ${s}`);
  return { host: s.slice(0, i), port };
}

function server(args: Map<string, string>): void {
  const { host, port } = hostPort(args.get('bind') ?? '127.0.0.1:0');
  let conns = 0;
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    conns++;
    s.on('error', () => {});
    s.pipe(s);
  });
  srv.listen({ host, port }, () => out({ event: 'ready', port: (srv.address() as net.AddressInfo).port }));
  const stop = () => {
    out({ event: 'stopped', connections: conns });
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** Deterministic bytes (cheaper than randomBytes for 50 MB, and still not compressible by accident). */
function pattern(seed: Buffer, index: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let off = 0;
  for (let i = 0; off < size; i++) {
    const h = crypto.createHash('sha512').update(seed).update(`${index}:${i}`).digest();
    off += h.copy(b, off);
  }
  return b;
}

function client(args: Map<string, string>): void {
  const { host, port } = hostPort(args.get('to') ?? '');
  const total = Number(args.get('bytes') ?? '1048576');
  const chunk = Number(args.get('chunk') ?? '65536');
  const delayMs = Number(args.get('delay-ms') ?? '0');
  const timeoutMs = Number(args.get('timeout-ms') ?? '60000');
  const t0 = Date.now();
  const sent = crypto.createHash('sha256');
  const got = crypto.createHash('sha256');
  let gotBytes = 0;
  let sentBytes = 0;
  let lastProgress = 0;
  let done = false;
  const seed = crypto.randomBytes(16);
  // One random block reused with a varying prefix keeps 50 MB cheap to produce.
  const block = pattern(seed, 0, chunk);

  const finish = (error?: string) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    const sentHex = sent.digest('hex');
    const gotHex = got.digest('hex');
    const ok = !error && gotBytes === total && sentHex === gotHex;
    out({
      event: 'result',
      ok,
      bytes: total,
      sentBytes,
      gotBytes,
      sent: sentHex,
      got: gotHex,
      ms: Date.now() - t0,
      ...(error ? { error } : {}),
    });
    s.destroy();
    process.exitCode = ok ? 0 : 1;
  };
  const timer = setTimeout(() => finish(`timeout after ${timeoutMs} ms`), timeoutMs);

  const s = net.connect({ host, port, allowHalfOpen: true });
  s.on('data', (d: Buffer) => {
    got.update(d);
    gotBytes += d.length;
    const now = Date.now();
    if (now - lastProgress >= 500) {
      lastProgress = now;
      out({ event: 'progress', sentBytes, gotBytes, ms: now - t0 });
    }
  });
  s.on('end', () => finish(gotBytes === total ? undefined : `connection ended after ${gotBytes} of ${total} bytes`));
  s.on('error', (e: NodeJS.ErrnoException) => finish(`socket error: ${e.code ?? e.message}`));
  s.on('close', () => finish(`connection closed after ${gotBytes} of ${total} bytes`));

  let index = 0;
  const nextChunk = (): Buffer => {
    const n = Math.min(chunk, total - sentBytes);
    const b = Buffer.from(block.subarray(0, n));
    // Varies every chunk, so a duplicated or swapped chunk changes the hash.
    if (n >= 4) b.writeUInt32BE(index++ >>> 0, 0);
    return b.subarray(0, n);
  };
  const pump = () => {
    while (sentBytes < total && !done) {
      const b = nextChunk();
      sent.update(b);
      sentBytes += b.length;
      const more = s.write(b);
      if (sentBytes >= total) break;
      if (delayMs > 0) return void setTimeout(pump, delayMs);
      if (!more) return void s.once('drain', pump);
    }
    if (!done) s.end();
  };
  s.once('connect', () => {
    out({ event: 'connected', ms: Date.now() - t0 });
    pump();
  });
}

try {
  const [mode, ...rest] = process.argv.slice(2);
  const args = parseArgs(rest);
  if (mode === 'server') server(args);
  else if (mode === 'client') client(args);
  else
    throw new Error(
      'usage: lab-echo server --bind HOST:PORT | client --to HOST:PORT --bytes N [--chunk N] ' +
        '[--delay-ms N] [--timeout-ms N]',
    );
} catch (e) {
  process.stderr.write(`lab-echo: ${(e as Error).message}\n`);
  process.exit(2);
}
