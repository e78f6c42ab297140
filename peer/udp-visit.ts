import type dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Session } from '../src/session/session.js';
import { FlowTable, sweepIntervalFor, type Flow } from '../src/udp/flow-table.js';
import type { UdpCounters, UdpDropReason } from '../src/udp/stats.js';
import { listenError } from '../src/util/errors.js';
import type { HostPort } from '../src/util/addr.js';
import type { Logger } from '../src/util/log.js';
import { sendDatagram } from '../src/transport/batched-udp.js';
import { udpSocketFor } from './udp-socket.js';

/** A client of the visit side: where its flow's replies go. */
interface Client {
  address: string;
  port: number;
}

/**
 * The visit side of a UDP service: one UDP socket on --bind. Each client
 * source address is a flow with its own id; its datagrams go into the
 * session as UserDatagrams, and the replies for that id go back to it. Flows
 * belong to the session: a new session (the old one died) starts a new table.
 */
export class UdpVisitor {
  private socket: dgram.Socket | null = null;
  private session: Session | null = null;
  private readonly table: FlowTable<Client>;
  /**
   * The flow of the last datagram from a client: a bulk flow (a WireGuard
   * tunnel) skips building its "ip:port" key for every datagram.
   */
  private last: Flow<Client> | null = null;
  private readonly sweepTimer: NodeJS.Timeout;

  constructor(
    private readonly opts: {
      log: Logger;
      stats: UdpCounters;
      idleMs?: number;
      maxFlows?: number;
      /** Called when a datagram arrives with no open session: the owner opens one (datagrams meanwhile are dropped). */
      wantSession: () => void;
    },
  ) {
    this.table = new FlowTable({ idleMs: opts.idleMs, maxFlows: opts.maxFlows });
    this.sweepTimer = setInterval(() => this.sweep(), sweepIntervalFor(this.table.idleMs));
    this.sweepTimer.unref();
  }

  get flows(): number {
    return this.table.size;
  }

  /** Binds the listener; port-in-use is a coded error (address_in_use). */
  async listen(bind: HostPort): Promise<AddressInfo> {
    const socket = udpSocketFor(bind.host);
    this.socket = socket;
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (e: NodeJS.ErrnoException) => reject(listenError(e, `udp ${bind.host}:${bind.port}`)));
      socket.bind({ address: bind.host, port: bind.port, exclusive: true }, () => resolve());
    });
    socket.on('error', () => this.drop('send_failed'));
    socket.on('message', (msg, rinfo) => this.fromClient(msg, rinfo));
    return socket.address();
  }

  /** The session datagrams go through from now on (its flows start empty). */
  attach(session: Session): void {
    if (this.session === session) return;
    this.forget('a new session');
    this.session = session;
    session.on('datagram', (flow: number, payload: Uint8Array) => {
      if (this.session === session) this.fromTunnel(flow, payload);
    });
    session.once('close', () => {
      if (this.session !== session) return;
      this.session = null;
      this.forget('the session closed');
    });
  }

  private drop(why: UdpDropReason): void {
    this.opts.stats.drops[why]++;
  }

  private fromClient(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const session = this.session;
    if (!session || session.closed) {
      this.drop('no_path');
      this.opts.wantSession();
      return;
    }
    const now = performance.now();
    const last = this.last;
    let flow =
      last && last.value.port === rinfo.port && last.value.address === rinfo.address && this.table.get(last.id) === last
        ? last
        : null;
    const key = flow ? flow.key : `${rinfo.address}:${rinfo.port}`;
    flow ??= this.table.lookup(key) ?? null;
    if (!flow) {
      flow = this.table.open(key, () => ({ address: rinfo.address, port: rinfo.port }), now);
      if (!flow) return this.drop('flow_limit');
      this.opts.stats.flows++;
      this.opts.stats.flowsOpened++;
      this.opts.log.debug('udp_flow_open', `UDP flow ${flow.id} for ${key}`, {
        sid: session.sid,
        flow: flow.id,
        client: key,
      });
    }
    this.table.touch(flow, now);
    this.last = flow;
    const why = session.sendUserDatagram(flow.id, msg);
    if (why) return this.drop(why);
    this.opts.stats.datagramsSent++;
    this.opts.stats.bytesSent += msg.length;
  }

  private readonly onSendFailed = (): void => {
    this.drop('send_failed');
  };

  private fromTunnel(id: number, payload: Uint8Array): void {
    const flow = this.table.get(id);
    const socket = this.socket;
    if (!flow || !socket) return this.drop('unknown_flow');
    this.table.touch(flow, performance.now());
    this.opts.stats.datagramsReceived++;
    this.opts.stats.bytesReceived += payload.length;
    // The callback is what hears of a failed send (Node drops the error without one).
    sendDatagram(socket, payload, flow.value.port, flow.value.address, this.onSendFailed);
  }

  private sweep(): void {
    for (const flow of this.table.sweep(performance.now())) this.closed(flow, 'idle');
  }

  private closed(flow: Flow<Client>, why: string): void {
    this.opts.stats.flows--;
    this.opts.log.debug('udp_flow_closed', `UDP flow ${flow.id} for ${flow.key} closed (${why})`, {
      flow: flow.id,
      client: flow.key,
      why,
    });
  }

  /** Drops every flow (their ids mean nothing to another session). */
  private forget(why: string): void {
    this.last = null;
    for (const flow of this.table.clear()) this.closed(flow, why);
  }

  close(): void {
    clearInterval(this.sweepTimer);
    this.forget('shutting down');
    this.socket?.close();
    this.socket = null;
  }
}
