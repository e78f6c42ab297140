import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Kcp, KCP_OVERHEAD, RTO_NODELAY_MIN } from '../kcp/index.js';
import { MUX_HEADER_LEN } from '../wire/mux-frame.js';
import { Mux } from '../mux/index.js';
import { DatagramOpener, DatagramSealer, type SessionKeys } from '../crypto/index.js';
import {
  DatagramType,
  DATAGRAM_OVERHEAD,
  MAX_DATAGRAM_LEN,
  MAX_DATAGRAM_PAYLOAD,
  MAX_UDP_DATAGRAM_LEN,
  sealedLength,
} from '../wire/datagram.js';
import { encodeFragments, fragmentCount, MAX_FRAGMENTS, Reassembler } from '../wire/data-fragment.js';
import { decodeUserDatagram, encodeUserDatagram, USER_DATAGRAM_OVERHEAD } from '../wire/user-datagram.js';
import type { Logger } from '../util/log.js';
import type { ErrorCode } from '../util/errors.js';
import { sharedBlockPool } from '../util/block-pool.js';
import { beginLoan, endLoan } from '../util/loan.js';
import { isDue, processTicker, tickFor } from '../util/ticker.js';
import type { Path, PathKind, PathReceiver } from './path.js';
import { activePath, choosePath, segmentSizeFor, type PathSet } from './path-choice.js';
import { WindowControl, windowLimits } from './window-control.js';

export interface SessionOptions {
  keys: SessionKeys;
  role: 'visitor' | 'server';
  log: Logger;
  sid: string;
  /** Declare the session dead when nothing authenticated arrives for this long. */
  deadAfterMs?: number;
  keepaliveMs?: number;
  /** How long a stalled direct path is left alone before data tries it again (DIRECT_STALL_RETRY_MS). */
  stallRetryMs?: number;
  /**
   * The code the session closes with when nothing arrives for deadAfterMs
   * (no_path by default; a peer that resumes sessions passes resume_timeout:
   * the silence outlasted --resume-timeout).
   */
  silenceCode?: ErrorCode;
}

/**
 * Why a user datagram was not sent (sendUserDatagram): larger than the active
 * path carries whole (never split), or no open path at all.
 */
export type UserDatagramDrop = 'too_large' | 'no_path';

/** KCP payload per UDP datagram: the largest sealed datagram minus seal overhead. */
export const KCP_MTU = MAX_DATAGRAM_LEN - DATAGRAM_OVERHEAD;

// Timing. Every interval and timeout of a session, in one place.
/** The session is dead after this long without an authenticated datagram from the peer (any path). */
export const SESSION_DEAD_AFTER_MS = 30_000;
/** A quiet session on a non-direct path sends a heartbeat this often (the direct path has its own). */
export const SESSION_KEEPALIVE_MS = 5_000;
/**
 * A direct path that stopped delivering data while it still answers
 * heartbeats (KCP gave up on it, or its path MTU search found that not even
 * the base size passes) carries no data for this long; the relay does. Then
 * data tries it again (stallDirect()).
 */
export const DIRECT_STALL_RETRY_MS = 30_000;
/**
 * KCP's dead_link while the session has no path, or while nothing at all came
 * from the peer for this long (two keepalive rounds plus slack: a live peer's
 * heartbeats would have arrived), is an outage, not a refusal. The
 * session then waits for its silence deadline (deadAfterMs, the resume
 * timeout) instead of ending at the twentieth backed-off resend, which came
 * after 60-80 s of outage, before the 120 s --resume-timeout.
 */
export const OUTAGE_SILENCE_MS = 2 * SESSION_KEEPALIVE_MS + 2_000;
/** How often the send window is adjusted to the measured queueing delay. */
const WINDOW_STEP_MS = 50;
/**
 * KCP's minimum retransmission timeout while the relay carries the session.
 * The relay is TCP: it neither loses nor reorders, so a timeout there only
 * means queueing delay, and a resend is a 64 KiB duplicate that the peer
 * pays to open and discard (docs/BENCHMARKS.md, test/session-relay-rto.test.ts).
 * Records are only lost with the connection (see retransmitNow in
 * follow()) or when a stalled one is shed (RelayPath), and this floor is
 * the safety net for the latter.
 */
