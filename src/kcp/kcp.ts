/**
 * KCP: a reliable, ordered ARQ protocol over datagrams, wire-compatible with
 * skywind3000's ikcp.c. This is a pure state machine: it never touches a
 * socket or a timer. The owner feeds it datagrams (input), application data
 * (send), and the clock (update/check); it hands datagrams to `output`.
 *
 * Representation differs from ikcp.c for speed in JS, not in behaviour:
 *  - in-flight segments (snd_buf) live in parallel typed arrays indexed by
 *    `sn & mask`, so ACK/UNA processing is O(1) per acked segment instead of
 *    a list walk;
 *  - out-of-order received segments (rcv_buf) likewise sit in a ring indexed
 *    by sn;
 *  - payloads are (buffer, offset, length) references: a sent message is
 *    copied once and its fragments are views of that copy; a received
 *    datagram is copied once (only if it carries new data) and every segment
 *    in it points into that copy.
 *
 * All sequence numbers and timestamps are held as int32 and compared with
 * `(a - b) | 0`, which is ikcp.c's _itimediff and wraps at 2^32.
 */
import {
  ASK_SEND,
  ASK_TELL,
  CMD_ACK,
  CMD_PUSH,
  CMD_WASK,
  CMD_WINS,
  DEAD_LINK_DEFAULT,
  FASTACK_LIMIT,
  INTERVAL_DEFAULT,
  INTERVAL_MAX,
  INTERVAL_MIN,
  KCP_OVERHEAD,
  MTU_DEFAULT,
  MTU_MIN,
  PROBE_INIT,
  PROBE_LIMIT,
  RTO_DEFAULT,
  RTO_MAX,
  RTO_NODELAY_MIN,
  RTO_NORMAL_MIN,
  THRESH_INIT,
  THRESH_MIN,
  WND_RCV_DEFAULT,
  WND_SND_DEFAULT,
} from './constants.js';
import { read32, writeHeader } from './codec.js';
import { KcpError } from './errors.js';
import { SegQueue } from './seg-queue.js';
import { Slab } from './slab.js';

export interface KcpOptions {
  /** Stream mode: message boundaries are not kept; small sends coalesce into full segments. */
  stream?: boolean;
}

/** Largest MTU accepted by setMtu (a UDP payload cannot be larger). */
export const MTU_MAX = 65535;
/** The wnd field is 16 bits, so no window beyond this can be advertised or used. */
const WND_MAX = 65535;
/** Per-segment RTO ceiling (ikcp.c lets it grow unbounded in u32; ~12 days is the same in practice). */
const RTO_CAP = 0x3fffffff;

/** A copy of the protocol variables, for diagnostics and tests (names follow ikcp.c). */
export interface KcpSnapshot {
  conv: number;
  state: number;
  mtu: number;
  mss: number;
  sndUna: number;
  sndNxt: number;
  rcvNxt: number;
  sndWnd: number;
  rcvWnd: number;
  rmtWnd: number;
  cwnd: number;
  incr: number;
  ssthresh: number;
  rxSrtt: number;
  rxRttval: number;
  rxRto: number;
  rxMinrto: number;
  interval: number;
  nodelay: number;
  fastresend: number;
  fastlimit: number;
  nocwnd: number;
  stream: boolean;
  deadLink: number;
  probe: number;
  probeWait: number;
  tsProbe: number;
  tsFlush: number;
  current: number;
  updated: boolean;
  nsndQue: number;
  nsndBuf: number;
  nrcvQue: number;
  nrcvBuf: number;
  ackCount: number;
  xmit: number;
}

function nextPow2(n: number): number {
  let c = 16;
  while (c < n) c *= 2;
  return c;
}

const u32 = (v: number): number => v >>> 0;

export class Kcp {
  private readonly conv_: number;
  private readonly output: (buf: Buffer) => void;

  private mtu = MTU_DEFAULT;
  private mss = MTU_DEFAULT - KCP_OVERHEAD;
  private state = 0;
  private sndUna = 0;
  private sndNxt = 0;
  private rcvNxt = 0;
  private tsProbe = 0;
  private probeWait = 0;
  private sndWnd = WND_SND_DEFAULT;
  private rcvWnd = WND_RCV_DEFAULT;
  private rmtWnd = WND_RCV_DEFAULT;
  private cwnd = 0;
  private incr = 0;
  private probe = 0;
  private current = 0;
  private interval = INTERVAL_DEFAULT;
  private tsFlush = INTERVAL_DEFAULT;
  private xmit = 0;
  private nodelay = 0;
  private updated = false;
  private ssthresh = THRESH_INIT;
  private fastresend = 0;
  private fastlimit = FASTACK_LIMIT;
  private nocwnd = 0;
  private stream: boolean;
  private deadLink = DEAD_LINK_DEFAULT;
  private rxSrtt = 0;
  private rxRttval = 0;
  private rxRto = RTO_DEFAULT;
  private rxMinrto = RTO_NORMAL_MIN;

