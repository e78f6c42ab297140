import type dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import crypto from 'node:crypto';
import type { Session } from '../session/session.js';
import type { Path } from '../session/path.js';
import type { Candidate } from '../wire/control.js';
import { DatagramType, MAX_DATAGRAM_LEN, type DatagramHeader } from '../wire/datagram.js';
import { decodeProbe, encodeProbe } from '../wire/probe.js';
import type { Logger } from '../util/log.js';
import { isDue, processTicker, tickFor } from '../util/ticker.js';
import type { PeerSocket } from './peer-socket.js';
import { betterPath, type PunchPlan } from './strategy.js';

/** A punched (or candidate) UDP path to the peer: one local socket, one remote address. */
export class DirectPath implements Path {
  readonly kind = 'direct' as const;
  readonly maxDatagram = MAX_DATAGRAM_LEN;
  readonly remote: string;
  closed = false;
  /** When one of our probes on this path was last answered (0: never): the path is proven to work both ways. */
  verifiedAt = 0;
  constructor(
    readonly socket: dgram.Socket,
    readonly address: string,
    readonly port: number,
  ) {
    this.remote = `${address}:${port}`;
  }
  send(datagram: Uint8Array): void {
    if (this.closed) return;
    try {
      this.socket.send(datagram, this.port, this.address);
    } catch {
      /* socket closed under us: the path manager notices through missing acks */
    }
  }
  close(): void {
    this.closed = true;
  }
}

export interface DirectOptions {
  session: Session;
  socket: PeerSocket;
  log: Logger;
  /** The relay path to fall back to; null with --mode direct. */
  relay: () => Path | null;
  /** How long one punch attempt may take. */
  attemptMs?: number;
  /** Heartbeat interval on the direct path; well under common 30 s UDP mapping timeouts. */
  heartbeatMs?: number;
  /** The direct path is dead after this long without an authenticated datagram on it. */
  deadAfterMs?: number;
  birthdaySockets?: number;
  /** Probes per second when spraying random ports at a symmetric NAT. */
  sprayRate?: number;
  /** Asks the peer (through the rendezvous) to punch again, with fresh candidates. */
  requestRepunch?: () => void;
}

const MAX_CANDIDATES = 16;
const MAX_PATHS = 512;
/** A nomination is followed without a new check if our own probe proved the path this recently. */
const VERIFIED_FRESH_MS = 10_000;
/** Extra (birthday) sockets the peer is still using are kept this long after they last received. */
const SOCKET_QUIET_MS = 15_000;

/**
 * Path discovery for one session (Tailscale calls this disco): sends
 * authenticated probes to the peer's candidates, confirms a path when a probe
 * is answered, moves the session onto it, keeps it alive with heartbeats and
 * falls back to the relay when it dies, then tries again with backoff.
 * Every probe and answer is sealed with the session keys: an attacker can
 * neither steer the session to an address of its choosing nor make us answer.
 */
export class DirectPathManager {
  private candidates: Candidate[] = [];
  private paths = new Map<string, DirectPath>();
  private probes = new Map<number, { sentAt: number; path: DirectPath }>();
  private nextProbeId = crypto.randomInt(1, 2 ** 31);
  private best: { path: DirectPath; rttMs: number } | null = null;
  private lastDirectRecv = 0;
  private punching: { until: number; timer: NodeJS.Timeout; started: number; plan: PunchPlan } | null = null;
  /** Cancels this path's subscription to the process ticker (heartbeats, death check); null while no direct path. */
  private heartbeat: (() => void) | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelay = 1000;
  private birthday: dgram.Socket[] = [];
  /** Last authenticated datagram per local socket: which birthday sockets the peer still uses. */
  private socketRecv = new Map<dgram.Socket, number>();
  /** The plan of the last round, reused when retrying. */
  private plan: PunchPlan = { kind: 'plain' };
  /**
   * The visitor controls which direct path the session uses (ICE calls it the
   * controlling agent): it nominates a path simply by sending data and
   * heartbeats on it. The server follows, after checking the path itself.
   * Without this, with many sockets (birthday punching) each side could pick a
   * different working pair and close the sockets of the other's choice.
   */
  private readonly controlling: boolean;
  /** Controlled side: the peer has nominated a path; our own probe results no longer switch paths. */
  private followed = false;
  /** Highest packet counter received on the current path: an older datagram still in flight on a previous path is no nomination. */
  private bestCounter = -1n;
  private nominationCheck: { path: DirectPath; at: number; counter: bigint } | null = null;
  private graceTimer: NodeJS.Timeout | null = null;
  private closed = false;
  attempts = 0;
  successes = 0;