const RELAY_MIN_RTO_MS = 2000;
/**
 * Data unacknowledged and no news of it for this long (no Data datagram from
 * the peer): it went into a path that died, or waits in the relay for the
 * peer's lost leg, while KCP's retransmission timeouts back off (to seconds
 * after a long outage). When a path becomes usable, or the peer is heard
 * again, after such a silence, everything in flight goes again at once with
 * its timeout started over (Kcp.restartRetransmits). As long as the direct
 * path's suspect threshold: under load, silence this long is news.
 */
export const RESEND_AFTER_SILENCE_MS = 1000;
/** KCP's internal interval (nodelay mode): the granularity of its ack and retransmission timers. */
const KCP_INTERVAL_MS = 10;
/** The longest a KCP flush timer sleeps while data is in flight, whatever check() says. */
const MAX_FLUSH_DELAY_MS = 5_000;
/**
 * The mux may add frames while KCP holds fewer than the window plus this many
 * bytes' worth of segments. Queued segments wait for window space, so keeping
 * the queue short is what lets an interactive stream's frame go next.
 */
const QUEUE_AFTER_WINDOW_BYTES = 16 * KCP_MTU;
const STREAM_WINDOW = 16 * 1024 * 1024;
const SHARED_STREAM_WINDOW = 4 * 1024 * 1024;
/** Largest plaintext of a datagram that arrives over UDP: up to it, received datagrams are opened into plain memory. */
const MAX_UDP_PAYLOAD = MAX_UDP_DATAGRAM_LEN - DATAGRAM_OVERHEAD;

/**
 * One tunnel session: KCP carrying a stream mux, sealed end to end, over
 * whichever path is active. Paths come and go (relay first, direct when a hole
 * opens); KCP state and streams are untouched by a move.
 *
 * The relay and direct managers only report which paths are available
 * (setPath); which path each datagram takes is decided in one place,
 * path-choice.ts. Every path hands what it receives to `deliver`.
 *
 * Emits 'path' (path, previous) when the active path changes, 'direct'
 * (path or null) when the direct path is reported, 'close' (reason, code),
 * 'control' (type, payload, path) for probe/heartbeat datagrams, which
 * the path managers (direct, path MTU) handle, and 'datagram' (flow, payload,
 * path) for each user datagram of a UDP service (sendUserDatagram).
 */
export class Session extends EventEmitter {
  readonly kcp: Kcp;
  readonly mux: Mux;
  readonly sealer: DatagramSealer;
  readonly opener: DatagramOpener;
  /** What the path managers reported, and the active path (`current`): see path-choice.ts. */
  private readonly paths: PathSet = { relay: null, direct: null, current: null };
  private readonly wndControl = new WindowControl({ maxWnd: windowLimits(KCP_MTU).max });
  private sndWnd = this.wndControl.window;
  /** Segments the mux may queue beyond the window (set with the segment size). */
  private queueAfterWindow = 0;
  /** Segments dropped because no open path could carry their size (the session then closes). */
  oversizeDropped = 0;
  /** Set once a direct path has carried the session: see segmentSizeFor(). */
  private beenDirect = false;
  /** The datagram size segments are currently cut for. */
  private segmentFor = 0;
  /** The direct path's size (its path MTU) last seen: segments stay within it on the relay, see segmentSizeFor(). */
  private udpDatagram = MAX_DATAGRAM_LEN;
  /**
   * The peer puts DataFragment pieces back together (it answers PMTU
   * probes): set by the path MTU search. Segments cut before the path MTU
   * shrank then cross a direct path in pieces when no relay carries them.
   */
  private fragmentsOk = false;
  private nextFragmentId = 1;
  private readonly reassembler = new Reassembler();
  /** Data datagrams sent in pieces (see fragmentsOk). */
  fragmentedDatagrams = 0;
  /** Retries a stalled direct path (see DIRECT_STALL_RETRY_MS); belongs to `paths.stalled`. */
  private stallTimer: NodeJS.Timeout | null = null;
  private closedCode: ErrorCode | null = null;
  private lastWndStep = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = 0;
  private kicked = false;
  private closedReason: string | null = null;
  private lastRecv = performance.now();
  /** The peer sent Close: this side ends without answering with one. */
  private peerClosed = false;
  /**
   * When data in flight last had news: a Data datagram from the peer, a
   * restart of its retransmissions, or a flush that found nothing in flight.
   */
  private flightNewsAt = performance.now();
  /** Cancels the keepalive and death check, which ride the process ticker. */
  private readonly keepalive: () => void;
  readonly startedAt = Date.now();
  bytesIn = 0;
  bytesOut = 0;
  /** Sealed bytes by the kind of path they took, each way (the dashboard's relay/direct split). */
  readonly pathBytes = { relay: { in: 0, out: 0 }, direct: { in: 0, out: 0 } };
  rejected = 0;