  /** Datagram assembly buffer, reused for every output call. */
  private obuf: Buffer;
  /** Last view handed to output (most datagrams are MTU-sized, so it is usually reusable). */
  private oview: Buffer;
  /** Backing memory for copies of sent messages and received datagrams. */
  private readonly slab = new Slab();
  /**
   * Called with each sent segment's payload once it is acknowledged and KCP
   * will never read it again (not part of ikcp.c): lets the owner of a buffer
   * given with send(data, true) reuse it. A message cut into several segments
   * reports each fragment.
   */
  onRelease: ((segment: Uint8Array) => void) | null = null;
  /**
   * Loss and delivery evidence for a path MTU search (not part of ikcp.c).
   * `onLost(len, n)`: at the end of a flush in which `n` segments were resent
   * because their retransmission timeout expired, the largest of them `len`
   * payload bytes (resends forced by retransmitNow() are not losses).
   * `onAcked(len)`: at the end of an input() that acknowledged segments, the
   * largest of them. Called at most once per flush/input: no cost per segment
   * beyond a comparison.
   */
  onLost: ((len: number, n: number) => void) | null = null;
  onAcked: ((len: number) => void) | null = null;
  /** Largest payload acknowledged during the current input(), -1: none. */
  private ackedMax = -1;
  /** Set by retransmitNow(): the next flush's timeouts are forced, not losses. */
  private forcedResend = false;

  /** Pending (sn, ts) pairs to acknowledge at the next flush. */
  private acklist = new Int32Array(64);
  private ackCount = 0;

  private readonly sndQueue = new SegQueue(64);
  private readonly rcvQueue = new SegQueue(WND_RCV_DEFAULT);

  // snd_buf: segments in flight, slot = sn & sbMask. Live entries all have sn in [sndUna, sndNxt).
  private sbMask = 0;
  private nsndBuf = 0;
  private sbLive!: Uint8Array;
  /** Exact payload view of each in-flight segment. */
  private sbBuf!: (Buffer | undefined)[];
  private sbLen!: Int32Array;
  private sbFrg!: Uint8Array;
  private sbResendts!: Int32Array;
  private sbRto!: Int32Array;
  private sbFastack!: Int32Array;
  private sbXmit!: Int32Array;

  // rcv_buf: received segments waiting for the gap before them, slot = sn & rbMask.
  private rbMask = 0;
  private nrcvBuf = 0;
  private rbLive!: Uint8Array;
  private rbBuf!: (Buffer | undefined)[];
  private rbOff!: Int32Array;
  private rbLen!: Int32Array;
  private rbFrg!: Uint8Array;

  // Set during input(): the datagram and its lazily made private copy.
  private inData: Uint8Array | null = null;
  private inCopy: Buffer | null = null;

  constructor(conv: number, output: (buf: Buffer) => void, opts: KcpOptions = {}) {
    this.conv_ = u32(conv);
    this.output = output;
    this.stream = opts.stream === true;
    this.obuf = Buffer.alloc((this.mtu + KCP_OVERHEAD) * 3);
    this.oview = this.obuf.subarray(0, 0);
    this.resizeSndRing(nextPow2(this.sndWnd));
    this.resizeRcvRing(nextPow2(this.rcvWnd));
  }

  /** The conversation id (u32) this instance accepts and sends. */
  get conv(): number {
    return this.conv_;
  }

  // ---------------------------------------------------------------- config

  /**
   * ikcp_nodelay. nodelay: 0 normal, 1 (or 2) no-delay RTO rules and 30 ms
   * minimum RTO; interval: flush period in ms (clamped to 10..5000); resend:
   * fast-resend after this many later ACKs (0 off); nc: 1 disables the
   * congestion window. A negative argument leaves that setting unchanged.
   * Resets the minimum RTO (call setMinRto afterwards to override it).
   */
  setNodelay(nodelay: number, interval: number, resend: number, nc: number): number {
    if (nodelay >= 0) {
      this.nodelay = nodelay | 0;
      this.rxMinrto = nodelay ? RTO_NODELAY_MIN : RTO_NORMAL_MIN;
    }
    // ikcp_interval: flush period in ms, clamped to 10..5000.
    if (interval >= 0) this.interval = Math.min(INTERVAL_MAX, Math.max(INTERVAL_MIN, interval | 0));
    if (resend >= 0) this.fastresend = resend | 0;
    if (nc >= 0) this.nocwnd = nc | 0;
    return 0;
  }

  /**
   * ikcp_wndsize: send and receive windows in segments; a value <= 0 leaves
   * that window unchanged. The receive window is at least 128 (a message may
   * have up to 127 fragments) and both are capped at 65535 (16-bit wnd field).
   */
  setWndSize(snd: number, rcv: number): number {
    if (snd > 0) {
      this.sndWnd = Math.min(WND_MAX, snd | 0);
      if (this.sndWnd > this.sbMask + 1) this.resizeSndRing(nextPow2(this.sndWnd));
    }
    if (rcv > 0) {
      this.rcvWnd = Math.min(WND_MAX, Math.max(WND_RCV_DEFAULT, rcv | 0));
      if (this.rcvWnd > this.rbMask + 1) this.resizeRcvRing(nextPow2(this.rcvWnd));
    }
    return 0;
  }

