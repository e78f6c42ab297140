#!/usr/bin/env node
// The plain UDP ceiling of Node dgram between two lab hosts behind cone NATs.
//   udp recv --bind 0.0.0.0:40000 --peer PUBLIC_OF_SENDER:40001 --ms 6000
//       punches towards the sender every 50 ms (opening our NAT for it), counts
//       datagrams; -> {"event":"result","datagrams":N,"bytes":B,"firstMs":t,"lastMs":t}
//   udp send --bind 0.0.0.0:40001 --to PUBLIC_OF_RECEIVER:40000 --ms 3000 [--size 1400]
//       sends as fast as dgram takes them (bounded in-flight sends);
//       -> {"event":"result","sent":N,"ms":t}
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { flags, hostPort, num, out, runTool } from './common.js';
import { sleep } from '../../../src/util/backoff.js';

function bind(addr: { host: string; port: number }): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024, sendBufferSize: 8 * 1024 * 1024 });
    s.once('error', reject);
    s.bind({ address: addr.host, port: addr.port }, () => {
      s.off('error', reject);
      s.on('error', () => {});
      resolve(s);
    });
  });
}

async function recv(m: Map<string, string>): Promise<void> {
  const s = await bind(hostPort(m.get('bind') ?? '0.0.0.0:40000'));
  const peer = hostPort(m.get('peer') ?? '');
  const ms = num(m, 'ms', 6000);
  const punch = Buffer.from('punch');
  const puncher = setInterval(() => s.send(punch, peer.port, peer.host), 50);
  s.send(punch, peer.port, peer.host);
  const t0 = performance.now();
  let datagrams = 0;
  let bytes = 0;
  let first = 0;
  let last = 0;
  s.on('message', (msg) => {
    if (msg.length < 100) return; // the sender's own punches
    const now = performance.now() - t0;
    if (datagrams === 0) first = now;
    last = now;
    datagrams++;
    bytes += msg.length;
  });
  out({ event: 'ready' });
  await sleep(ms);
  clearInterval(puncher);
  s.close();
  out({ event: 'result', datagrams, bytes, firstMs: Math.round(first), lastMs: Math.round(last) });
}

async function send(m: Map<string, string>): Promise<void> {
  const s = await bind(hostPort(m.get('bind') ?? '0.0.0.0:40001'));
  const to = hostPort(m.get('to') ?? '');
  const ms = num(m, 'ms', 3000);
  const buf = Buffer.alloc(num(m, 'size', 1400), 0x42);
  // Open our NAT towards the receiver first; its punches then get in and so do we.
  s.send(Buffer.from('punch'), to.port, to.host);
  await new Promise((r) => setTimeout(r, num(m, 'wait-ms', 300)));
  const t0 = performance.now();
  let sent = 0;
  let inflight = 0;
  let done = false;
  await new Promise<void>((resolve) => {
    const onSent = () => {
      inflight--;
      if (!done) pump();
      else if (inflight === 0) resolve();
    };
    const pump = () => {
      if (performance.now() - t0 >= ms) {
        done = true;
        if (inflight === 0) resolve();
        return;
      }
      while (inflight < 64) {
        inflight++;
        sent++;
        s.send(buf, to.port, to.host, onSent);
      }
    };
    pump();
  });
  s.close();
  out({ event: 'result', sent, ms: Math.round(performance.now() - t0) });
}

runTool(async () => {
  const [cmd, ...rest] = process.argv.slice(2);
  const m = flags(rest);
  if (cmd === 'recv') await recv(m);
  else if (cmd === 'send') await send(m);
  else throw new Error('usage: udp recv|send ...');
}, 60_000);
