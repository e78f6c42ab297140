import type net from 'node:net';
import type { FramedSocket } from '../src/transport/framed-socket.js';
import { splice, TokenBucket } from '../src/transport/splice.js';
import { watchPeerFin } from '../src/transport/peer-fin.js';
import { OwnReadBuffer, switchToUserReads, type ChunkHandler } from '../src/transport/user-reads.js';
import {
  forwardInKernel,
  kernelSpliceAvailable,
  type CursorState,
  type KernelForwarding,
  type SpliceEnd,
} from '../src/transport/kernel-splice.js';
import type { Logger } from '../src/util/log.js';
import { FRAME_HEADER_LEN, FrameKind, MAX_CONTROL_FRAME, PROTOCOL_VERSION } from '../src/wire/frame.js';
import { MAX_RELAY_DATAGRAM_LEN } from '../src/wire/datagram.js';
import type { MessageOf } from '../src/wire/control.js';
import { checkResumeToken, parseAnchor } from '../src/crypto/resume.js';
import { verifyTicket, type TicketRole } from '../src/wire/ticket.js';

// Timings and bounds of the relay, in one place (docs/PROTOCOL.md section 3).
/** How long the first side of a session waits for the second. */
export const PAIR_TIMEOUT_MS = 15_000;
/**
 * A standalone relay's connection must say relay_bind or relay_resume this
 * soon after it is accepted: a deadline, not a silence, so a frame dripped a
 * byte at a time cannot hold it.
 */
export const RELAY_BIND_TIMEOUT_MS = 10_000;
/**
 * How long a paired session whose leg died (not a clean close) waits for that
 * side to come back with `relay_resume`, keeping the other leg open. Above
 * the peers' default --resume-timeout, so the relay is never what gives up first.
 */
export const RELAY_RESUME_TIMEOUT_MS = 130_000;
/** Paired sessions that get their own read buffers (see splice.ts). */
const OWN_BUFFER_PAIRS = 256;
/** Bytes a leg with no one to send to may hold (one read's worth, then it is paused). */
const MAX_STASH_BYTES = 1024 * 1024;
/**
 * The longest frame body a joined leg may announce: a relay record (control
 * frames are shorter). The peers refuse longer frames, so a header over it
 * comes from a broken or hostile peer, and the relay ends the session rather
 * than follow, or complete with padding, a frame of up to 4 GiB.
 */
export const MAX_RELAYED_FRAME_BODY = Math.max(MAX_RELAY_DATAGRAM_LEN, MAX_CONTROL_FRAME);

export interface RelayOptions {
  key: Uint8Array;
  log: Logger;
  /** How long the first side of a session waits for the second. */
  pairTimeoutMs?: number;
  /** How long a session that lost a leg waits for `relay_resume`. */
  resumeTimeoutMs?: number;
  /** Cap on sessions waiting for their second side (memory bound). */
  maxPending?: number;
  /** Cap on paired sessions (half-open ones included). */
  maxSessions?: number;
  /** Per-session rate limit in bytes/s, each direction (0 or unset: unlimited). */
  rateBytesPerSec?: number;
  /**
   * Forward resumable sessions in the kernel (splice) when the addon is
   * there (default true; RELAY_KERNEL_SPLICE=0 also turns it off). With a
   * rate limit, sessions always forward in JavaScript.
   */
  kernelSplice?: boolean;
}

interface Pending {
  role: TicketRole;
  fs: FramedSocket;
  timer: NodeJS.Timeout;
  /** Anchor of this side's relay resume chain, when the peer can resume. */
  anchor: Uint8Array | null;
}

/**
 * The relay data path. Each side of a session opens its own TCP connection and
 * presents a ticket; once both are there the relay joins the two sockets and
 * forwards bytes as they come, with TCP backpressure per pair. Pairs share
 * nothing, so one slow session never stalls another. The relay never parses
 * what flows after pairing: it is sealed end to end. For a resumable pair it
 * only follows the 6-byte frame headers, so that a leg can be replaced at a
 * frame boundary (ResumablePair).
 */