  /** ikcp_setmtu: largest datagram we emit (50..65535). Returns 0 or KcpError.InvalidMtu. */
  setMtu(mtu: number): number {
    if (!(mtu >= MTU_MIN && mtu <= MTU_MAX)) return KcpError.InvalidMtu;
    mtu |= 0;
    // Segments already queued were cut for the old MSS; never shrink the buffer below what they need.
    const need = (mtu + KCP_OVERHEAD) * 3;
    if (need > this.obuf.length) {
      this.obuf = Buffer.alloc(need);
      this.oview = this.obuf.subarray(0, 0);
    }
    this.mtu = mtu;
    this.mss = mtu - KCP_OVERHEAD;
    return 0;
  }

  /**
   * rx_minrto: lower bound for the retransmission timeout in ms. Raising it
   * also raises the current RTO at once (ikcp.c waits for the next RTT
   * sample), so segments sent from now on already get the new floor.
   */
  setMinRto(ms: number): void {
    this.rxMinrto = Math.max(1, ms | 0);
    if (this.rxRto < this.rxMinrto) this.rxRto = this.rxMinrto;
  }

  /**
   * Makes every unacknowledged segment due at the next flush, instead of at
   * its timeout: for when the path they went out on is gone and nothing in
   * flight on it will arrive. Counted and backed off like a timeout resend.
   * Not in ikcp.c.
   */
  retransmitNow(): void {
    const live = this.sbLive;
    const resendts = this.sbResendts;
    const mask = this.sbMask;
    for (let sn = this.sndUna; sn !== this.sndNxt; sn = (sn + 1) | 0) {
      const i = sn & mask;
      if (live[i] !== 0) resendts[i] = this.current;
    }
    this.forcedResend = true;
  }

  /**
   * Every unacknowledged segment goes again at the next flush as if for the
   * first time: its retransmission timeout starts over from the current RTO
   * estimate and its transmission count (dead_link) from zero, and the
   * dead-link flag clears. For when a path is usable again after a silence:
   * the timeouts backed off during it (to seconds after a long outage), so
   * the first resend, and the next if that one is lost too, would wait them
   * out; and the counts measured the silence (about 17 after 30 s), so a few
   * quick resends would end the session for dead_link. Not counted as loss
   * (no onLost). Sender timers only: nothing on the wire changes. Not in
   * ikcp.c.
   */
  restartRetransmits(): void {
    const live = this.sbLive;
    const resendts = this.sbResendts;
    const xmits = this.sbXmit;
    const mask = this.sbMask;
    for (let sn = this.sndUna; sn !== this.sndNxt; sn = (sn + 1) | 0) {
      const i = sn & mask;
      if (live[i] === 0) continue;
      // xmit 0 is flush()'s "not sent yet": it sends it and sets rto and resendts as for a new segment.
      xmits[i] = 0;
      resendts[i] = this.current;
    }
    this.state = 0;
  }

  /**
   * Clears the dead-link flag and restarts every in-flight segment's
   * transmission count, for when the owner moved the session onto another
   * path: the count measured the old path. Not in ikcp.c.
   */
  clearDeadLink(): void {
    this.state = 0;
    const live = this.sbLive;
    const xmits = this.sbXmit;
    const mask = this.sbMask;
    for (let sn = this.sndUna; sn !== this.sndNxt; sn = (sn + 1) | 0) {
      const i = sn & mask;
      if (live[i] !== 0 && xmits[i] > 1) xmits[i] = 1;
    }
  }

  /** dead_link: a segment transmitted this many times marks the link dead (see isDeadLink). */
  setDeadLink(n: number): void {
    this.deadLink = Math.max(1, n | 0);
  }

  // ---------------------------------------------------------------- user side

  /**
   * Queues data for sending (copied, so the caller may reuse `data`, unless
   * `owned` says the caller hands it over: message mode then skips the copy). Message
   * mode splits it into at most 127 fragments that recv() on the other side
   * returns as one message; stream mode appends to the last unsent segment
   * first. Returns 0, or KcpError.MessageTooLarge (nothing queued).
   */
  send(data: Uint8Array, owned = false): number {
    const mss = this.mss;
    const q = this.sndQueue;
    let len = data.length;
    let pos = 0;

    if (this.stream) {
      if (q.size > 0) {
        const k = q.size - 1;
        const oldLen = q.len(k);
        if (oldLen < mss && len > 0) {
          const extend = Math.min(len, mss - oldLen);
          const b = q.buf(k) as Buffer;
          const o = q.off(k);
          if (o + oldLen + extend <= b.length) {
            // The tail was allocated with room to grow to a full segment.
            b.set(extend === len ? data : data.subarray(0, extend), o + oldLen);
            q.setTail(b, o, oldLen + extend);
          } else {
            const nb = Buffer.allocUnsafe(mss);
            b.copy(nb, 0, o, o + oldLen);
            nb.set(extend === len ? data : data.subarray(0, extend), oldLen);
            q.setTail(nb, 0, oldLen + extend);
          }
          pos = extend;
          len -= extend;
        }
      }
      if (len === 0) return 0;
    }

    const count = len <= mss ? 1 : Math.ceil(len / mss);
    if (!this.stream && count >= WND_RCV_DEFAULT) return KcpError.MessageTooLarge;

    // One copy per send; fragments are slices of it. In stream mode the last
    // fragment gets a full segment of room so later small sends coalesce in place.
    let copy: Buffer;
    if (this.stream) {
      copy = Buffer.allocUnsafe(count * mss);
      if (len > 0) copy.set(pos === 0 ? data : data.subarray(pos), 0);
    } else {
      // An owned buffer (the caller never touches it again) is queued as is.
      copy = owned ? Buffer.from(data.buffer, data.byteOffset, data.length) : this.slab.copy(data);
    }
    let off = 0;
    for (let i = 0; i < count; i++) {
      const size = len > mss ? mss : len;
      q.push(copy, off, size, this.stream ? 0 : count - i - 1);
      off += size;
      len -= size;
    }
    return 0;
  }

