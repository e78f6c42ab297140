import type { MessageOf } from '../src/wire/control.js';
import type { RendezvousServer } from './server.js';

/** The dashboard's chart: one sample this often... */
export const TRAFFIC_SAMPLE_MS = 5000;
/** ...over the last 15 minutes. */
export const TRAFFIC_HISTORY_MS = 15 * 60 * 1000;
/**
 * A session's rate counts as current for this long after its visitor's last
 * report (visitors report every 5 s while traffic flows: peer/traffic-report.ts).
 */
const RATE_FRESH_MS = 12_000;
/**
 * A session's rate is measured over at least this long: both peers report at
 * a path change, moments apart and with nearly the same counts, and a rate
 * taken between those two reports would read as zero until the next one.
 */
const RATE_MIN_SPAN_MS = 2000;
/** Sessions remembered at once (a bound: records of ended sessions are dropped at each sample). */
const MAX_SESSIONS = 100_000;

interface SessionTraffic {
  /** Sealed bytes by path kind, both ways, as the peers last reported (the larger of their counts). */
  relay: number;
  direct: number;
  lastAt: number;
  /** Bytes per second on each kind of path over the last span of at least RATE_MIN_SPAN_MS... */
  rate: { relay: number; direct: number };
  /** ...which began at this time, with these counts (null before the first counts). */
  spanAt: number;
  spanBytes: { relay: number; direct: number } | null;
  /** Where each side's active path goes, as it said: the visitor's is the server's endpoint and vice versa. */
  serverEndpoint?: string;
  visitorEndpoint?: string;
  /** The paths the session has been on, in order (consecutive repeats folded), and when it first went direct. */
  paths: ('relay' | 'direct')[];
  startedAt: number;
  directAt?: number;
}

/** Path changes remembered per session. */
const MAX_PATH_HISTORY = 8;

export interface TrafficStatus {
  sampleMs: number;
  /** Time of the newest sample (ms since the epoch); older ones are sampleMs apart. */
  lastAt: number;
  /** Bytes per second on the relay and on direct paths, oldest first. */
  relayBps: number[];
  directBps: number[];
}

/**
 * Relay and direct traffic over the last 15 minutes, and each session's
 * bytes, rate and endpoints, for the rendezvous dashboard. The relay series
 * is what the embedded relay forwarded (measured here); with a standalone
 * relay, and for direct paths, it is what the visitors report in their path
 * reports. Nothing routes by it.
 */
export class TrafficHistory {
  private readonly sessions = new Map<string, SessionTraffic>();
  private readonly relay: number[] = [];
  private readonly direct: number[] = [];
  private lastSampleAt = Date.now();
  private lastRelayBytes: number;
  private readonly timer: NodeJS.Timeout;
  private readonly onReport = (sid: string, role: 'visitor' | 'server', m: MessageOf<'path_report'>) =>
    this.report(sid, role, m);

  constructor(
    private readonly server: RendezvousServer,
    private readonly sampleMs = TRAFFIC_SAMPLE_MS,
  ) {
    this.lastRelayBytes = server.relay?.bytesForwarded ?? 0;
    server.events.on('path_report', this.onReport);
    this.timer = setInterval(() => this.sample(), sampleMs);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
    this.server.events.off('path_report', this.onReport);
  }

  /** One path report: its byte counts and the endpoint its path goes to. */
  report(sid: string, role: 'visitor' | 'server', m: MessageOf<'path_report'>, now = Date.now()): void {
    let t = this.sessions.get(sid);
    if (!t) {
      if (this.sessions.size >= MAX_SESSIONS) return;
      t = {
        relay: 0,
        direct: 0,
        lastAt: now,
        rate: { relay: 0, direct: 0 },
        spanAt: now,
        spanBytes: null,
        paths: [],
        startedAt: now,
      };
      this.sessions.set(sid, t);
    }
    if (m.path !== 'closed') {
      if (t.paths[t.paths.length - 1] !== m.path && t.paths.length < MAX_PATH_HISTORY) t.paths.push(m.path);
      if (m.path === 'direct') t.directAt ??= now;
    }
    if (m.remote && m.path !== 'closed') {
      // A relay path's remote is the relay: the peer's own endpoint is only known on a direct path.
      const where = m.path === 'direct' ? m.remote : undefined;
      if (role === 'visitor') t.serverEndpoint = where;
      else t.visitorEndpoint = where;
    }
    if (!m.bytes) return;
    // Both peers count the same datagrams (one's out is the other's in): keep the larger count.
    t.relay = Math.max(t.relay, m.bytes.relay);
    t.direct = Math.max(t.direct, m.bytes.direct);
    t.lastAt = now;
    const span = now - t.spanAt;
    // The first counts only start a span: what came before them is not a rate.
    if (t.spanBytes && span < RATE_MIN_SPAN_MS) return;
    if (t.spanBytes)
      t.rate = {
        relay: ((t.relay - t.spanBytes.relay) * 1000) / span,
        direct: ((t.direct - t.spanBytes.direct) * 1000) / span,
      };
    t.spanAt = now;
    t.spanBytes = { relay: t.relay, direct: t.direct };
  }

  /** Takes one sample of the chart; ends the records of sessions the server no longer has. */
  sample(now = Date.now()): void {
    const live = new Set(this.server.snapshot().sessions.map((s) => s.sid));
    let relayRate = 0;
    let directRate = 0;
    for (const [sid, t] of this.sessions) {
      if (!live.has(sid)) {
        this.sessions.delete(sid);
        continue;
      }
      const rate = this.rateOf(t, now);
      relayRate += rate.relay;
      directRate += rate.direct;
    }
    const dt = Math.max(1, now - this.lastSampleAt);
    if (this.server.relay) {
      const bytes = this.server.relay.bytesForwarded;
      relayRate = ((bytes - this.lastRelayBytes) * 1000) / dt;
      this.lastRelayBytes = bytes;
    }
    this.lastSampleAt = now;
    const keep = Math.ceil(TRAFFIC_HISTORY_MS / this.sampleMs);
    this.relay.push(Math.round(relayRate));
    this.direct.push(Math.round(directRate));
    if (this.relay.length > keep) this.relay.splice(0, this.relay.length - keep);
    if (this.direct.length > keep) this.direct.splice(0, this.direct.length - keep);
  }

  private rateOf(t: SessionTraffic, now: number): { relay: number; direct: number } {
    return now - t.lastAt <= RATE_FRESH_MS ? t.rate : { relay: 0, direct: 0 };
  }

  /** A session's traffic for /status, or null when no peer has reported any. */
  session(sid: string, startedAt: number, now = Date.now()) {
    const t = this.sessions.get(sid);
    if (!t) return null;
    return {
      paths: [...t.paths],
      directAfterS: t.directAt === undefined ? null : Math.max(0, Math.round((t.directAt - startedAt) / 10) / 100),
      bytes: { relay: t.relay, direct: t.direct, total: t.relay + t.direct },
      rateBps: Math.round(this.rateOf(t, now).relay + this.rateOf(t, now).direct),
      endpoints: { visitor: t.visitorEndpoint ?? null, server: t.serverEndpoint ?? null },
    };
  }

  status(): TrafficStatus {
    return {
      sampleMs: this.sampleMs,
      lastAt: this.lastSampleAt,
      relayBps: [...this.relay],
      directBps: [...this.direct],
    };
  }
}