  constructor(private readonly opts: DirectOptions) {
    this.controlling = opts.session.opts.role === 'visitor';
    const index = opts.session.opts.keys.localIndex;
    opts.socket.register(index, (msg, header, rinfo, sock) => this.onDatagram(msg, header, rinfo, sock));
    opts.session.on('control', (type: DatagramType, payload: Uint8Array, from: Path) =>
      this.onControl(type, payload, from),
    );
    opts.session.once('close', () => this.close());
  }

  /** The direct path in use, if any. */
  get path(): DirectPath | null {
    return this.best?.path ?? null;
  }

  /** Starts (or restarts) punching toward `candidates` after `delayMs`. */
  punch(candidates: Candidate[], plan: PunchPlan, delayMs = 0): void {
    if (this.closed) return;
    for (const c of candidates) this.addCandidate(c);
    this.plan = plan;
    if (plan.kind === 'none') {
      this.opts.log.info('punch_skipped', plan.reason, { sid: this.opts.session.sid });
      return;
    }
    if (this.punching) {
      // Already probing: new candidates joined the round; extend it.
      this.punching.until = Math.max(this.punching.until, performance.now() + delayMs + this.attemptMs(plan));
      return;
    }
    this.attempts++;
    const started = performance.now() + delayMs;
    const p = {
      until: started + this.attemptMs(plan),
      started,
      plan,
      timer: setTimeout(() => void this.probeLoop(), delayMs),
    };
    this.punching = p;
    this.opts.log.debug(
      'punch_start',
      `punching ${this.opts.session.sid} (${plan.kind}) to ${this.candidates.length} candidates`,
      {
        sid: this.opts.session.sid,
        plan: plan.kind,
        candidates: this.candidates.map((c) => `${c.address}:${c.port}`),
      },
    );
  }

  /**
   * The relay went away while the session was on it (its TCP connection can
   * break alone, e.g. a NAT that lost its state gives it a new port, while
   * the peer is fine). If a hole could be punched before, punch again at once
   * and give the session `graceMs` to find a direct path before closing it.
   * False when there is nothing to hope for (never direct, or both NATs hard).
   */
  recover(graceMs: number, reason: string): boolean {
    if (this.closed || this.successes === 0 || this.plan.kind === 'none') return false;
    if (this.best) return true;
    if (!this.graceTimer) {
      this.graceTimer = setTimeout(() => {
        this.graceTimer = null;
        if (!this.best) this.opts.session.close(`${reason}, and no direct path within ${graceMs / 1000} s`);
      }, graceMs);
      this.graceTimer.unref();
    }
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryDelay = 1000;
    this.opts.requestRepunch?.();
    this.punch([], this.plan, 0);
    return true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.stopPunching();
    this.stopHeartbeat();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.opts.socket.unregister(this.opts.session.opts.keys.localIndex);
  }

  private attemptMs(plan: PunchPlan): number {
    return this.opts.attemptMs ?? (plan.kind === 'plain' ? 5_000 : 15_000);
  }

  private addCandidate(c: Candidate): void {
    if (this.candidates.some((x) => x.address === c.address && x.port === c.port)) return;
    if (this.candidates.length >= MAX_CANDIDATES) return;
    this.candidates.push(c);
  }