  /**
   * Size of what recv() would return now: the next whole message (message
   * mode) or all queued in-order bytes (stream mode); -1 when nothing is ready.
   */
  peekSize(): number {
    const n = this.readyCount();
    if (n === 0) return -1;
    const q = this.rcvQueue;
    let total = 0;
    for (let k = 0; k < n; k++) total += q.len(k);
    return total;
  }

  /**
   * The next whole message (message mode) or all in-order bytes received so
   * far (stream mode); null when nothing is ready. The Buffer is the
   * caller's to keep.
   */
  recv(): Buffer | null {
    const n = this.readyCount();
    if (n === 0) return null;
    const q = this.rcvQueue;
    const recover = q.size >= this.rcvWnd;
    let out: Buffer;
    if (n === 1) {
      const b = q.buf(0) as Buffer;
      const o = q.off(0);
      out = b.subarray(o, o + q.len(0));
      q.shift();
    } else {
      let total = 0;
      for (let k = 0; k < n; k++) total += q.len(k);
      out = Buffer.allocUnsafe(total);
      let p = 0;
      for (let k = 0; k < n; k++) {
        const o = q.off(0);
        const l = q.len(0);
        (q.buf(0) as Buffer).copy(out, p, o, o + l);
        p += l;
        q.shift();
      }
    }
    this.moveRcvBuf();
    // The peer saw a zero window; tell it at once that there is room again.
    if (recover && q.size < this.rcvWnd) this.probe |= ASK_TELL;
    return out;
  }

  /** Segments queued or in flight, not yet acknowledged (ikcp_waitsnd). */
  /** Smoothed RTT in ms (0 before the first acknowledgement); for window control. */
  get srtt(): number {
    return this.rxSrtt;
  }

  /**
   * No received segment is held (none out of order, none waiting for recv()): input buffers are no longer
   * referenced.
   */
  get receiveIdle(): boolean {
    return this.nrcvBuf === 0 && this.rcvQueue.size === 0;
  }

  /** Segments sent and not yet acknowledged. */
  get inFlight(): number {
    return this.nsndBuf;
  }

  waitSnd(): number {
    return this.nsndBuf + this.sndQueue.size;
  }

  /** True once some segment was transmitted dead_link times (ikcp's state == -1). */
  isDeadLink(): boolean {
    return this.state === -1;
  }

  // ---------------------------------------------------------------- network side

  /**
   * Feeds one received datagram (one or more segments). Returns 0, or a
   * negative KcpError when any segment header in it is malformed, in which
   * case no segment of the datagram has been applied. Never throws.
   * Segments are copied out of `data` unless `owned` says the caller hands it
   * over (never touches it again): then they are kept as views of it.
   */
  input(data: Uint8Array, owned = false): number {
    // Also guards untyped callers: anything but bytes is "too short" rather than a throw.
    if (!(data instanceof Uint8Array)) return KcpError.TooShort;
    const size = data.length;
    if (size < KCP_OVERHEAD) return KcpError.TooShort;

    // Pass 1: validate every header so a bad tail cannot leave half a datagram applied.
    const conv = this.conv_;
    let p = 0;
    while (p < size) {
      if (size - p < KCP_OVERHEAD) return KcpError.Truncated;
      if (read32(data, p) !== conv) return KcpError.WrongConv;
      const len = read32(data, p + 20);
      if (len > size - p - KCP_OVERHEAD) return KcpError.LenBeyondDatagram;
      const cmd = data[p + 4];
      if (cmd < CMD_PUSH || cmd > CMD_WINS) return KcpError.UnknownCmd;
      p += KCP_OVERHEAD + len;
    }

    // Pass 2: apply.
    const prevUna = this.sndUna;
    this.ackedMax = -1;
    let flag = false;
    let maxack = 0;
    this.inData = data;
    // An owned datagram (the caller hands it over) is kept as is, not copied.
    this.inCopy = owned ? Buffer.from(data.buffer, data.byteOffset, data.length) : null;
    p = 0;
    while (p < size) {
      const cmd = data[p + 4];
      const frg = data[p + 5];
      const wnd = data[p + 6] | (data[p + 7] << 8);
      const ts = read32(data, p + 8) | 0;
      const sn = read32(data, p + 12) | 0;
      const una = read32(data, p + 16) | 0;
      const len = read32(data, p + 20);
      const body = p + KCP_OVERHEAD;

      this.rmtWnd = wnd;
      this.parseUna(una);
      this.shrinkBuf();

      if (cmd === CMD_ACK) {
        const rtt = (this.current - ts) | 0;
        if (rtt >= 0) this.updateAck(rtt);
        this.parseAck(sn);
        this.shrinkBuf();
        if (!flag) {
          flag = true;
          maxack = sn;
        } else if (((sn - maxack) | 0) > 0) {
          maxack = sn;
        }
      } else if (cmd === CMD_PUSH) {
        if (((sn - ((this.rcvNxt + this.rcvWnd) | 0)) | 0) < 0) {
          this.ackPush(sn, ts);
          if (((sn - this.rcvNxt) | 0) >= 0) this.parseData(sn, frg, body, len);
        }
      } else if (cmd === CMD_WASK) {
        this.probe |= ASK_TELL;
      }
      // CMD_WINS carries only the window, already taken above.
      p = body + len;
    }
    this.inData = null;
    this.inCopy = null;

    if (flag) this.parseFastack(maxack);

    if (((this.sndUna - prevUna) | 0) > 0 && this.cwnd < this.rmtWnd) {
      const mss = this.mss;
      if (this.cwnd < this.ssthresh) {
        this.cwnd++;
        this.incr += mss;
      } else {
        if (this.incr < mss) this.incr = mss;
        this.incr += Math.floor((mss * mss) / this.incr) + Math.floor(mss / 16);
        if ((this.cwnd + 1) * mss <= this.incr) {
          this.cwnd = Math.floor((this.incr + mss - 1) / (mss > 0 ? mss : 1));
        }
      }
      if (this.cwnd > this.rmtWnd) {
        this.cwnd = this.rmtWnd;
        this.incr = this.rmtWnd * mss;
      }
    }
    if (this.ackedMax >= 0 && this.onAcked !== null) this.onAcked(this.ackedMax);
    return 0;
  }

