import type dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import crypto from 'node:crypto';
import type { Session } from '../session/session.js';
import type { Path } from '../session/path.js';
import type { Candidate } from '../wire/control.js';
import { DatagramType } from '../wire/datagram.js';
import { decodeProbe, encodeProbe } from '../wire/probe.js';
import type { Logger } from '../util/log.js';
import type { PeerSocket } from './peer-socket.js';
import { betterPath, type PunchPlan } from './strategy.js';

/** A punched (or candidate) UDP path to the peer: one local socket, one remote address. */
export class DirectPath implements Path {
  readonly kind = 'direct' as const;
  readonly remote: string;
  closed = false;
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
  private heartbeat: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelay = 1000;
  private birthday: dgram.Socket[] = [];
  private closed = false;
  attempts = 0;
  successes = 0;

  constructor(private readonly opts: DirectOptions) {
    const index = opts.session.opts.keys.localIndex;
    opts.socket.register(index, (msg, rinfo, sock) => this.onDatagram(msg, rinfo, sock));
    opts.session.on('control', (type: DatagramType, payload: Uint8Array, from: Path) => this.onControl(type, payload, from));
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
    const p = { until: started + this.attemptMs(plan), started, plan, timer: setTimeout(() => void this.probeLoop(), delayMs) };
    this.punching = p;
    this.opts.log.debug('punch_start', `punching ${this.opts.session.sid} (${plan.kind}) to ${this.candidates.length} candidates`, {
      sid: this.opts.session.sid,
      plan: plan.kind,
      candidates: this.candidates.map((c) => `${c.address}:${c.port}`),
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopPunching();
    if (this.heartbeat) clearInterval(this.heartbeat);
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
    const key = `${address}|${port}|${(sock.address() as { port: number }).port}`;
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

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo, sock: dgram.Socket): void {
    const path = this.pathFor(sock, rinfo.address, rinfo.port);
    if (this.opts.session.receive(msg, path)) {
      if (path === this.best?.path) this.lastDirectRecv = performance.now();
    }
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
    if (p.plan.kind === 'open-sockets') await this.birthdayOpen();
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
      this.confirm(from, performance.now() - sent.sentAt, ack.addr);
      return;
    }
    if (type === DatagramType.HeartbeatAck && from === this.best?.path) {
      this.lastDirectRecv = performance.now();
    }
  }

  private confirm(path: DirectPath, rttMs: number, observed: string): void {
    const cur = this.best;
    if (cur && cur.path !== path && !betterPath({ address: path.address, rttMs }, { address: cur.path.address, rttMs: cur.rttMs })) return;
    if (cur?.path === path) {
      cur.rttMs = rttMs;
      return;
    }
    this.best = { path, rttMs };
    this.lastDirectRecv = performance.now();
    this.retryDelay = 1000;
    if (!cur) this.successes++;
    this.opts.log.debug('punch_ok', `direct path ${path.remote} confirmed, rtt ${rttMs.toFixed(1)} ms, we are seen as ${observed}`, { sid: this.opts.session.sid, rttMs, observed });
    this.opts.session.usePath(path);
    this.startHeartbeat();
    // Let better pairs (LAN) still answer for a moment, then stop probing.
    if (this.punching) this.punching.until = Math.min(this.punching.until, performance.now() + 500);
  }

  private startHeartbeat(): void {
    if (this.heartbeat) return;
    const every = this.opts.heartbeatMs ?? 2000;
    const deadAfter = this.opts.deadAfterMs ?? 6500;
    this.heartbeat = setInterval(() => {
      const best = this.best;
      if (!best) return;
      if (performance.now() - this.lastDirectRecv > deadAfter) return this.directDied(deadAfter);
      this.opts.session.sendSealed(DatagramType.Heartbeat, new Uint8Array(0), best.path);
    }, every);
    this.heartbeat.unref();
  }

  private directDied(deadAfter: number): void {
    const dead = this.best!;
    this.best = null;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    this.opts.log.warn('direct_lost', `no answer on the direct path ${dead.path.remote} for ${deadAfter / 1000} s`, { sid: this.opts.session.sid });
    const relay = this.opts.relay();
    if (relay && !relay.closed) this.opts.session.usePath(relay);
    this.scheduleRetry();
  }

  private punchFailed(): void {
    const plan = this.punching?.plan;
    this.stopPunching();
    if (this.best) return;
    this.opts.log.info('punch_failed', `no direct path to the peer this time${this.opts.relay() ? '; staying on the relay' : ''}`, { sid: this.opts.session.sid, plan: plan?.kind });
    this.scheduleRetry(plan);
  }

  private scheduleRetry(plan: PunchPlan = { kind: 'plain' }): void {
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
    const keep = this.best?.path.socket;
    for (const s of this.birthday) if (s !== keep) this.opts.socket.closeExtra(s);
    this.birthday = keep && this.birthday.includes(keep) ? [keep] : [];
    this.probes.clear();
  }
}
