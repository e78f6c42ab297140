#!/usr/bin/env node
// Connect time, measured inside one process that runs the real VisitPeer (the
// class behind `peer visit`), so node's own start-up is not part of the figure:
//   t0           new VisitPeer(), init() starts: no session, no control connection
//   readyMs      init() + listen() resolved (session open, relay paired; CLI prints `ready` here)
//   firstByteMs  a TCP client that connected right then got its first byte back from the service
//   directMs     the `path` event with path=direct was logged
//   warmMs[]     on the same open tunnel: new connection -> first byte (stream open)
//   tunnelColdMs[] the tunnel closed, then a new connection -> first byte: accept with no tunnel open
//   cold --server H:P --name NAME [--mode auto] [--warm 20] [--direct-timeout-ms 5000]   (PEER_SECRET in env)
import { performance } from 'node:perf_hooks';
import type net from 'node:net';
import { VisitPeer } from '../../../peer/visit.js';
import { createLogger } from '../../../src/util/log.js';
import { deriveSecretKey } from '../../../src/crypto/index.js';
import { connect, flags, hostPort, MODE, num, out, runTool } from './common.js';

function firstByte(s: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no byte back within 10 s')), 10_000);
    s.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function timeFirstByte(port: number): Promise<number> {
  const t = performance.now();
  const s = await connect({ host: '127.0.0.1', port });
  const got = firstByte(s);
  s.write(Buffer.from([MODE.echo, 0x2e]));
  await got;
  s.destroy();
  return performance.now() - t;
}

runTool(async () => {
  const m = flags(process.argv.slice(2));
  const secret = process.env.PEER_SECRET;
  if (!secret) throw new Error('PEER_SECRET must be set');
  const mode = (m.get('mode') ?? 'auto') as 'auto' | 'relay' | 'direct';
  const server = hostPort(m.get('server') ?? '');
  let t0 = 0;
  let directMs: number | null = null;
  let directWaiter: (() => void) | null = null;
  // The `path` log line is the public signal ("path event says direct"): time it as it is written.
  const log = createLogger({
    format: 'json',
    level: 'info',
    sink: {
      write(line: string) {
        if (directMs === null && line.includes('"event":"path"') && line.includes('"path":"direct"')) {
          directMs = performance.now() - t0;
          directWaiter?.();
        }
        if (line.includes('"level":"error"') || line.includes('"level":"warn"')) process.stderr.write(line);
      },
    },
  });
  // The secret's scrypt stretching is part of every visitor start: time it alone too.
  const d0 = performance.now();
  await deriveSecretKey(secret);
  const deriveMs = performance.now() - d0;
  t0 = performance.now();
  const peer = new VisitPeer({ name: m.get('name') ?? 'svc', server, secret, mode, log });
  // Phase marks around TunnelHost's steps (wrapped on this instance only).
  const marks: Record<string, number> = {};
  const mark = (k: string) => {
    marks[k] ??= performance.now() - t0;
  };
  const host = peer.host;
  const gather = host.gather.bind(host);
  host.gather = async (c) => {
    mark('gatherStart');
    const g = await gather(c);
    mark('gatherEnd');
    return g;
  };
  const start = host.start.bind(host);
  host.start = async (a) => {
    mark('connected');
    const t = await start(a);
    mark('relayPaired');
    return t;
  };
  await peer.init();
  const addr = await peer.listen({ host: '127.0.0.1', port: 0 });
  const readyMs = performance.now() - t0;
  const s = await connect({ host: '127.0.0.1', port: addr.port });
  const got = firstByte(s);
  s.write(Buffer.from([MODE.echo, 0x2e]));
  await got;
  const firstByteMs = performance.now() - t0;
  s.destroy();
  if (mode !== 'relay' && directMs === null) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, num(m, 'direct-timeout-ms', 5000));
      directWaiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  const warmMs: number[] = [];
  for (let i = 0; i < num(m, 'warm', 20); i++) warmMs.push(await timeFirstByte(addr.port));
  // Tunnel-cold, the definition: a running visitor accepts a TCP
  // connection while no tunnel is open (here: we close it), so the accept has to
  // wait for a whole new session: control, STUN, introduction, handshake, relay.
  const tunnelColdMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    (peer as unknown as { session: { close(r: string): void } | null }).session?.close(
      'bench: tunnel-cold measurement',
    );
    tunnelColdMs.push(await timeFirstByte(addr.port));
  }
  peer.stop();
  const r = (x: number) => Math.round(x * 100) / 100;
  const phases = {
    scrypt: r(deriveMs),
    // init start -> gather start: libsodium ready, UDP socket, scrypt, control connection + welcome
    untilGather: r(marks.gatherStart ?? NaN),
    gather: r((marks.gatherEnd ?? NaN) - (marks.gatherStart ?? NaN)),
    // connect sent -> connected: rendezvous, serve's handshake, STUN gather and accept
    introduction: r((marks.connected ?? NaN) - (marks.gatherEnd ?? NaN)),
    relayPair: r((marks.relayPaired ?? NaN) - (marks.connected ?? NaN)),
    listenAndFirstByte: r(firstByteMs - (marks.relayPaired ?? NaN)),
  };
  out({
    event: 'result',
    readyMs: r(readyMs),
    firstByteMs: r(firstByteMs),
    tunnelColdMs: tunnelColdMs.map(r),
    directMs: directMs === null ? null : r(directMs),
    warmMs: warmMs.map(r),
    phases,
  });
  setTimeout(() => process.exit(0), 100);
}, 60_000);