  /**
   * Advances the clock and flushes when the interval has elapsed (ikcp_update).
   * nowMs: a monotonic millisecond clock (e.g. performance.now()); wrapped to 32 bits.
   */
  update(nowMs: number): void {
    const current = nowMs | 0;
    this.current = current;
    if (!this.updated) {
      this.updated = true;
      this.tsFlush = current;
    }
    let slap = (current - this.tsFlush) | 0;
    if (slap >= 10000 || slap < -10000) {
      this.tsFlush = current;
      slap = 0;
    }
    if (slap >= 0) {
      this.tsFlush = (this.tsFlush + this.interval) | 0;
      if (((current - this.tsFlush) | 0) >= 0) this.tsFlush = (current + this.interval) | 0;
      this.flush();
    }
  }

  /**
   * When update() should next be called, in the caller's clock (the same
   * timeline as nowMs): nowMs itself when it is due already, at most
   * `interval` ms later otherwise (ikcp_check). Calls to input()/send() may
   * make it due sooner.
   */
  check(nowMs: number): number {
    const current = nowMs | 0;
    if (!this.updated) return nowMs;
    let tsFlush = this.tsFlush;
    const d = (current - tsFlush) | 0;
    if (d >= 10000 || d < -10000) tsFlush = current;
    if (((current - tsFlush) | 0) >= 0) return nowMs;

    const tmFlush = (tsFlush - current) | 0;
    let tmPacket = 0x7fffffff;
    const live = this.sbLive;
    const resendts = this.sbResendts;
    const mask = this.sbMask;
    for (let sn = this.sndUna; sn !== this.sndNxt; sn = (sn + 1) | 0) {
      const i = sn & mask;
      if (live[i] === 0) continue;
      const diff = (resendts[i] - current) | 0;
      if (diff <= 0) return nowMs;
      if (diff < tmPacket) tmPacket = diff;
    }
    let minimal = tmPacket < tmFlush ? tmPacket : tmFlush;
    if (minimal >= this.interval) minimal = this.interval;
    return nowMs + minimal;
  }