export class Relay {
  private pending = new Map<string, Pending>();
  private used = new Map<string, number>();
  private active = 0;
  /** Joined sessions, so close() can end them. */
  private paired = new Set<{ a: net.Socket; b: net.Socket }>();
  /** Paired sessions that can take a leg back, by session id. */
  private resumable = new Map<string, ResumablePair>();
  /** Bytes forwarded in JavaScript, and by kernel forwardings that have stopped. */
  private forwarded = 0;
  /** Whether paired sessions forward in the kernel when they can (kernel-splice.ts). */
  readonly kernelSplice: boolean;
  /** Legs taken back with relay_resume. */
  resumes = 0;

  constructor(readonly opts: RelayOptions) {
    this.kernelSplice = opts.kernelSplice !== false && !opts.rateBytesPerSec && kernelSpliceAvailable();
  }

  /** Bytes forwarded, both directions, all sessions (live kernel forwardings included). */
  get bytesForwarded(): number {
    let n = this.forwarded;
    for (const p of this.resumable.values()) n += p.kernelBytes();
    return n;
  }

  /** Counts bytes forwarded outside a live kernel forwarding. */
  countForwarded(n: number): void {
    this.forwarded += n;
  }

  /** Paired sessions whose bytes the kernel forwards right now. */
  get kernelSessionCount(): number {
    let n = 0;
    for (const p of this.resumable.values()) if (p.inKernel) n++;
    return n;
  }

  get pendingCount(): number {
    return this.pending.size;
  }
  get sessionCount(): number {
    return this.active;
  }
  /** Paired sessions waiting for a lost leg to come back. */
  get halfOpenCount(): number {
    let n = 0;
    for (const p of this.resumable.values()) if (p.halfOpen) n++;
    return n;
  }

  /** Takes over a connection whose first message was `relay_bind`. */
  adopt(fs: FramedSocket, ticketText: string, anchorText?: string): void {
    const { log } = this.opts;
    const check = verifyTicket(this.opts.key, ticketText);
    if (!check.ok) {
      log.warn('relay_rejected', check.error, { remote: fs.remote });
      return fs.fail('bad_ticket', check.error);
    }
    const { sid, role } = check.ticket;
    if (this.used.has(sid)) return fs.fail('bad_ticket', 'relay ticket already used');
    const anchor = parseAnchor(anchorText);
    const other = this.pending.get(sid);
    if (!other) {
      if (this.pending.size >= (this.opts.maxPending ?? 10_000))
        return fs.fail('limit', 'relay is full, try again later');
      const timer = setTimeout(() => {
        this.pending.delete(sid);
        fs.fail('timeout', 'the other side of the session never reached the relay');
      }, this.opts.pairTimeoutMs ?? PAIR_TIMEOUT_MS);
      timer.unref();
      this.pending.set(sid, { role, fs, timer, anchor });
      fs.once('close', () => {
        const p = this.pending.get(sid);
        if (p?.fs === fs) {
          clearTimeout(p.timer);
          this.pending.delete(sid);
        }
      });
      return;
    }
    if (other.role === role) return fs.fail('bad_ticket', 'relay ticket already presented for this side');
    if (this.active >= (this.opts.maxSessions ?? 10_000)) return fs.fail('limit', 'relay is full, try again later');
    clearTimeout(other.timer);
    this.pending.delete(sid);
    this.markUsed(sid, check.ticket.expires);
    if (other.anchor || anchor) {
      const anchors = { [other.role]: other.anchor, [role]: anchor } as Record<TicketRole, Uint8Array | null>;
      const legs = { [other.role]: other.fs, [role]: fs } as Record<TicketRole, FramedSocket>;
      return this.joinResumable(sid, legs, anchors);
    }
    this.join(sid, other.fs, fs);
  }