  constructor(readonly opts: SessionOptions) {
    super();
    this.sealer = new DatagramSealer(opts.keys);
    this.opener = new DatagramOpener(opts.keys);
    this.kcp = new Kcp(opts.keys.conv, (buf) => this.output(buf));
    this.kcp.setNodelay(1, KCP_INTERVAL_MS, 2, 1);
    // A relay-sized frame's block goes back to the pool once KCP has it acknowledged.
    this.kcp.onRelease = (segment) => sharedBlockPool.give(segment);
    this.mux = new Mux({
      role: opts.role === 'visitor' ? 'client' : 'server',
      // A relay-sized frame (under 64 KiB: one relay segment) gets a pooled block.
      allocFrame: (size) => (size > MAX_UDP_DATAGRAM_LEN ? sharedBlockPool.take(size) : Buffer.allocUnsafe(size)),
      sendMessage: (frame) => {
        // Every frame is freshly built by the mux and never touched again.
        this.kcp.send(frame, true);
        this.kick();
      },
      canSend: () => this.closedReason === null && this.kcp.waitSnd() < this.sndWnd + this.queueAfterWindow,
      // Per-stream receive window: it bounds one stream's throughput to window/RTT,
      // so it must cover a fast path's bandwidth-delay product under load (the
      // relay's is 10-30 ms: 16 MiB / 30 ms = 550 MB/s). Memory is only
      // committed while a consumer is not reading.
      initialWindow: STREAM_WINDOW,
      // While another stream is busy, what this one has in flight is what the
      // other's next message waits behind: a quarter of it, 4 MiB.
      sharedWindow: SHARED_STREAM_WINDOW,
    });
    this.fitSegmentsTo(MAX_DATAGRAM_LEN);
    this.mux.on('error', (e: Error) => opts.log.warn('mux_error', e.message, { sid: opts.sid }));
    const deadAfter = opts.deadAfterMs ?? SESSION_DEAD_AFTER_MS;
    const keepaliveMs = opts.keepaliveMs ?? SESSION_KEEPALIVE_MS;
    const resolution = tickFor(Math.min(keepaliveMs, deadAfter));
    this.keepalive = processTicker.subscribe(
      (now) => this.checkAlive(now, deadAfter, keepaliveMs, resolution),
      resolution,
    );
    this.kick();
  }

  private checkAlive(now: number, deadAfter: number, keepaliveMs: number, resolution: number): void {
    const quiet = now - this.lastRecv;
    if (quiet > deadAfter)
      return this.close(
        `no traffic from the peer for ${Math.round(deadAfter / 1000)} s`,
        this.opts.silenceCode ?? 'no_path',
      );
    // The direct path has its own heartbeats; elsewhere, ping only a quiet session.
    if (this.paths.current?.kind === 'direct' || !isDue(quiet, keepaliveMs, resolution)) return;
    this.sendSealed(DatagramType.Heartbeat, EMPTY);
  }

  /** Keeps KCP's window near the path's bandwidth-delay product (see window-control.ts). */
  private adjustWindow(): void {
    if (this.kcp.inFlight === 0) return;
    const wnd = this.wndControl.step(this.kcp.srtt, this.kcp.inFlight, performance.now());
    if (wnd !== this.sndWnd) {
      this.sndWnd = wnd;
      this.kcp.setWndSize(wnd, 0);
    }
  }

  /** The active path: the one data goes on (segments too large for it excepted, see path-choice.ts). */
  get path(): Path | null {
    return this.paths.current;
  }
  get closed(): boolean {
    return this.closedReason !== null;
  }
  get sid(): string {
    return this.opts.sid;
  }