  /**
   * Sends pending ACKs, window probes, new data the windows allow and due
   * retransmissions (ikcp_flush). Does nothing before the first update().
   */
  flush(): void {
    if (!this.updated) return;
    const current = this.current;
    const out = this.obuf;
    const mtu = this.mtu;
    const conv = this.conv_;
    const wnd = this.wndUnused();
    const una = this.rcvNxt;
    let ptr = 0;

    const acks = this.acklist;
    const nack = this.ackCount;
    // ikcp.c's probe segments reuse the header of the last ACK written (sn/ts
    // are meaningless in WASK/WINS); keep that so our bytes match exactly.
    let lastSn = 0;
    let lastTs = 0;
    for (let i = 0; i < nack; i++) {
      if (ptr + KCP_OVERHEAD > mtu) {
        this.emit(ptr);
        ptr = 0;
      }
      lastSn = acks[2 * i];
      lastTs = acks[2 * i + 1];
      ptr = writeHeader(out, ptr, conv, CMD_ACK, 0, wnd, lastTs, lastSn, una, 0);
    }
    this.ackCount = 0;

    // Remote window closed: probe it with exponential backoff in case its WINS got lost.
    if (this.rmtWnd === 0) {
      if (this.probeWait === 0) {
        this.probeWait = PROBE_INIT;
        this.tsProbe = (current + this.probeWait) | 0;
      } else if (((current - this.tsProbe) | 0) >= 0) {
        if (this.probeWait < PROBE_INIT) this.probeWait = PROBE_INIT;
        this.probeWait += Math.floor(this.probeWait / 2);
        if (this.probeWait > PROBE_LIMIT) this.probeWait = PROBE_LIMIT;
        this.tsProbe = (current + this.probeWait) | 0;
        this.probe |= ASK_SEND;
      }
    } else {
      this.tsProbe = 0;
      this.probeWait = 0;
    }

    if (this.probe & ASK_SEND) {
      if (ptr + KCP_OVERHEAD > mtu) {
        this.emit(ptr);
        ptr = 0;
      }
      ptr = writeHeader(out, ptr, conv, CMD_WASK, 0, wnd, lastTs, lastSn, una, 0);
    }
    if (this.probe & ASK_TELL) {
      if (ptr + KCP_OVERHEAD > mtu) {
        this.emit(ptr);
        ptr = 0;
      }
      ptr = writeHeader(out, ptr, conv, CMD_WINS, 0, wnd, lastTs, lastSn, una, 0);
    }
    this.probe = 0;

    let cwnd = Math.min(this.sndWnd, this.rmtWnd);
    if (this.nocwnd === 0) cwnd = Math.min(this.cwnd, cwnd);

    const live = this.sbLive;
    const bufs = this.sbBuf;
    const lens = this.sbLen;
    const frgs = this.sbFrg;
    const resendts = this.sbResendts;
    const rtos = this.sbRto;
    const fastacks = this.sbFastack;
    const xmits = this.sbXmit;
    const mask = this.sbMask;

    // Move queued segments into flight as far as the window allows.
    const q = this.sndQueue;
    while (((this.sndNxt - ((this.sndUna + cwnd) | 0)) | 0) < 0 && q.size > 0) {
      const i = this.sndNxt & mask;
      const o = q.off(0);
      const l = q.len(0);
      // One view per segment for its whole life, so each (re)transmission is a plain set().
      bufs[i] = (q.buf(0) as Buffer).subarray(o, o + l);
      lens[i] = l;
      frgs[i] = q.frg(0);
      live[i] = 1;
      resendts[i] = current;
      rtos[i] = this.rxRto;
      fastacks[i] = 0;
      xmits[i] = 0;
      q.shift();
      this.sndNxt = (this.sndNxt + 1) | 0;
      this.nsndBuf++;
    }

    const resent = this.fastresend > 0 ? this.fastresend : 0x7fffffff;
    const rtomin = this.nodelay === 0 ? this.rxRto >> 3 : 0;
    const rxRto = this.rxRto;
    const nodelay = this.nodelay;
    const fastlimit = this.fastlimit;
    const deadLink = this.deadLink;
    let change = 0;
    let lost = false;
    const forced = this.forcedResend;
    this.forcedResend = false;
    let lostN = 0;
    let lostLen = 0;

    const end = this.sndNxt;
    for (let sn = this.sndUna; sn !== end; sn = (sn + 1) | 0) {
      const i = sn & mask;
      if (live[i] === 0) continue;
      let needsend = false;
      const xmit = xmits[i];
      if (xmit === 0) {
        needsend = true;
        xmits[i] = 1;
        rtos[i] = rxRto;
        resendts[i] = (current + rxRto + rtomin) | 0;
      } else if (((current - resendts[i]) | 0) >= 0) {
        needsend = true;
        xmits[i] = xmit + 1;
        this.xmit++;
        const rto = rtos[i];
        // Capped only so the int32 store cannot wrap negative after very many backoffs.
        if (nodelay === 0) {
          rtos[i] = Math.min(RTO_CAP, rto + Math.max(rto, rxRto));
        } else {
          const step = nodelay < 2 ? rto : rxRto;
          rtos[i] = Math.min(RTO_CAP, rto + ((step / 2) | 0));
        }
        resendts[i] = (current + rtos[i]) | 0;
        lost = true;
        if (!forced) {
          lostN++;
          if (lens[i] > lostLen) lostLen = lens[i];
        }
      } else if (fastacks[i] >= resent) {
        if (xmit <= fastlimit || fastlimit <= 0) {
          needsend = true;
          xmits[i] = xmit + 1;
          fastacks[i] = 0;
          resendts[i] = (current + rtos[i]) | 0;
          change++;
        }
      }

      if (needsend) {
        const len = lens[i];
        if (ptr + KCP_OVERHEAD + len > mtu) {
          this.emit(ptr);
          ptr = 0;
        }
        ptr = writeHeader(out, ptr, conv, CMD_PUSH, frgs[i], wnd, current, sn, una, len);
        if (len > 0) {
          out.set(bufs[i] as Buffer, ptr);
          ptr += len;
        }
        if (xmits[i] >= deadLink) this.state = -1;
      }
    }

    if (ptr > 0) this.emit(ptr);

    if (change) {
      const inflight = u32(this.sndNxt - this.sndUna);
      this.ssthresh = Math.max(THRESH_MIN, Math.floor(inflight / 2));
      this.cwnd = this.ssthresh + resent;
      this.incr = this.cwnd * this.mss;
    }
    if (lost) {
      this.ssthresh = Math.max(THRESH_MIN, Math.floor(cwnd / 2));
      this.cwnd = 1;
      this.incr = this.mss;
    }
    if (this.cwnd < 1) {
      this.cwnd = 1;
      this.incr = this.mss;
    }
    if (lostN > 0 && this.onLost !== null) this.onLost(lostLen, lostN);
  }

  // ---------------------------------------------------------------- diagnostics