  /**
   * Takes over a connection whose first message was `relay_resume`: its side
   * of a paired session comes back after its leg died (or from a new address
   * while the old leg still looks alive). Any refusal leaves the session as it was.
   */
  resume(fs: FramedSocket, m: MessageOf<'relay_resume'>): void {
    const pair = this.resumable.get(m.sid);
    if (!pair) {
      this.opts.log.warn('relay_resume_rejected', 'unknown session', { sid: m.sid, remote: fs.remote });
      return fs.fail('unknown_session', 'the relay has no session with this id (ended, or never resumable)', {
        sid: m.sid,
      });
    }
    const why = pair.resume(m.role, fs, m.token);
    if (why) {
      this.opts.log.warn('relay_resume_rejected', why, { sid: m.sid, role: m.role, remote: fs.remote });
      return fs.fail('bad_proof', why, { sid: m.sid });
    }
    this.resumes++;
  }

  /**
   * The rendezvous saw that side of the session close its control connection
   * itself (its process stopped or died): it will not resume, so its leg, if
   * already lost, ends the session now, and a later loss ends it at once.
   */
  sideGone(sid: string, role: TicketRole): void {
    this.resumable.get(sid)?.sideGone(role);
  }

  close(): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.fs.destroy();
    }
    this.pending.clear();
    for (const p of this.paired) {
      p.a.destroy();
      p.b.destroy();
    }
    this.paired.clear();
    for (const p of [...this.resumable.values()]) p.end('relay closing');
  }

  private join(sid: string, a: FramedSocket, b: FramedSocket): void {
    a.send({ type: 'relay_ready' });
    b.send({ type: 'relay_ready' });
    const [sa, sb] = splice(a.socket, b.socket, a.detach(), b.detach(), {
      onBytes: (n) => {
        this.forwarded += n;
      },
      rateBytesPerSec: this.opts.rateBytesPerSec ?? 0,
      // 2 x 64 KiB of read buffers per pair: bounded to 32 MB, the rest use pipe().
      ownBuffers: this.active < OWN_BUFFER_PAIRS,
    });
    this.active++;
    this.opts.log.debug('relay_paired', 'relay session paired', { sid });
    const pair = { a: sa, b: sb };
    this.paired.add(pair);
    let done = false;
    const end = () => {
      if (done) return;
      done = true;
      this.active--;
      this.paired.delete(pair);
      sa.destroy();
      sb.destroy();
    };
    for (const s of [sa, sb]) {
      s.on('error', end);
      s.once('close', end);
    }
  }

  private joinResumable(
    sid: string,
    legs: Record<TicketRole, FramedSocket>,
    anchors: Record<TicketRole, Uint8Array | null>,
  ): void {
    this.active++;
    const pair = new ResumablePair(this, sid, anchors, this.active <= OWN_BUFFER_PAIRS, () => {
      this.active--;
      this.resumable.delete(sid);
    });
    this.resumable.set(sid, pair);
    this.opts.log.debug('relay_paired', 'relay session paired (resumable)', { sid });
    pair.attach('visitor', legs.visitor);
    pair.attach('server', legs.server);
  }

  private markUsed(sid: string, expires: number): void {
    this.used.set(sid, expires);
    if (this.used.size > 4096) {
      const now = Date.now() / 1000;
      for (const [k, exp] of this.used) if (exp < now) this.used.delete(k);
    }
  }
}

/**
 * Where a byte stream of relay frames is: between frames, inside a header, or
 * inside a body. Reads only headers; bodies are skipped by length.
 */
export class FrameCursor {
  private readonly hdr = Buffer.alloc(FRAME_HEADER_LEN);
  private hdrLen = 0;
  private remaining = 0;
  /**
   * The body length of a header over `maxBody`, once one was read: the
   * cursor stops at it (walk() goes no further) and the stream is broken.
   */
  oversize: number | null = null;

  constructor(private readonly maxBody = MAX_RELAYED_FRAME_BODY) {}

  get atBoundary(): boolean {
    return this.hdrLen === 0 && this.remaining === 0;
  }

  /** Where the stream is, for a kernel forwarding to go on from. */
  state(): CursorState {
    return { header: Buffer.from(this.hdr.subarray(0, this.hdrLen)), remaining: this.remaining };
  }

  /** Goes on from where a kernel forwarding stopped (which stops at an oversize header too). */
  restore(s: CursorState): void {
    if (s.remaining > this.maxBody) {
      this.oversize = s.remaining;
      return;
    }
    s.header.copy(this.hdr);
    this.hdrLen = s.header.length;
    this.remaining = s.remaining;
  }