  /**
   * Sizes KCP segments, mux frames and the window to a path's largest datagram.
   * One mux frame fills one KCP segment exactly, and one segment one datagram:
   * fewer, fuller datagrams, and fairness is still decided per datagram. On
   * the relay that is a 64 KiB record, 45 UDP datagrams' worth of work saved.
   */
  private fitSegmentsTo(maxDatagram: number): void {
    this.segmentFor = maxDatagram;
    const mtu = maxDatagram - DATAGRAM_OVERHEAD;
    this.kcp.setMtu(mtu);
    this.mux.setMaxFramePayload(mtu - KCP_OVERHEAD - MUX_HEADER_LEN);
    // Windows hold the same bytes whatever the segment size (window-control.ts):
    // a smaller path MTU must not mean less in flight.
    const { min, max, receive, targetMs } = windowLimits(mtu);
    this.wndControl.setLimits(min, max, targetMs);
    this.queueAfterWindow = Math.max(4, Math.ceil(QUEUE_AFTER_WINDOW_BYTES / mtu));
    this.sndWnd = this.wndControl.window;
    // Receive window: 1261 segments over UDP (the peer cuts its own size), 256 over the relay.
    this.kcp.setWndSize(this.sndWnd, receive);
  }

  /**
   * A path manager reports that its path of `kind` is available (`path`) or
   * gone (null): the relay once paired and when it closes, the direct path
   * once confirmed and when its heartbeats stop. The session then follows
   * the path choice (path-choice.ts).
   */
  setPath(kind: PathKind, path: Path | null): void {
    const gone = this.paths[kind];
    if (gone === path) return;
    this.paths[kind] = path;
    if (kind === 'direct') {
      // A new direct path (or none) is not the stalled one.
      if (this.paths.stalled) this.setStalled(null, 'the direct path changed', false);
      this.emit('direct', path);
    }
    // A path went away while another was active (the relay, carrying records
    // too large for UDP): whatever was still on it is lost, and is resent now
    // rather than at its (long) timeout.
    if (gone && gone !== path && gone !== this.paths.current) this.kcp.retransmitNow();
    this.follow();
    if (path) this.restartAfterSilence(`a ${kind} path is usable`);
  }

  /**
   * After RESEND_AFTER_SILENCE_MS without news of the data in flight, resends
   * it all now with fresh timeouts: `why` says what ended the silence (a path
   * usable, the peer heard). The restart counts as news, so the other event
   * of the same comeback does not resend the window a second time.
   */
  private restartAfterSilence(why: string, now = performance.now()): void {
    const silentMs = now - this.flightNewsAt;
    if (silentMs < RESEND_AFTER_SILENCE_MS || this.kcp.inFlight === 0 || this.closedReason !== null) return;
    this.flightNewsAt = now;
    this.opts.log.debug(
      'retransmit_restart',
      `session ${this.opts.sid}: ${why} after ${Math.round(silentMs)} ms of silence: resending what is in flight`,
      {
        sid: this.opts.sid,
        why,
        silentMs: Math.round(silentMs),
        segments: this.kcp.inFlight,
      },
    );
    this.kcp.restartRetransmits();
    this.kick();
  }

  /** Moves data onto the active path of the path choice, if that changed. */
  private follow(): void {
    const prev = this.paths.current;
    const path = activePath(this.paths);
    if (!path || path === prev) return;
    this.paths.current = path;
    if (path.kind === 'direct') this.beenDirect = true;
    const segmentFor = this.segmentSizeOn(path);
    if (segmentFor !== this.segmentFor) this.fitSegmentsTo(segmentFor);
    // Timeouts are for lossy UDP; over the relay's TCP only a lost connection
    // loses data, and then (as for a hole that died) what was in flight on
    // it goes again now.
    this.kcp.setMinRto(path.kind === 'relay' ? RELAY_MIN_RTO_MS : RTO_NODELAY_MIN);
    if (prev?.closed) this.kcp.retransmitNow();
    this.wndControl.reset(performance.now());
    this.emit('path', path, prev);
    this.kick();
  }

  /** The segment size on `path` (path-choice.ts), with the direct path's current size. */
  private segmentSizeOn(path: Path): number {
    const direct = this.paths.direct;
    if (direct && !direct.closed) this.udpDatagram = direct.maxDatagram;
    return segmentSizeFor(path, this.beenDirect, this.udpDatagram);
  }

