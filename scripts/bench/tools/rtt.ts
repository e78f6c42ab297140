#!/usr/bin/env node
// Interactive latency: echo round trips of small messages through the tunnel,
// one at a time, optionally while bulk streams of the same session saturate it.
//   rtt --to 127.0.0.1:P [--samples 300] [--size 32] [--load none|up|down|both] [--warm-ms 1000] [--gap-ms 2]
//   -> {"event":"result","samples":[ms...],"loadMbps":{"up":x,"down":y}}
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { connect, flags, hostPort, MODE, num, out, runTool } from './common.js';
import { sleep } from '../../../src/util/backoff.js';

/** A bulk stream: 'up' writes to the sink, 'down' reads from the source. Counts bytes. */
async function startLoad(
  to: { host: string; port: number },
  dir: 'up' | 'down',
): Promise<{ bytes: () => number; stop: () => void }> {
  const s = await connect(to);
  let bytes = 0;
  s.on('error', () => {});
  if (dir === 'up') {
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    s.write(Buffer.from([MODE.sink]));
    const pump = () => {
      while (!s.destroyed && s.write(chunk)) bytes += chunk.length;
    };
    s.on('drain', pump);
    pump();
  } else {
    s.write(Buffer.from([MODE.source]));
    s.on('data', (d: Buffer) => {
      bytes += d.length;
    });
  }
  return { bytes: () => bytes, stop: () => s.destroy() };
}

function echoOnce(s: net.Socket, msg: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const t0 = performance.now();
    const timer = setTimeout(() => {
      s.off('data', onData);
      reject(new Error('echo timed out after 10 s'));
    }, 10_000);
    const onData = (d: Buffer) => {
      got += d.length;
      if (got >= msg.length) {
        clearTimeout(timer);
        s.off('data', onData);
        resolve(performance.now() - t0);
      }
    };
    s.on('data', onData);
    s.write(msg);
  });
}

runTool(async () => {
  const m = flags(process.argv.slice(2));
  const to = hostPort(m.get('to') ?? '');
  const samples = num(m, 'samples', 300);
  const size = num(m, 'size', 32);
  const gap = num(m, 'gap-ms', 2);
  const load = m.get('load') ?? 'none';
  const dirs: ('up' | 'down')[] =
    load === 'both' ? ['up', 'down'] : load === 'up' ? ['up'] : load === 'down' ? ['down'] : [];
  const echo = await connect(to);
  echo.write(Buffer.from([MODE.echo]));
  const msg = Buffer.alloc(size, 0x78);
  await echoOnce(echo, msg); // the stream is open end to end before we time anything
  const loads = await Promise.all(dirs.map((d) => startLoad(to, d)));
  await sleep(loads.length ? num(m, 'warm-ms', 1000) : 0);
  const before = loads.map((l) => l.bytes());
  const t0 = performance.now();
  const rtts: number[] = [];
  for (let i = 0; i < samples; i++) {
    rtts.push(await echoOnce(echo, msg));
    if (gap) await sleep(gap);
  }
  const secs = (performance.now() - t0) / 1000;
  const loadMbps: Record<string, number> = {};
  dirs.forEach((d, i) => {
    loadMbps[d] = ((loads[i].bytes() - before[i]) * 8) / 1e6 / secs;
  });
  for (const l of loads) l.stop();
  echo.destroy();
  out({ event: 'result', samples: rtts.map((x) => Math.round(x * 1000) / 1000), loadMbps });
  setTimeout(() => process.exit(0), 50);
}, 120_000);