  /**
   * Walks `chunk` from `from`. With `stopAtBoundary`, stops at the first
   * frame boundary at or after `from` and returns its offset; otherwise walks
   * it all. Returns chunk.length when no boundary was reached. Stops, too,
   * after a header that announces more than the limit (see `oversize`).
   */
  walk(chunk: Uint8Array, from = 0, stopAtBoundary = false): number {
    let i = from;
    while (i < chunk.length && this.oversize === null) {
      if (stopAtBoundary && this.atBoundary) return i;
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - i);
        this.remaining -= n;
        i += n;
        continue;
      }
      this.hdr[this.hdrLen++] = chunk[i++];
      if (this.hdrLen === FRAME_HEADER_LEN) {
        const length = this.hdr.readUInt32BE(0);
        this.hdrLen = 0;
        if (length > this.maxBody) this.oversize = length;
        else this.remaining = length;
      }
    }
    return i;
  }

  /**
   * Bytes that complete the frame in progress: the rest of its header (a
   * datagram frame whose unknown length bytes are 0) and a zero body. The
   * receiver reads a datagram that fails its tag and drops it.
   */
  padding(): Buffer {
    if (this.atBoundary) return Buffer.alloc(0);
    let head = Buffer.alloc(0);
    let body = this.remaining;
    if (this.hdrLen > 0) {
      const h = Buffer.from(this.hdr);
      h.fill(0, this.hdrLen, 4);
      if (this.hdrLen <= 4) h[4] = PROTOCOL_VERSION;
      if (this.hdrLen <= 5) h[5] = FrameKind.Datagram;
      head = h.subarray(this.hdrLen);
      body = h.readUInt32BE(0);
    }
    return Buffer.concat([head, Buffer.alloc(body)]);
  }

  reset(): void {
    this.hdrLen = 0;
    this.remaining = 0;
  }
}

const ROLES: readonly TicketRole[] = ['visitor', 'server'];
const otherRole = (r: TicketRole): TicketRole => (r === 'visitor' ? 'server' : 'visitor');

interface Leg {
  role: TicketRole;
  socket: net.Socket;
  /** Where this leg's outgoing stream is (what it sent us). */
  cursor: FrameCursor;
  /** Read while the other side was away, from a frame boundary on; the leg is paused meanwhile. */
  stash: Buffer | null;
  /** Skipping the rest of a frame whose start went to a leg that died. */
  discarding: boolean;
  dead: boolean;
  /** It sent a FIN: the session ended on purpose. */
  ended: boolean;
  bucket: TokenBucket | null;
  timer: NodeJS.Timeout | null;
  /** Reads into our own buffer (switchToUserReads): pause() stops its reading at once, which the kernel path needs. */
  userReads: boolean;
}

/**
 * A paired session whose legs can be replaced: when a leg dies with an error
 * (not a FIN), the other stays open for the resume timeout, and the lost side
 * comes back with `relay_resume` and a token from its resume chain. The
 * relay follows frame headers (FrameCursor), so each leg's stream stays whole
 * frames: a frame cut by a dying leg is completed with padding the receiver
 * drops, and what the other side sent meanwhile waits (paused, then
 * forwarded) from the next frame boundary.
 */
class ResumablePair {
  private legs: Record<TicketRole, Leg | null> = { visitor: null, server: null };
  private timer: NodeJS.Timeout | null = null;
  private done = false;
  private readonly bufs: Record<TicketRole, OwnReadBuffer | null>;
  /**
   * The kernel forwarding between the two legs, while there is one, and its
   * legs in the order given (index 0 is what the addon calls side 0).
   */
  private kernel: { fwd: KernelForwarding; legs: [Leg, Leg] } | null = null;
  /** The kernel stopped for these legs (an end of stream or an error); only a new leg tries again. */
  private kernelOff = false;
  /** An enterKernel() is scheduled for the end of this turn. */
  private kernelRetry = false;