  /**
   * The direct path's size changed (its path MTU search): cut segments for
   * it from now on (KCP MTU, mux frames, windows). Segments already cut
   * larger still go whole on the relay if it is open, else in pieces
   * (output()). `resend`: what is in flight was probably lost (a black
   * hole), so it goes again now rather than at its timeout.
   */
  refit(resend = false): void {
    if (this.closedReason !== null) return;
    const path = this.paths.current;
    if (path) {
      const size = this.segmentSizeOn(path);
      if (size !== this.segmentFor) this.fitSegmentsTo(size);
    }
    if (resend) this.kcp.retransmitNow();
    this.kick();
  }

  /** The peer reassembles DataFragment pieces (it answers PMTU probes, which came with them). */
  allowFragments(): void {
    this.fragmentsOk = true;
  }

  /** The size segments are cut for now (a sealed datagram length), for status. */
  get segmentDatagram(): number {
    return this.segmentFor;
  }

  /** The direct path while it is stalled (see stallDirect), else null. */
  get stalledPath(): Path | null {
    return this.paths.stalled ?? null;
  }

  /**
   * The direct path stops carrying data for DIRECT_STALL_RETRY_MS while it
   * answers heartbeats: data moves to the open relay and what was in flight
   * goes again there. False (nothing changes) without a direct path or an
   * open relay, or when it is stalled already.
   */
  stallDirect(why: string): boolean {
    const direct = this.paths.direct;
    const relay = this.paths.relay;
    if (!direct || direct.closed || this.paths.stalled === direct || !relay || relay.closed) return false;
    this.setStalled(direct, why, true);
    return true;
  }

  /** The one place `paths.stalled` changes; the retry timer belongs to it. */
  private setStalled(path: Path | null, why: string, follow: boolean): void {
    if ((this.paths.stalled ?? null) === path) return;
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
    const was = this.paths.stalled ?? null;
    this.paths.stalled = path;
    const sid = this.opts.sid;
    if (path) {
      this.opts.log.warn('direct_stalled', `session ${sid}: data leaves the direct path ${path.remote}: ${why}`, {
        sid,
        remote: path.remote,
        why,
      });
      const retryMs = this.opts.stallRetryMs ?? DIRECT_STALL_RETRY_MS;
      this.stallTimer = setTimeout(() => this.setStalled(null, `retrying after ${retryMs / 1000} s`, true), retryMs);
      this.stallTimer.unref();
    } else if (was) {
      this.opts.log.info('direct_resumed', `session ${sid}: data tries the direct path again: ${why}`, { sid, why });
    }
    if (!follow) return;
    const prev = this.paths.current;
    this.follow();
    // What was in flight on the stalled path did not arrive: resend it on the relay now.
    if (path && prev === path && this.paths.current !== path) {
      this.kcp.clearDeadLink();
      this.kcp.retransmitNow();
      this.kick();
    }
  }

  /** KCP's output: one datagram's worth of segments, sealed onto the path the path choice gives it. */
  private output(buf: Uint8Array): void {
    const via = choosePath(this.paths, buf.length + DATAGRAM_OVERHEAD);
    if (via === 'no-path') return;
    if (via === 'too-large') {
      // Cut for a larger size than any open path carries whole: segments cut
      // before the direct path's MTU shrank, or relay-sized ones after the
      // relay closed. A peer that reassembles gets them in pieces.
      const active = activePath(this.paths);
      if (
        this.fragmentsOk &&
        active?.kind === 'direct' &&
        !active.closed &&
        fragmentCount(buf.length, active.maxDatagram) <= MAX_FRAGMENTS
      )
        return this.sendFragments(buf, active);
      // Otherwise no path can carry them, and none will for this session:
      // fail now with the reason, rather than retransmit into nothing.
      this.oversizeDropped++;
      const size = buf.length + DATAGRAM_OVERHEAD;
      this.close(
        size > MAX_UDP_DATAGRAM_LEN
          ? 'the relay closed while data cut into relay-sized records was unacknowledged, and UDP cannot carry those'
          : `data was cut into ${size}-byte datagrams, larger than every open path carries`,
        'no_path',
      );
      return;
    }
    this.sendSealed(DatagramType.Data, buf, via);
  }

  /** One Data datagram as DataFragment pieces that each fit `via` (the rare path: allocates). */
  private sendFragments(buf: Uint8Array, via: Path): void {
    const id = this.nextFragmentId;
    this.nextFragmentId = (id + 1) >>> 0 || 1;
    this.fragmentedDatagrams++;
    for (const part of encodeFragments(id, buf, via.maxDatagram)) this.sendSealed(DatagramType.DataFragment, part, via);
  }

