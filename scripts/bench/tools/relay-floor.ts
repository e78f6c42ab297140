#!/usr/bin/env node
// The relay path's floor: the least work our relay design must do per byte,
// done with our own code for each part and nothing else. The relay bench runs
// it beside `peer visit --mode relay` and `ssh -R` through the same hosts, so
// every run says how far the design itself can go on the machine, and how
// much of that our tunnel leaves on the table (KCP, the mux, the session).
//
// What it keeps of the real relay path: each connection runs our handshake,
// the two ends seal and open 64 KiB records with the session AEAD
// (DatagramSealer / DatagramOpener), carried in the relay's frames
// (FramedSocket), and the middle joins the two legs with the rendezvous's own
// splice(). Both ends dial out to the middle, as peers behind NAT do.
// What it leaves out: KCP, stream multiplexing, windows, paths, control.
//
//   relay-floor relay --a HOST:PORT --b HOST:PORT
//       pairs each connection on --a with the oldest one waiting on --b
//   relay-floor visit --listen HOST:PORT --relay HOST:PORT
//       plaintext connections in; each becomes one sealed leg to --relay (the --a side)
//   relay-floor serve --relay HOST:PORT --local HOST:PORT
//       keeps one leg waiting at --relay (the --b side); when a handshake
//       arrives on it, connects to --local and dials the next waiting leg
// Each prints {"event":"ready"} once it listens (with the ports it got) or has its first leg waiting.
import net from 'node:net';
import { createHash } from 'node:crypto';
import {
  DatagramOpener,
  DatagramSealer,
  cryptoReady,
  createInitiator,
  randomIndex,
  respond,
  type SessionKeys,
} from '../../../src/crypto/index.js';
import { FramedSocket } from '../../../src/transport/framed-socket.js';
import { splice } from '../../../src/transport/splice.js';
import { ReadTarget, switchToUserReads, userReadOptions } from '../../../src/transport/user-reads.js';
import {
  DatagramType,
  MAX_RELAY_DATAGRAM_LEN,
  MAX_RELAY_DATAGRAM_PAYLOAD,
  sealedLength,
} from '../../../src/wire/datagram.js';
import { flags, hostPort, out, runTool } from './common.js';

/** A PSK both ends know; this tool carries benchmark bytes, nothing worth a secret. */
const PSK = createHash('sha256').update('relay-floor bench psk').digest();
const CONTEXT = 'relay-floor';
const NOTHING = new Uint8Array(0);

/**
 * Plaintext socket <-> sealed leg, both ways, with backpressure: reading one
 * side pauses while the other side's socket wants draining. `plainTarget` is
 * where the plaintext socket's reads already go (it was read with user reads);
 * the caller resumes `plain` once anything it read early has been handed over.
 */
function pump(plain: net.Socket, plainTarget: ReadTarget, leg: FramedSocket, keys: SessionKeys): void {
  const sealer = new DatagramSealer(keys);
  const opener = new DatagramOpener(keys);
  const legSock = leg.socket;
  const close = () => {
    plain.destroy();
    leg.destroy();
  };
  plainTarget.handler = (chunk) => {
    for (let off = 0; off < chunk.length; off += MAX_RELAY_DATAGRAM_PAYLOAD) {
      const piece = chunk.subarray(off, off + MAX_RELAY_DATAGRAM_PAYLOAD);
      leg.sendDatagramFilled(sealedLength(piece.length), (o) => sealer.sealInto(DatagramType.Data, piece, o));
    }
    if (!legSock.writableNeedDrain) return true;
    legSock.once('drain', () => plain.resume());
    return false;
  };
  leg.on('datagram', (d: Buffer) => {
    const opened = opener.open(d, MAX_RELAY_DATAGRAM_LEN);
    if (!opened) return close(); // a record that does not open: the leg is broken
    if (!plain.write(opened.payload)) {
      legSock.pause();
      plain.once('drain', () => legSock.resume());
    }
  });
  plain.on('end', () => leg.close());
  plain.on('error', close);
  leg.on('close', () => plain.end());
}

/** Listens (port 0: any free one); resolves with the port. */
async function listen(where: string, onConn: (s: net.Socket) => void): Promise<number> {
  const { host, port } = hostPort(where);
  const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, onConn);
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ host, port }, () => resolve());
  });
  return (srv.address() as net.AddressInfo).port;
}

