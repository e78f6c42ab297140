#!/usr/bin/env node
// Load generator for the rendezvous: `peers` simulated serve peers, each on its
// own control connection doing hello -> welcome -> register with a valid
// Ed25519 signature over the connection's nonce (and answering `incoming` with
// `accept`), then `visitors` simulated visitors asking for sessions to random
// registered names as fast as the rendezvous answers. Only `connected` replies
// (a real introduction: connect -> incoming -> accept -> connected) are counted.
//
// The rendezvous limits connections per source address (256), so connections
// are spread over many loopback source addresses (127.0.1.x for serve peers,
// 127.0.2.x for visitors). A visitor connection may hold 256 sessions, which
// live as long as the connection: visitors reconnect after `per-visitor` sessions.
//
//   rdv-load --server 127.0.0.1:7100 --peers 10000 --visitors 40 --intro-ms 5000
//   -> {"event":"registered","peers":N,"ms":T}  then  {"event":"result",...}; stays connected until SIGTERM
import crypto from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { generateIdentity, identityReady, signRegistration } from '../../../src/crypto/identity.js';
import { FrameDecoder, FrameKind, PROTOCOL_VERSION, encodeFrame } from '../../../src/wire/frame.js';
import { flags, hostPort, num, out, runTool } from './common.js';

type Msg = Record<string, unknown> & { type: string };

/**
 * A control connection without schema validation: the generator must stay
 * cheap so that the rendezvous, not the load generator, is what gets measured.
 */
class Conn {
  readonly socket: net.Socket;
  private dec = new FrameDecoder();
  onMessage: (m: Msg) => void = () => {};
  closed = false;

  constructor(server: { host: string; port: number }, localAddress: string, onClose: () => void) {
    this.socket = net.connect({ host: server.host, port: server.port, localAddress });
    this.socket.setNoDelay(true);
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      onClose();
    });
    this.socket.on('data', (chunk: Buffer) => {
      const { frames } = this.dec.push(chunk);
      for (const f of frames) {
        if (f.kind !== FrameKind.Control) continue;
        const m = JSON.parse(f.body.toString('utf8')) as Msg;
        if (m.type === 'ping') this.send({ type: 'pong', t: m.t });
        else this.onMessage(m);
      }
    });
    this.socket.once('connect', () =>
      this.send({ type: 'hello', version: PROTOCOL_VERSION, software: 'bench-load/1' }),
    );
  }

  send(m: Record<string, unknown>): void {
    if (!this.closed) this.socket.write(encodeFrame(FrameKind.Control, Buffer.from(JSON.stringify(m))));
  }
}

const FAKE_HS = crypto.randomBytes(90).toString('base64');

/** One simulated `peer serve`: registers `name`, accepts every incoming session. Resolves when registered. */
function servePeer(server: { host: string; port: number }, ip: string, name: string, conns: Conn[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const id = generateIdentity();
    let registered = false;
    const c = new Conn(server, ip, () => {
      if (!registered) reject(new Error(`serve peer ${name} closed before registering`));
    });
    conns.push(c);
    c.onMessage = (m) => {
      if (m.type === 'welcome') {
        const sig = signRegistration(id, Buffer.from(String(m.nonce), 'base64'), name);
        c.send({
          type: 'register',
          name,
          key: Buffer.from(id.publicKey).toString('base64'),
          sig: Buffer.from(sig).toString('base64'),
        });
      } else if (m.type === 'registered') {
        registered = true;
        resolve();
      } else if (m.type === 'incoming') {
        c.send({ type: 'accept', sid: m.sid, hs: FAKE_HS, candidates: [] });
      } else if (m.type === 'error' && !registered) {
        reject(new Error(`register ${name}: ${String(m.code)} ${String(m.message)}`));
      }
    };
  });
}

interface IntroStats {
  connected: number;
  errors: Map<string, number>;
  latencies: number[];
}