  /** A copy of the protocol state (sequence numbers and times as u32). */
  snapshot(): KcpSnapshot {
    return {
      conv: this.conv_,
      state: this.state,
      mtu: this.mtu,
      mss: this.mss,
      sndUna: u32(this.sndUna),
      sndNxt: u32(this.sndNxt),
      rcvNxt: u32(this.rcvNxt),
      sndWnd: this.sndWnd,
      rcvWnd: this.rcvWnd,
      rmtWnd: this.rmtWnd,
      cwnd: this.cwnd,
      incr: this.incr,
      ssthresh: this.ssthresh,
      rxSrtt: this.rxSrtt,
      rxRttval: this.rxRttval,
      rxRto: this.rxRto,
      rxMinrto: this.rxMinrto,
      interval: this.interval,
      nodelay: this.nodelay,
      fastresend: this.fastresend,
      fastlimit: this.fastlimit,
      nocwnd: this.nocwnd,
      stream: this.stream,
      deadLink: this.deadLink,
      probe: this.probe,
      probeWait: this.probeWait,
      tsProbe: u32(this.tsProbe),
      tsFlush: u32(this.tsFlush),
      current: u32(this.current),
      updated: this.updated,
      nsndQue: this.sndQueue.size,
      nsndBuf: this.nsndBuf,
      nrcvQue: this.rcvQueue.size,
      nrcvBuf: this.nrcvBuf,
      ackCount: this.ackCount,
      xmit: this.xmit,
    };
  }

  /**
   * Test hook: start sequence numbers at `sn` instead of 0 (ikcp.c always
   * starts at 0), so wrap-around near 2^32 can be exercised. Both peers must
   * use the same value, before any send/input. Returns false if traffic has
   * already happened.
   * @internal
   */
  _testSetInitialSn(sn: number): boolean {
    if (this.sndQueue.size || this.nsndBuf || this.rcvQueue.size || this.nrcvBuf || this.ackCount) return false;
    if (this.sndUna !== this.sndNxt || this.sndNxt !== 0 || this.rcvNxt !== 0) return false;
    this.sndUna = this.sndNxt = this.rcvNxt = sn | 0;
    return true;
  }

  // ---------------------------------------------------------------- internals

  private emit(size: number): void {
    // As ikcp_output, an empty buffer is not sent. It arises when the first
    // segment of a flush was cut for a larger MTU (before setMtu shrank it:
    // a session moving from the relay to UDP) and nothing precedes it.
    if (size === 0) return;
    let v = this.oview;
    if (v.length !== size) this.oview = v = this.obuf.subarray(0, size);
    this.output(v);
  }

  private wndUnused(): number {
    const n = this.rcvQueue.size;
    return n < this.rcvWnd ? this.rcvWnd - n : 0;
  }

  /** How many rcvQueue entries the next recv() takes (0: nothing ready). */
  private readyCount(): number {
    const q = this.rcvQueue;
    const size = q.size;
    if (size === 0) return 0;
    if (this.stream) {
      // Everything up to the last message end (a stream-mode sender never fragments).
      for (let k = size - 1; k >= 0; k--) if (q.frg(k) === 0) return k + 1;
      return 0;
    }
    const first = q.frg(0);
    if (first === 0) return 1;
    if (size < first + 1) return 0;
    for (let k = 0; k < size; k++) if (q.frg(k) === 0) return k + 1;
    return 0;
  }

  private updateAck(rtt: number): void {
    if (this.rxSrtt === 0) {
      this.rxSrtt = rtt;
      this.rxRttval = Math.floor(rtt / 2);
    } else {
      let delta = rtt - this.rxSrtt;
      if (delta < 0) delta = -delta;
      this.rxRttval = Math.floor((3 * this.rxRttval + delta) / 4);
      this.rxSrtt = Math.floor((7 * this.rxSrtt + rtt) / 8);
      if (this.rxSrtt < 1) this.rxSrtt = 1;
    }
    const rto = this.rxSrtt + Math.max(this.interval, 4 * this.rxRttval);
    this.rxRto = Math.min(Math.max(this.rxMinrto, rto), RTO_MAX);
  }

  private dropSnd(i: number): void {
    const done = this.sbBuf[i];
    if (this.sbLen[i] > this.ackedMax) this.ackedMax = this.sbLen[i];
    this.sbLive[i] = 0;
    this.sbBuf[i] = undefined;
    this.nsndBuf--;
    if (this.onRelease && done) this.onRelease(done);
  }

  /** snd_una := first unacknowledged sn (ikcp_shrink_buf). Amortised O(1). */
  private shrinkBuf(): void {
    const live = this.sbLive;
    const mask = this.sbMask;
    let sn = this.sndUna;
    const end = this.sndNxt;
    while (sn !== end && live[sn & mask] === 0) sn = (sn + 1) | 0;
    this.sndUna = sn;
  }

  /** Cumulative ack: everything before una has arrived. */
  private parseUna(una: number): void {
    const live = this.sbLive;
    const mask = this.sbMask;
    const end = this.sndNxt;
    for (let sn = this.sndUna; sn !== end && ((una - sn) | 0) > 0; sn = (sn + 1) | 0) {
      const i = sn & mask;
      if (live[i] !== 0) this.dropSnd(i);
    }
  }

  private parseAck(sn: number): void {
    if (((sn - this.sndUna) | 0) < 0 || ((sn - this.sndNxt) | 0) >= 0) return;
    const i = sn & this.sbMask;
    if (this.sbLive[i] !== 0) this.dropSnd(i);
  }