/** The middle: FIFO pairing of --a and --b connections, then splice(). */
async function relay(m: Map<string, string>): Promise<void> {
  const waiting = { a: [] as net.Socket[], b: [] as net.Socket[] };
  const arrive = (side: 'a' | 'b', s: net.Socket) => {
    s.on('error', () => s.destroy());
    const other = waiting[side === 'a' ? 'b' : 'a'];
    while (other[0]?.destroyed) other.shift();
    const peer = other.shift();
    if (!peer) return void waiting[side].push(s);
    for (const j of splice(s, peer, NOTHING, NOTHING)) j.on('error', () => j.destroy());
  };
  const a = await listen(m.get('a')!, (s) => arrive('a', s));
  const b = await listen(m.get('b')!, (s) => arrive('b', s));
  out({ event: 'ready', a, b });
}

/** The visitor's end: each plaintext connection runs the handshake on a new leg, then pumps. */
async function visit(m: Map<string, string>): Promise<void> {
  const to = hostPort(m.get('relay')!);
  const port = await listen(m.get('listen')!, (plain) => {
    const target = new ReadTarget();
    const moved = switchToUserReads(plain, target.onChunk);
    if (!moved) return plain.destroy();
    const sock = moved.socket;
    const leg = FramedSocket.connect(to, { maxDatagramFrame: MAX_RELAY_DATAGRAM_LEN });
    const hs = createInitiator(PSK, { initiatorIndex: randomIndex(), conv: randomIndex(), context: CONTEXT });
    leg.socket.once('connect', () => leg.sendDatagram(hs.message));
    // Until the handshake completes a closed leg drops the connection; after it, pump() ends it cleanly.
    const dropEarly = () => sock.destroy();
    leg.on('close', dropEarly);
    leg.once('datagram', (response: Buffer) => {
      leg.off('close', dropEarly);
      let keys: SessionKeys;
      try {
        keys = hs.finish(response);
      } catch {
        sock.destroy();
        return leg.destroy(); // not our handshake
      }
      pump(sock, target, leg, keys);
      // What the old socket object had buffered comes first, then what was read since.
      for (const c of [...moved.rest, ...target.early.splice(0)]) target.handler(c);
      sock.resume();
    });
  });
  out({ event: 'ready', port });
}

/** Dial attempts in a row, 200 ms apart, before the serving end gives up on the relay. */
const MAX_DIALS = 50;

/** The serving end: one leg always waiting at the relay; a handshake on it starts a connection. */
async function serve(m: Map<string, string>): Promise<void> {
  const to = hostPort(m.get('relay')!);
  const local = hostPort(m.get('local')!);
  let failures = 0;
  const dial = (up: () => void, fail: (e: Error) => void): void => {
    const leg = FramedSocket.connect(to, { maxDatagramFrame: MAX_RELAY_DATAGRAM_LEN });
    leg.socket.once('connect', () => {
      failures = 0;
      up();
    });
    leg.socket.once('error', (e) => {
      if (++failures >= MAX_DIALS) return fail(new Error(`relay at ${to.host}:${to.port}: ${e.message}`));
      setTimeout(() => dial(up, fail), 200);
    });
    leg.once('datagram', (init: Buffer) => {
      dial(
        () => {},
        (e) => {
          out({ event: 'error', message: e.message });
          process.exit(1);
        },
      );
      let keys: SessionKeys;
      try {
        const r = respond(PSK, init, { responderIndex: randomIndex(), context: CONTEXT });
        leg.sendDatagram(r.response);
        keys = r.keys;
      } catch {
        return leg.destroy(); // not our handshake
      }
      const target = new ReadTarget();
      const plain = net.connect({ ...local, allowHalfOpen: true, onread: userReadOptions(target.onChunk) });
      plain.setNoDelay(true);
      // Records that arrive before the local connect are written once it is up (net buffers them).
      pump(plain, target, leg, keys);
      plain.resume();
    });
  };
  await new Promise<void>((resolve, reject) => dial(resolve, reject));
  out({ event: 'ready' });
}

runTool(async () => {
  const [role, ...rest] = process.argv.slice(2);
  const m = flags(rest);
  await cryptoReady();
  const need = (...keys: string[]) => {
    for (const k of keys) if (!m.get(k)) throw new Error(`relay-floor ${role}: --${k} HOST:PORT is required`);
  };
  if (role === 'relay') {
    need('a', 'b');
    await relay(m);
  } else if (role === 'visit') {
    need('listen', 'relay');
    await visit(m);
  } else if (role === 'serve') {
    need('relay', 'local');
    await serve(m);
  } else throw new Error('usage: relay-floor relay|visit|serve --flag HOST:PORT ...');
  // Serve until killed: the deadline in runTool does not apply to a server.
}, 24 * 3600_000);