  constructor(
    private readonly relay: Relay,
    readonly sid: string,
    private readonly held: Record<TicketRole, Uint8Array | null>,
    ownBuffers: boolean,
    private readonly onEnd: () => void,
  ) {
    this.bufs = {
      visitor: ownBuffers ? new OwnReadBuffer() : null,
      server: ownBuffers ? new OwnReadBuffer() : null,
    };
  }

  get halfOpen(): boolean {
    return !this.legs.visitor || !this.legs.server;
  }

  get inKernel(): boolean {
    return this.kernel !== null;
  }

  /** Bytes the live kernel forwarding has written (0 without one). */
  kernelBytes(): number {
    return this.kernel ? this.kernel.fwd.bytes[0] + this.kernel.fwd.bytes[1] : 0;
  }

  sideGone(role: TicketRole): void {
    this.held[role] = null;
    if (!this.legs[role]) this.end(`the ${role} side is gone`);
  }

  /** Checks a resume proof and, if it holds, makes `fs` this side's leg. Returns why not, or null. */
  resume(role: TicketRole, fs: FramedSocket, token: string): string | null {
    const held = this.held[role];
    if (!held) return `the ${role} side of this session gave no resume anchor and cannot be resumed`;
    const check = checkResumeToken(held, token, this.sid, role, 'relay');
    if (!check.ok) return check.reason;
    this.held[role] = check.next;
    this.leaveKernel();
    const old = this.legs[role];
    if (old) this.retire(old);
    this.attach(role, fs);
    this.relay.opts.log.info('relay_resumed', `relay session ${this.sid}: the ${role} side is back`, {
      sid: this.sid,
      role,
    });
    return null;
  }

