import type { Duplex } from 'node:stream';
import { Session } from '../src/session/session.js';
import { RelayPath } from '../src/session/relay-path.js';
import type { Path } from '../src/session/path.js';
import type { SessionKeys } from '../src/crypto/index.js';
import { DirectPathManager } from '../src/punch/direct.js';
import { gatherCandidates, type Gathered } from '../src/punch/candidates.js';
import { PeerSocket } from '../src/punch/peer-socket.js';
import { planPunch } from '../src/punch/strategy.js';
import type { Candidate, MessageOf, Mode, NatInfo } from '../src/wire/control.js';
import type { HostPort } from '../src/util/addr.js';
import type { Logger } from '../src/util/log.js';
import type { ControlClient } from './control-client.js';

export type MuxStream = Duplex & { reset(reason?: string): void };

export interface Tunnel {
  session: Session;
  direct: DirectPathManager | null;
  relay: RelayPath | null;
  peerNat?: NatInfo;
}

/**
 * What serve and visit share: the UDP socket, candidate discovery, and the
 * wiring of one session to its relay and direct paths.
 */
export class TunnelHost {
  readonly tunnels = new Map<string, Tunnel>();
  private early = new Map<string, MessageOf<'punch'>>();
  private socket: PeerSocket | null = null;
  gathered: Gathered | null = null;

  constructor(
    readonly opts: { log: Logger; mode: Mode; server: HostPort },
  ) {}

  /** Opens the UDP socket unless punching is off. */
  async open(): Promise<void> {
    if (this.opts.mode !== 'relay' && !this.socket) this.socket = await PeerSocket.open();
  }

  close(): void {
    for (const t of this.tunnels.values()) t.session.close('shutting down');
    this.socket?.close();
    this.socket = null;
  }

  /** Candidates for a new session, from STUN on the data socket (empty with --mode relay). */
  async gather(control: ControlClient): Promise<Gathered> {
    if (!this.socket || !control.welcome) return { candidates: [], nat: { mapping: 'unknown', filtering: 'unknown' } };
    const host = control.remoteAddress?.replace(/^::ffff:/, '') ?? this.opts.server.host;
    const loopback = host.startsWith('127.') || host === '::1';
    this.gathered = await gatherCandidates(this.socket, { address: host, port: control.welcome.udpPort }, { includeLoopback: loopback });
    return this.gathered;
  }

  /** Routes a `punch` from the rendezvous to its session (or keeps it until the session exists). */
  onPunch(m: MessageOf<'punch'>): void {
    const t = this.tunnels.get(m.sid);
    if (!t) {
      if (this.early.size < 256) this.early.set(m.sid, m);
      setTimeout(() => this.early.delete(m.sid), 10_000).unref();
      return;
    }
    if (m.peerNat) t.peerNat = m.peerNat;
    t.direct?.punch(m.candidates, planPunch(this.gathered?.nat, t.peerNat), m.delayMs);
  }

  /** Creates the session and its paths; resolves once data can flow (relay up, or direct up with --mode direct). */
  async start(args: { keys: SessionKeys; sid: string; role: 'visitor' | 'server'; ticket: string; control: ControlClient; peerNat?: NatInfo; onStream?: (s: MuxStream) => void }): Promise<Tunnel> {
    const { log, mode } = this.opts;
    const { sid, control } = args;
    const session = new Session({ keys: args.keys, role: args.role, log, sid });
    const tunnel: Tunnel = { session, direct: null, relay: null, peerNat: args.peerNat };
    this.tunnels.set(sid, tunnel);
    session.on('path', (p: Path) => log.info('path', `session ${sid} now on the ${p.kind} path (${p.remote})`, { sid, path: p.kind, remote: p.remote }));
    session.once('close', (reason: string) => {
      this.tunnels.delete(sid);
      log.info('session_closed', `session ${sid} closed: ${reason}`, { sid });
    });
    if (args.onStream) session.mux.on('stream', args.onStream);
    if (this.socket) {
      tunnel.direct = new DirectPathManager({
        session,
        socket: this.socket,
        log,
        relay: () => tunnel.relay,
        requestRepunch: () => void this.repunch(control, sid),
      });
      const early = this.early.get(sid);
      if (early) {
        this.early.delete(sid);
        this.onPunch(early);
      }
    }
    if (mode !== 'direct') {
      const relayHost = control.welcome?.relay?.host ?? this.opts.server.host;
      const relayPort = control.welcome?.relay?.port ?? this.opts.server.port;
      try {
        const relay = await RelayPath.open(relayHost, relayPort, args.ticket);
        tunnel.relay = relay;
        relay.on('datagram', (d: Buffer) => session.receive(d, relay));
        relay.on('close', () => {
          tunnel.relay = null;
          if (session.path === relay) session.close('relay connection lost');
        });
        session.once('close', () => relay.close());
        // Relay first, unless a hole already opened while the relay connected.
        if (!session.path) session.usePath(relay);
      } catch (e) {
        session.close((e as Error).message);
        throw e;
      }
    }
    return tunnel;
  }

  private async repunch(control: ControlClient, sid: string): Promise<void> {
    if (control.isClosed) return;
    const g = await this.gather(control);
    control.send({ type: 'candidates', sid, candidates: g.candidates, nat: g.nat });
  }
}

export type { Candidate };