  /** Every in-flight segment older than the newest ACK was skipped once more. */
  private parseFastack(maxack: number): void {
    if (((maxack - this.sndUna) | 0) < 0 || ((maxack - this.sndNxt) | 0) >= 0) return;
    const live = this.sbLive;
    const fast = this.sbFastack;
    const mask = this.sbMask;
    for (let sn = this.sndUna; sn !== maxack; sn = (sn + 1) | 0) {
      const i = sn & mask;
      if (live[i] !== 0) fast[i]++;
    }
  }

  private ackPush(sn: number, ts: number): void {
    let list = this.acklist;
    const n = this.ackCount;
    if (2 * n + 2 > list.length) {
      const bigger = new Int32Array(list.length * 2);
      bigger.set(list);
      this.acklist = list = bigger;
    }
    list[2 * n] = sn;
    list[2 * n + 1] = ts;
    this.ackCount = n + 1;
  }

  /** Stores a new in-window data segment and moves the in-order run to rcvQueue. */
  private parseData(sn: number, frg: number, off: number, len: number): void {
    if (((sn - ((this.rcvNxt + this.rcvWnd) | 0)) | 0) >= 0 || ((sn - this.rcvNxt) | 0) < 0) return;
    const i = sn & this.rbMask;
    if (this.rbLive[i] !== 0) return; // duplicate
    let copy = this.inCopy;
    if (copy === null) {
      // First new payload in this datagram: copy it once, since the caller may reuse its buffer.
      copy = this.slab.copy(this.inData as Uint8Array);
      this.inCopy = copy;
    }
    this.rbLive[i] = 1;
    this.rbBuf[i] = copy;
    this.rbOff[i] = off;
    this.rbLen[i] = len;
    this.rbFrg[i] = frg;
    this.nrcvBuf++;
    this.moveRcvBuf();
  }

  private moveRcvBuf(): void {
    const q = this.rcvQueue;
    const live = this.rbLive;
    const mask = this.rbMask;
    while (this.nrcvBuf > 0 && q.size < this.rcvWnd) {
      const i = this.rcvNxt & mask;
      if (live[i] === 0) break;
      q.push(this.rbBuf[i] as Buffer, this.rbOff[i], this.rbLen[i], this.rbFrg[i]);
      live[i] = 0;
      this.rbBuf[i] = undefined;
      this.nrcvBuf--;
      this.rcvNxt = (this.rcvNxt + 1) | 0;
    }
  }

  private resizeSndRing(cap: number): void {
    const oldMask = this.sbMask;
    const old = this.sbLive
      ? {
          live: this.sbLive,
          buf: this.sbBuf,
          len: this.sbLen,
          frg: this.sbFrg,
          resendts: this.sbResendts,
          rto: this.sbRto,
          fastack: this.sbFastack,
          xmit: this.sbXmit,
        }
      : null;
    this.sbLive = new Uint8Array(cap);
    this.sbBuf = new Array<Buffer | undefined>(cap).fill(undefined);
    this.sbLen = new Int32Array(cap);
    this.sbFrg = new Uint8Array(cap);
    this.sbResendts = new Int32Array(cap);
    this.sbRto = new Int32Array(cap);
    this.sbFastack = new Int32Array(cap);
    this.sbXmit = new Int32Array(cap);
    this.sbMask = cap - 1;
    if (!old) return;
    for (let sn = this.sndUna; sn !== this.sndNxt; sn = (sn + 1) | 0) {
      const a = sn & oldMask;
      if (old.live[a] === 0) continue;
      const b = sn & this.sbMask;
      this.sbLive[b] = 1;
      this.sbBuf[b] = old.buf[a];
      this.sbLen[b] = old.len[a];
      this.sbFrg[b] = old.frg[a];
      this.sbResendts[b] = old.resendts[a];
      this.sbRto[b] = old.rto[a];
      this.sbFastack[b] = old.fastack[a];
      this.sbXmit[b] = old.xmit[a];
    }
  }

  private resizeRcvRing(cap: number): void {
    const oldCap = this.rbLive ? this.rbMask + 1 : 0;
    const old = this.rbLive
      ? { live: this.rbLive, buf: this.rbBuf, off: this.rbOff, len: this.rbLen, frg: this.rbFrg }
      : null;
    this.rbLive = new Uint8Array(cap);
    this.rbBuf = new Array<Buffer | undefined>(cap).fill(undefined);
    this.rbOff = new Int32Array(cap);
    this.rbLen = new Int32Array(cap);
    this.rbFrg = new Uint8Array(cap);
    this.rbMask = cap - 1;
    if (!old) return;
    // Every stored segment has sn in [rcvNxt, rcvNxt + oldCap).
    for (let k = 0; k < oldCap; k++) {
      const sn = (this.rcvNxt + k) | 0;
      const a = sn & (oldCap - 1);
      if (old.live[a] === 0) continue;
      const b = sn & this.rbMask;
      this.rbLive[b] = 1;
      this.rbBuf[b] = old.buf[a];
      this.rbOff[b] = old.off[a];
      this.rbLen[b] = old.len[a];
      this.rbFrg[b] = old.frg[a];
    }
  }
}