/** One simulated visitor connection keeping `window` connect requests in flight until `stopAt`. */
function visitor(
  server: { host: string; port: number },
  ip: string,
  names: string[],
  o: { window: number; perConn: number; stopAt: number },
  st: IntroStats,
): Promise<void> {
  return new Promise((resolve) => {
    const start = () => {
      let issued = 0;
      let answered = 0;
      let seq = 0;
      const pending = new Map<string, number>();
      const c = new Conn(server, ip, () => {
        if (performance.now() < o.stopAt) start();
        else resolve();
      });
      const ask = () => {
        while (pending.size < o.window && issued < o.perConn && performance.now() < o.stopAt) {
          const reqId = `r${++seq}`;
          pending.set(reqId, performance.now());
          issued++;
          c.send({
            type: 'connect',
            reqId,
            name: names[(Math.random() * names.length) | 0],
            hs: FAKE_HS,
            mode: 'relay',
            candidates: [],
          });
        }
        if (pending.size === 0 && (issued >= o.perConn || performance.now() >= o.stopAt)) c.socket.end();
      };
      c.onMessage = (m) => {
        if (m.type === 'welcome') return ask();
        const reqId = typeof m.reqId === 'string' ? m.reqId : '';
        const t = pending.get(reqId);
        if (t === undefined) return;
        pending.delete(reqId);
        answered++;
        if (m.type === 'connected') {
          if (performance.now() <= o.stopAt) {
            st.connected++;
            st.latencies.push(performance.now() - t);
          }
        } else if (m.type === 'error') {
          const k = String(m.code);
          st.errors.set(k, (st.errors.get(k) ?? 0) + 1);
        }
        ask();
      };
      void answered;
    };
    start();
  });
}

runTool(async () => {
  const m = flags(process.argv.slice(2));
  const server = hostPort(m.get('server') ?? '127.0.0.1:7100');
  const peers = num(m, 'peers', 10_000);
  const perIp = num(m, 'per-ip', 200);
  const concurrency = num(m, 'concurrency', 256);
  await identityReady();
  const conns: Conn[] = [];
  const names = Array.from({ length: peers }, (_, i) => `bench-peer-${i}`);
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < peers) {
      const i = next++;
      await servePeer(server, `127.0.1.${1 + Math.floor(i / perIp)}`, names[i], conns);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  out({ event: 'registered', peers, ms: Math.round(performance.now() - t0) });
  await new Promise((r) => setTimeout(r, num(m, 'hold-ms', 3000)));

  const rounds: Record<string, unknown>[] = [];
  for (let round = 0; round < num(m, 'rounds', 1); round++) {
    const st: IntroStats = { connected: 0, errors: new Map(), latencies: [] };
    const introMs = num(m, 'intro-ms', 5000);
    const i0 = performance.now();
    const stopAt = i0 + introMs;
    const visitors = num(m, 'visitors', 40);
    await Promise.all(
      Array.from({ length: visitors }, (_, i) =>
        visitor(
          server,
          `127.0.2.${1 + i}`,
          names,
          { window: num(m, 'window', 8), perConn: num(m, 'per-visitor', 240), stopAt },
          st,
        ),
      ),
    );
    const lat = st.latencies.sort((a, b) => a - b);
    const r = {
      introductions: st.connected,
      perSecond: Math.round(st.connected / (introMs / 1000)),
      latencyMs: { p50: lat[Math.floor(lat.length / 2)] ?? null, p99: lat[Math.floor(lat.length * 0.99)] ?? null },
      errors: Object.fromEntries(st.errors),
      drainMs: Math.round(performance.now() - stopAt),
    };
    rounds.push(r);
    out({ event: 'round', round: round + 1, ...r });
  }
  out({ event: 'result', peers, alive: conns.filter((c) => !c.closed).length, rounds });
  process.on('SIGTERM', () => process.exit(0));
}, 24 * 3600_000);