  private pathFor(sock: dgram.Socket, address: string, port: number): DirectPath {
    const key = `${address}|${port}|${socketId(sock)}`;
    let p = this.paths.get(key);
    if (!p) {
      if (this.paths.size >= MAX_PATHS) {
        for (const [k, v] of this.paths) {
          if (v !== this.best?.path) {
            this.paths.delete(k);
            break;
          }
        }
      }
      p = new DirectPath(sock, address, port);
      this.paths.set(key, p);
    }
    return p;
  }

  private onDatagram(msg: Buffer, h: DatagramHeader, rinfo: dgram.RemoteInfo, sock: dgram.Socket): void {
    // Nearly every datagram of an established session arrives on its path: skip building the map key.
    const best = this.best?.path;
    const path =
      best && best.socket === sock && best.port === rinfo.port && best.address === rinfo.address
        ? best
        : this.pathFor(sock, rinfo.address, rinfo.port);
    if (!this.opts.session.receive(msg, path)) return;
    const now = performance.now();
    this.socketRecv.set(sock, now);
    if (path === this.best?.path) {
      this.lastDirectRecv = now;
      if (h.counter > this.bestCounter) this.bestCounter = h.counter;
    } else if (
      !this.controlling &&
      (h.type === DatagramType.Data || h.type === DatagramType.Heartbeat) &&
      h.counter > this.bestCounter
    ) {
      this.onNomination(path, now, h.counter);
    }
  }

  /**
   * Controlled side: the peer sends data or heartbeats on `path`, so that is the
   * path it chose. Follow it once our own probe has proven it works both ways
   * (a copy of an authenticated datagram raced from another address by an
   * on-path attacker cannot answer our probe, so it cannot steer us).
   */
  private onNomination(path: DirectPath, now: number, counter: bigint): void {
    if (path.verifiedAt && now - path.verifiedAt < VERIFIED_FRESH_MS) {
      this.bestCounter = counter;
      return this.adopt(path, this.best?.rttMs ?? 0, true);
    }
    const pending = this.nominationCheck;
    if (pending && pending.path === path && now - pending.at < 200) return;
    this.nominationCheck = { path, at: now, counter };
    this.sendProbe(path);
  }

  private sendProbe(path: DirectPath): void {
    const id = this.nextProbeId++ >>> 0;
    this.probes.set(id, { sentAt: performance.now(), path });
    if (this.probes.size > 4096) {
      const cutoff = performance.now() - 5000;
      for (const [k, v] of this.probes) if (v.sentAt < cutoff) this.probes.delete(k);
    }
    this.opts.session.sendSealed(DatagramType.Probe, encodeProbe(id, path.remote), path);
  }

  private async probeLoop(): Promise<void> {
    const p = this.punching;
    if (!p || this.closed) return;
    const { socket } = this.opts;
    const now = performance.now();
    if (now > p.until) return this.punchFailed();
    const elapsed = now - p.started;
    for (const c of this.candidates) this.sendProbe(this.pathFor(socket.socket, c.address, c.port));
    if (p.plan.kind === 'open-sockets') {
      await this.birthdayOpen();
      if (this.punching !== p || this.closed) return; // stopped (or restarted) while sockets opened
    }
    if (p.plan.kind === 'spray-ports' && elapsed > 200) this.spray();
    // Fast at first, when both sides' first packets are crossing; then back off.
    p.timer = setTimeout(() => void this.probeLoop(), elapsed < 1000 ? 50 : elapsed < 3000 ? 200 : 500);
  }

  /** Hard side: many sockets, each probing the peer's public candidates. */
  private async birthdayOpen(): Promise<void> {
    const want = this.opts.birthdaySockets ?? 256;
    while (this.birthday.length < want && this.punching) {
      try {
        this.birthday.push(await this.opts.socket.openExtra());
      } catch {
        break;
      }
    }
    const targets = this.candidates.filter((c) => c.kind !== 'host');
    for (const s of this.birthday) for (const c of targets) this.sendProbe(this.pathFor(s, c.address, c.port));
  }