  /**
   * One user datagram of a UDP service, outside KCP: sealed like every
   * datagram (its own type, UserDatagram) and sent once on the active path,
   * so it moves with the session between paths. Never queued, retransmitted
   * or split: one larger than the active path carries is dropped, and the
   * caller counts the reason returned (null: sent).
   */
  sendUserDatagram(flow: number, payload: Uint8Array): UserDatagramDrop | null {
    const via = this.paths.current;
    if (!via || via.closed || this.closedReason !== null) return 'no_path';
    if (payload.length + USER_DATAGRAM_OVERHEAD > via.maxDatagram) return 'too_large';
    this.sendSealed(DatagramType.UserDatagram, encodeUserDatagram(flow, payload), via);
    return null;
  }

  /** Seals and sends on a given path (probes) or the active one. */
  sendSealed(type: DatagramType, payload: Uint8Array, via: Path | null = this.paths.current): void {
    if (!via || via.closed || this.closedReason !== null) return;
    if (payload.length > MAX_DATAGRAM_PAYLOAD && via.sendRecord) {
      const length = sealedLength(payload.length);
      this.bytesOut += length;
      this.pathBytes[via.kind].out += length;
      via.sendRecord(length, (out) => this.sealer.sealInto(type, payload, out));
      return;
    }
    const dg = this.sealer.seal(type, payload);
    this.bytesOut += dg.length;
    this.pathBytes[via.kind].out += dg.length;
    via.send(dg);
  }

  /** The one entry for every datagram that arrives on any path: wire paths with `source.deliverTo(session.deliver)`. */
  readonly deliver: PathReceiver = (datagram, from) => this.receive(datagram, from);

  /** Opens and takes in a datagram that arrived on `from`; false when it is not authentic (or the session closed). */
  receive(datagram: Uint8Array, from: Path): boolean {
    if (this.closedReason !== null) return false;
    // A relay record is opened into a pooled block, lent down to KCP, the mux
    // and the streams' sinks, and back to the pool if none of them kept a view
    // (util/loan.ts): the bulk receive path allocates nothing per record.
    const n = datagram.length - DATAGRAM_OVERHEAD;
    const block = n > MAX_UDP_PAYLOAD && n <= sharedBlockPool.blockSize ? sharedBlockPool.take(n) : null;
    const opened = this.opener.open(datagram, from.maxReceive ?? from.maxDatagram, block ?? undefined);
    if (!opened) {
      if (block) sharedBlockPool.give(block);
      this.rejected++;
      return false;
    }
    const now = performance.now();
    this.lastRecv = now;
    this.bytesIn += datagram.length;
    this.pathBytes[from.kind].in += datagram.length;
    switch (opened.type) {
      case DatagramType.Data: {
        // The opened payload is a buffer nobody else holds: KCP keeps it without a copy.
        beginLoan();
        const ok = this.kcp.input(opened.payload, true) >= 0;
        // After its acknowledgements are in: what is still in flight is what the peer lacks.
        if (ok) this.heardData(now);
        if (ok) this.drain();
        // Back to the pool only if every segment went all the way through
        // (none held by KCP) and no consumer kept a view.
        if (endLoan() && block && this.kcp.receiveIdle) sharedBlockPool.give(block);
        if (ok) this.kick();
        return true;
      }
      case DatagramType.DataFragment: {
        // A piece of a datagram cut larger than the path carries: KCP gets the whole once every piece is in.
        const whole = this.reassembler.add(opened.payload);
        if (whole && this.kcp.input(whole, true) >= 0) {
          this.heardData(now);
          this.drain();
          this.kick();
        }
        return true;
      }
      case DatagramType.UserDatagram: {
        // Handed on at once: a lost or late one never holds up the next (no
        // KCP, no ordering). A relay-sized one's pooled block is not given
        // back: the consumer may still hold it (an async socket send).
        const d = decodeUserDatagram(opened.payload);
        if (d) this.emit('datagram', d.flow, d.payload, from);
        return true;
      }
      case DatagramType.Close:
        this.peerClosed = true;
        this.close('the peer ended the session');
        return true;
      case DatagramType.Heartbeat:
        // Answer on the path it came from: that is the path the peer is testing.
        this.sendSealed(DatagramType.HeartbeatAck, EMPTY, from);
        return true;
      default:
        this.emit('control', opened.type, opened.payload, from);
        return true;
    }
  }

