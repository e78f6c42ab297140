#!/usr/bin/env node
// Many concurrent streams: opens `count` connections through the visitor at
// once, pushes `bytes` of a per-stream pattern on each through the echo
// service and checks every byte that comes back.
//   streams --to 127.0.0.1:P --count 500 --bytes 65536
//   -> {"event":"result","ok":bool,"ms":N,"exact":K,"count":N,"errors":[...]}
import { performance } from 'node:perf_hooks';
import { connect, flags, hostPort, MODE, num, out, runTool } from './common.js';

function pattern(id: number, bytes: number): Buffer {
  const b = Buffer.allocUnsafe(bytes);
  let x = (id * 2654435761) >>> 0 || 1;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

async function one(to: { host: string; port: number }, id: number, bytes: number): Promise<boolean> {
  const s = await connect(to, 30_000);
  const data = pattern(id, bytes);
  const chunks: Buffer[] = [];
  let got = 0;
  return new Promise((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= bytes) {
        s.destroy();
        resolve(got === bytes && Buffer.concat(chunks).equals(data));
      }
    });
    s.on('error', reject);
    s.on('close', () => {
      if (got < bytes) reject(new Error(`stream ${id}: closed after ${got} of ${bytes} bytes`));
    });
    s.write(Buffer.concat([Buffer.from([MODE.echo]), data]));
  });
}

runTool(async () => {
  const m = flags(process.argv.slice(2));
  const to = hostPort(m.get('to') ?? '');
  const count = num(m, 'count', 500);
  const bytes = num(m, 'bytes', 65536);
  const t0 = performance.now();
  const results = await Promise.allSettled(Array.from({ length: count }, (_, i) => one(to, i + 1, bytes)));
  const ms = performance.now() - t0;
  const exact = results.filter((r) => r.status === 'fulfilled' && r.value).length;
  const errors = results
    .flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error)?.message ?? r.reason)] : []))
    .slice(0, 5);
  out({ event: 'result', ok: exact === count, ms: Math.round(ms), exact, count, bytes, errors });
  setTimeout(() => process.exit(0), 50);
}, 180_000);