  /** Easy side facing a symmetric NAT: probe random ports on its public address. */
  private spray(): void {
    const targets = this.candidates.filter((c) => c.kind !== 'host');
    if (!targets.length) return;
    const perTick = Math.max(1, Math.round(((this.opts.sprayRate ?? 1000) * 50) / 1000));
    for (let i = 0; i < perTick; i++) {
      const t = targets[i % targets.length];
      const port = crypto.randomInt(1024, 65536);
      this.sendProbe(this.pathFor(this.opts.socket.socket, t.address, port));
    }
  }

  private onControl(type: DatagramType, payload: Uint8Array, from: Path): void {
    if (!(from instanceof DirectPath)) return;
    if (type === DatagramType.Probe) {
      const probe = decodeProbe(payload);
      if (!probe) return;
      this.opts.session.sendSealed(DatagramType.ProbeAck, encodeProbe(probe.id, from.remote), from);
      // Triggered check: the peer reached us from an address we did not know (peer-reflexive).
      if (!this.best && !this.candidates.some((c) => c.address === from.address && c.port === from.port)) {
        this.addCandidate({ address: from.address, port: from.port, family: 'IPv4', kind: 'prflx' });
        this.sendProbe(from);
      }
      return;
    }
    if (type === DatagramType.ProbeAck) {
      const ack = decodeProbe(payload);
      const sent = ack ? this.probes.get(ack.id) : undefined;
      if (!ack || !sent || sent.path !== from) return;
      this.probes.delete(ack.id);
      from.verifiedAt = performance.now();
      if (this.nominationCheck?.path === from) {
        if (this.nominationCheck.counter > this.bestCounter) this.bestCounter = this.nominationCheck.counter;
        this.nominationCheck = null;
        this.adopt(from, performance.now() - sent.sentAt, true);
        return;
      }
      this.confirm(from, performance.now() - sent.sentAt, ack.addr);
      return;
    }
    if (type === DatagramType.HeartbeatAck && from === this.best?.path) {
      this.lastDirectRecv = performance.now();
    }
  }

  private confirm(path: DirectPath, rttMs: number, observed: string): void {
    const cur = this.best;
    if (cur?.path === path) {
      cur.rttMs = rttMs;
      return;
    }
    // Once the controlling peer has nominated a path, only its nominations move us.
    if (cur && !this.controlling && this.followed) return;
    if (cur && !betterPath({ address: path.address, rttMs }, { address: cur.path.address, rttMs: cur.rttMs })) return;
    this.opts.log.debug(
      'punch_ok',
      `direct path ${path.remote} confirmed, rtt ${rttMs.toFixed(1)} ms, we are seen as ${observed}`,
      { sid: this.opts.session.sid, rttMs, observed },
    );
    this.adopt(path, rttMs, false);
  }

  /** Makes `path` the session's direct path. */
  private adopt(path: DirectPath, rttMs: number, nominated: boolean): void {
    const cur = this.best;
    if (nominated) this.followed = true;
    if (cur?.path === path) return;
    this.best = { path, rttMs };
    this.lastDirectRecv = performance.now();
    this.retryDelay = 1000;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    if (!cur) this.successes++;
    if (nominated)
      this.opts.log.debug('path_followed', `following the peer onto ${path.remote}`, { sid: this.opts.session.sid });
    this.opts.session.usePath(path);
    // Nominate at once (the controlled peer follows the path our heartbeats use),
    // rather than at the next heartbeat, while the peer still holds its punching sockets.
    if (this.controlling) this.opts.session.sendSealed(DatagramType.Heartbeat, EMPTY, path);
    this.startHeartbeat();
    // Let better pairs (LAN) still answer for a moment, then stop probing.
    if (this.punching) this.punching.until = Math.min(this.punching.until, performance.now() + 500);
  }