  /** A Data datagram from the peer: news of the data in flight, and, after a silence, the peer back. */
  private heardData(now: number): void {
    this.restartAfterSilence('the peer is heard again', now);
    this.flightNewsAt = now;
  }

  /** Ends the session; `code` says why when it is a failure (no_path: no path can carry it). */
  close(reason = 'closed', code: ErrorCode | null = null): void {
    if (this.closedReason !== null) return;
    // Tell the peer (best effort, on every open path: the active one may be
    // the one that just failed), unless it was the peer that ended it.
    if (!this.peerClosed)
      for (const p of new Set([this.paths.current, this.paths.direct, this.paths.relay]))
        if (p) this.sendSealed(DatagramType.Close, EMPTY, p);
    this.closedReason = reason;
    this.closedCode = code;
    this.keepalive();
    if (this.timer) clearTimeout(this.timer);
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.mux.destroy(new Error(`tunnel session closed: ${reason}`));
    this.emit('close', reason, code);
  }

  get closeReason(): string | null {
    return this.closedReason;
  }

  /** The code of a failure that closed the session (null: closed on purpose, or open). */
  get closeCode(): ErrorCode | null {
    return this.closedCode;
  }

  private drain(): void {
    for (let i = 0; i < 4096; i++) {
      const msg = this.kcp.recv();
      if (!msg) break;
      this.mux.receive(msg);
    }
  }

  /** Batches work from one event-loop turn into a single flush. */
  private kick(): void {
    if (this.kicked || this.closedReason !== null) return;
    this.kicked = true;
    setImmediate(() => this.tick());
  }

  private tick(): void {
    this.kicked = false;
    if (this.closedReason !== null) return;
    const now = nowMs();
    // Nothing in flight has no silence to speak of: it starts with what this flush sends.
    if (this.kcp.inFlight === 0) this.flightNewsAt = performance.now();
    this.kcp.update(now);
    this.kcp.flush();
    if (this.closedReason !== null) return;
    if (this.kcp.isDeadLink()) {
      this.onDeadLink();
      if (this.closedReason !== null) return;
    }
    this.mux.pump();
    if (now - this.lastWndStep >= WINDOW_STEP_MS) {
      this.lastWndStep = now;
      this.adjustWindow();
    }
    this.schedule(now);
  }

  /**
   * KCP gave up: some segment went out dead_link times unacknowledged. That
   * condemns the path it went on, not the session: a direct path whose
   * heartbeats pass but whose data vanishes (a small MTU before the search
   * noticed, a middlebox) is stalled and the data moves to the relay. The
   * session ends only when no other path can carry it.
   */
  private onDeadLink(): void {
    const cur = this.paths.current;
    if (cur?.kind === 'direct' && this.stallDirect('the peer stopped acknowledging data on it')) return;
    const silentMs = performance.now() - this.lastRecv;
    if (!cur || cur.closed || silentMs >= OUTAGE_SILENCE_MS) {
      // No path, or a silent peer: an outage, not a refusal. The silence deadline (checkAlive) ends the session.
      this.opts.log.debug('dead_link_outage', 'KCP gave up during an outage; waiting for a path', {
        sid: this.opts.sid,
        silentMs: Math.round(silentMs),
      });
      this.kcp.clearDeadLink();
      return;
    }
    this.close('too many retransmissions: the peer stopped acknowledging on every path', 'no_path');
  }

  private schedule(now: number): void {
    // Idle (nothing queued, nothing unacknowledged): no timer at all. The next
    // send or received datagram kicks a tick; an idle tunnel costs no wake-ups
    // but its keepalive.
    if (this.kcp.waitSnd() === 0) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      return;
    }
    const due = this.kcp.check(now);
    const delay = Math.min(MAX_FLUSH_DELAY_MS, Math.max(1, (due - now) | 0));
    const at = performance.now() + delay;
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.tick();
    }, delay);
  }
}

const EMPTY = new Uint8Array(0);

/** KCP time: milliseconds from a monotonic clock, as uint32. */
export function nowMs(): number {
  return Math.floor(performance.now()) >>> 0;
}