  attach(role: TicketRole, fs: FramedSocket): void {
    fs.send({ type: 'relay_ready' });
    const rest = fs.detach();
    const leg: Leg = {
      role,
      socket: fs.socket,
      cursor: new FrameCursor(),
      stash: null,
      discarding: false,
      dead: false,
      ended: false,
      bucket: this.relay.opts.rateBytesPerSec ? new TokenBucket(this.relay.opts.rateBytesPerSec) : null,
      timer: null,
      userReads: false,
    };
    const handler: ChunkHandler = (chunk) => this.forward(leg, chunk);
    const own = this.bufs[role];
    const moved = own ? switchToUserReads(fs.socket, handler, own) : null;
    if (moved) {
      leg.socket = moved.socket;
      leg.userReads = true;
    } else {
      fs.socket.on('data', (chunk: Buffer) => {
        if (!this.forward(leg, chunk)) fs.socket.pause();
      });
    }
    const sock = leg.socket;
    sock.on('error', () => {});
    // Not just 'end': a RST behind unread bytes shows as one (peer-fin.ts).
    watchPeerFin(sock, (fin) => {
      leg.ended = fin;
    });
    sock.once('close', () => this.legClosed(leg));
    this.legs[role] = leg;
    if (!this.halfOpen && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    // Bytes that came with the bind or resume message, then whatever the old object had buffered.
    if (rest.length) this.forward(leg, rest);
    for (const c of moved?.rest ?? []) this.forward(leg, c);
    // The other side may have been waiting for this one: its stash goes first, then it reads again.
    const other = this.legs[otherRole(role)];
    if (other && !other.dead) this.release(other, sock);
    this.kernelOff = false;
    this.enterKernel();
  }

  end(reason: string): void {
    if (this.done) return;
    this.leaveKernel();
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    for (const r of ROLES) {
      const leg = this.legs[r];
      if (!leg) continue;
      leg.dead = true;
      if (leg.timer) clearTimeout(leg.timer);
      leg.socket.destroy();
    }
    this.relay.opts.log.debug('relay_ended', `relay session ${this.sid} ended: ${reason}`, { sid: this.sid });
    this.onEnd();
  }

  /** A leg's chunk: to the other side, or (while it is away) up to a frame boundary into the stash. */
  private forward(leg: Leg, chunk: Buffer): boolean {
    if (leg.dead || this.done) return false;
    this.relay.countForwarded(chunk.length);
    const other = this.legs[otherRole(leg.role)];
    const out = other && !other.dead ? other.socket : null;
    let data: Buffer = chunk;
    if (!out || leg.discarding) {
      // The frame in progress began on a leg that is gone: nobody will ever read its start.
      if (!leg.cursor.atBoundary) {
        const off = leg.cursor.walk(data, 0, true);
        if (leg.cursor.oversize !== null) return this.badFrame(leg);
        if (!leg.cursor.atBoundary) {
          leg.discarding = true;
          return true;
        }
        data = data.subarray(off);
      }
      leg.discarding = false;
    }
    if (!data.length) return true;
    leg.cursor.walk(data);
    // Nothing of a chunk that holds a broken header is forwarded.
    if (leg.cursor.oversize !== null) return this.badFrame(leg);
    if (!out) {
      // Wait for the other side, paused: TCP backpressure holds the sender.
      const kept = leg.stash ? Buffer.concat([leg.stash, data]) : Buffer.from(data);
      if (kept.length > MAX_STASH_BYTES) {
        // Cannot happen while reads pause (one read at most); never buffer without bound.
        this.end('a leg kept sending while the other side was away');
        return false;
      }
      leg.stash = kept;
      return false;
    }
    const ok = out.write(data);
    // Part of the chunk is queued and points into this leg's read buffer: the next reads go elsewhere.
    if (out.writableLength > 0) this.bufs[leg.role]?.retire();
    let go = true;
    if (!ok) {
      out.once('drain', () => this.tryResume(leg));
      go = false;
    }
    const wait = leg.bucket?.take(data.length) ?? 0;
    if (wait > 0) {
      if (!leg.timer) leg.timer = setTimeout(() => this.onBucket(leg), wait).unref();
      go = false;
    }
    // Forwarding in JavaScript while the kernel could: try again once this
    // turn's reads are done (not from inside a read callback).
    if (go && leg.userReads && !this.kernelRetry && !this.kernelOff && this.relay.kernelSplice) {
      this.kernelRetry = true;
      setImmediate(() => {
        this.kernelRetry = false;
        this.enterKernel();
      });
    }
    return go;
  }

  /** `leg` announced a frame longer than any peer sends: the session ends (a peer would refuse the frame anyway). */
  private badFrame(leg: Leg): false {
    const length = leg.cursor.oversize;
    this.relay.opts.log.warn(
      'relay_bad_frame',
      `relay session ${this.sid}: the ${leg.role} side announced a frame of ${length} bytes ` +
        `(the most is ${MAX_RELAYED_FRAME_BODY}); ending the session`,
      { sid: this.sid, role: leg.role, length, max: MAX_RELAYED_FRAME_BODY, code: 'frame_too_large' },
    );
    this.end(`the ${leg.role} side sent an oversize frame`);
    return false;
  }

  private onBucket(leg: Leg): void {
    leg.timer = null;
    this.tryResume(leg);
  }

  /** Resumes reading `leg` once its destination drained and the rate limit allows. */
  private tryResume(leg: Leg): void {
    // A 'drain' (or timer) from before the kernel took over: Node must not
    // read a socket the kernel is forwarding, or bytes would go twice.
    if (leg.dead || this.done || this.kernel) return;
    const other = this.legs[otherRole(leg.role)];
    if (!other || other.dead) return; // resumed when the other side comes back
    if (other.socket.writableNeedDrain) return;
    const wait = leg.bucket?.wait() ?? 0;
    if (wait > 0) {
      if (!leg.timer) leg.timer = setTimeout(() => this.onBucket(leg), wait).unref();
      return;
    }
    leg.socket.resume();
    this.enterKernel();
  }

  /**
   * Hands forwarding to the kernel (kernel-splice.ts) when both legs are
   * here and the JavaScript path holds nothing of its own: no stash, no
   * frame being discarded, nothing queued to write (a rate-limited relay
   * never forwards in the kernel: Relay.kernelSplice). Where it cannot
   * start, the JavaScript path simply goes on.
   */
  private enterKernel(): void {
    if (this.kernel || this.kernelOff || this.done || !this.relay.kernelSplice) return;
    const v = this.legs.visitor;
    const s = this.legs.server;
    if (!v || !s || v.dead || s.dead || v.stash || s.stash || v.discarding || s.discarding) return;
    if (!v.userReads || !s.userReads) return;
    const legs: [Leg, Leg] = [v, s];
    const fwd = forwardInKernel(v.socket, s.socket, [v.cursor.state(), s.cursor.state()], MAX_RELAYED_FRAME_BODY, (e) =>
      this.onKernelEnd(e),
    );
    if (fwd) this.kernel = { fwd, legs };
  }

  /** The kernel forwarding met an end of stream or an error: the JavaScript path takes it from there. */
  private onKernelEnd(e: SpliceEnd): void {
    const k = this.kernel;
    if (!k) return;
    this.leaveKernel();
    this.kernelOff = true;
    // EMSGSIZE: the kernel stopped at an oversize header (leaveKernel restored it into the cursor).
    const bad = k.legs.find((l) => l.cursor.oversize !== null);
    if (bad) return void this.badFrame(bad);
    // The socket's own reading sees an end of stream again; an error is gone
    // once read, so it is given to the socket as Node would have.
    const leg = k.legs[e.side];
    if (e.error && !leg.dead) leg.socket.destroy(e.error);
  }

  /**
   * Stops the kernel forwarding, if any: each leg's cursor goes on from
   * where the kernel's was, the bytes it read and had not written yet go to
   * the other leg, and both legs read in JavaScript again.
   */
  private leaveKernel(): void {
    const k = this.kernel;
    if (!k) return;
    this.kernel = null;
    this.relay.countForwarded(k.fwd.bytes[0] + k.fwd.bytes[1]);
    const states = k.fwd.stop();
    if (!states) return;
    for (const i of [0, 1] as const) {
      const leg = k.legs[i];
      const other = k.legs[1 - i];
      leg.cursor.restore(states[i].cursor);
      const pending = states[i].pending;
      // After an oversize header the pending bytes end with it: none go.
      if (pending.length && leg.cursor.oversize === null && !other.dead && !other.socket.destroyed) {
        this.relay.countForwarded(pending.length);
        other.socket.write(pending);
      }
    }
    for (const leg of k.legs) if (!leg.dead && !leg.socket.destroyed) leg.socket.resume();
  }

  /** `leg`'s side can send again (to `out`): its stash first. */
  private release(leg: Leg, out: net.Socket): void {
    const stash = leg.stash;
    leg.stash = null;
    if (stash) out.write(stash);
    this.tryResume(leg);
  }

  /** Takes `leg` out: completes the frame it was writing to the other side, closes it. */
  private retire(leg: Leg): void {
    if (leg.dead) return;
    leg.dead = true;
    if (leg.timer) clearTimeout(leg.timer);
    if (this.legs[leg.role] === leg) this.legs[leg.role] = null;
    const other = this.legs[otherRole(leg.role)];
    if (other && !other.dead) {
      if (!leg.discarding && !leg.stash && !leg.cursor.atBoundary) other.socket.write(leg.cursor.padding());
      // The other side's frame in progress went, in part, to this leg: its rest is for nobody.
      if (!other.stash && !other.cursor.atBoundary) other.discarding = true;
    }
    leg.stash = null;
    leg.socket.destroy();
  }

  private legClosed(leg: Leg): void {
    if (leg.dead || this.done) return;
    this.leaveKernel();
    const { log } = this.relay.opts;
    // A FIN is a session that ended on purpose; a side that cannot resume ends it too.
    if (leg.ended || !this.held[leg.role]) return this.end(`the ${leg.role} side closed`);
    this.retire(leg);
    log.info('relay_half_open', `relay session ${this.sid}: the ${leg.role} leg was lost; waiting for it`, {
      sid: this.sid,
      role: leg.role,
    });
    if (!this.timer) {
      const ms = this.relay.opts.resumeTimeoutMs ?? RELAY_RESUME_TIMEOUT_MS;
      this.timer = setTimeout(() => this.end(`no resume within ${Math.round(ms / 1000)} s`), ms);
      this.timer.unref();
    }
  }
}