  /** Heartbeats and the death check ride the process ticker: one wake-up per tick for all sessions. */
  private startHeartbeat(): void {
    if (this.heartbeat) return;
    const every = this.opts.heartbeatMs ?? 2000;
    const deadAfter = this.opts.deadAfterMs ?? 6500;
    const resolution = tickFor(Math.min(every, deadAfter));
    this.heartbeat = processTicker.subscribe((now) => this.onTick(now, every, deadAfter, resolution), resolution);
  }

  private stopHeartbeat(): void {
    this.heartbeat?.();
    this.heartbeat = null;
  }

  private onTick(now: number, every: number, deadAfter: number, resolution: number): void {
    const best = this.best;
    if (!best) return;
    const quiet = now - this.lastDirectRecv;
    if (quiet > deadAfter) return this.directDied(deadAfter);
    // Only the controlling side (the visitor) pings an idle path; the peer's
    // answer refreshes both NAT mappings. Traffic that is flowing proves the
    // path already, and the controlled side pings only as a backup when it
    // has heard nothing for two intervals. Fewer wake-ups per idle tunnel.
    if (this.controlling ? isDue(quiet, every, resolution) : quiet >= every * 1.9) {
      this.opts.session.sendSealed(DatagramType.Heartbeat, EMPTY, best.path);
    }
    if (!this.punching) this.closeQuietSockets(SOCKET_QUIET_MS);
  }

  private directDied(deadAfter: number): void {
    const dead = this.best!;
    this.best = null;
    this.followed = false;
    this.nominationCheck = null;
    this.stopHeartbeat();
    this.opts.log.warn('direct_lost', `no answer on the direct path ${dead.path.remote} for ${deadAfter / 1000} s`, {
      sid: this.opts.session.sid,
    });
    const relay = this.opts.relay();
    if (relay && !relay.closed) this.opts.session.usePath(relay);
    this.scheduleRetry();
  }

  private punchFailed(): void {
    const plan = this.punching?.plan;
    this.stopPunching();
    if (this.best) return;
    this.opts.log.info(
      'punch_failed',
      `no direct path to the peer this time${this.opts.relay() ? '; staying on the relay' : ''}`,
      { sid: this.opts.session.sid, plan: plan?.kind },
    );
    this.scheduleRetry(plan);
  }

  /** Retries with the same plan as the last round: the NATs have not changed type. */
  private scheduleRetry(plan: PunchPlan = this.plan): void {
    if (this.closed || this.retryTimer) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, 60_000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.opts.requestRepunch?.();
      this.punch([], plan, 0);
    }, delay);
    this.retryTimer.unref();
  }

  private stopPunching(): void {
    if (this.punching) clearTimeout(this.punching.timer);
    this.punching = null;
    // Keep the sockets the peer still talks to (its chosen pair may use one of
    // ours that is not our own best); the heartbeat closes them once quiet.
    this.closeQuietSockets(3000);
    this.probes.clear();
  }

  /** Closes extra sockets that are not our path's and received nothing authenticated for `quietMs`. */
  private closeQuietSockets(quietMs: number): void {
    if (!this.birthday.length) return;
    const keep = this.best?.path.socket;
    const now = performance.now();
    const still: dgram.Socket[] = [];
    for (const s of this.birthday) {
      if (s === keep || now - (this.socketRecv.get(s) ?? -Infinity) < quietMs) still.push(s);
      else {
        this.socketRecv.delete(s);
        this.opts.socket.closeExtra(s);
      }
    }
    this.birthday = still;
  }
}

const EMPTY = new Uint8Array(0);

/** A cheap per-socket tag for path keys (getsockname on every datagram showed up in profiles). */
const socketIds = new WeakMap<dgram.Socket, number>();
let nextSocketId = 1;
function socketId(s: dgram.Socket): number {
  let id = socketIds.get(s);
  if (id === undefined) socketIds.set(s, (id = nextSocketId++));
  return id;
}
