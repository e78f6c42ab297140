import type dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import type { Session } from '../src/session/session.js';
import { FlowTable, sweepIntervalFor, type Flow } from '../src/udp/flow-table.js';
import type { UdpCounters, UdpDropReason } from '../src/udp/stats.js';
import type { HostPort } from '../src/util/addr.js';
import type { Logger } from '../src/util/log.js';
import { sendDatagram } from '../src/transport/batched-udp.js';
import { udpSocketFor } from './udp-socket.js';

/** Datagrams a new flow's socket keeps while it connects (bound: the rest are dropped as send_failed). */
const MAX_PENDING_PER_FLOW = 64;

/** One flow's socket towards the service, connected so that ICMP errors come back to it. */
interface FlowSocket {
  socket: dgram.Socket;
  /** Datagrams waiting for connect() to finish; null once connected. */
  pending: Uint8Array[] | null;
}

/**
 * The serve side of one session of a UDP service: each flow (a client of the
 * visit side, known by its flow id) gets its own UDP socket connected to
 * --local, so the service's replies come back on it and go back to that
 * flow. Idle flows are closed with their socket; the session's end closes
 * them all.
 */
export class UdpServeFlows {
  private readonly table: FlowTable<FlowSocket>;
  private readonly sweepTimer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly session: Session,
    private readonly opts: {
      local: HostPort;
      log: Logger;
      stats: UdpCounters;
      idleMs?: number;
      maxFlows?: number;
    },
  ) {
    this.table = new FlowTable({ idleMs: opts.idleMs, maxFlows: opts.maxFlows });
    session.on('datagram', (flow: number, payload: Uint8Array) => this.fromTunnel(flow, payload));
    session.once('close', () => this.close());
    this.sweepTimer = setInterval(() => this.sweep(), sweepIntervalFor(this.table.idleMs));
    this.sweepTimer.unref();
  }

  get flows(): number {
    return this.table.size;
  }

  private drop(why: UdpDropReason): void {
    this.opts.stats.drops[why]++;
  }

  private fromTunnel(id: number, payload: Uint8Array): void {
    if (this.closed) return;
    const now = performance.now();
    const flow = this.table.openAs(id, (fid) => this.connect(fid), now);
    if (!flow) return this.drop('flow_limit');
    this.table.touch(flow, now);
    const { stats } = this.opts;
    stats.datagramsReceived++;
    stats.bytesReceived += payload.length;
    const fs = flow.value;
    if (fs.pending) {
      if (fs.pending.length < MAX_PENDING_PER_FLOW) fs.pending.push(payload);
      else this.drop('send_failed');
      return;
    }
    sendDatagram(fs.socket, payload, 0, '', this.onSendFailed);
  }

  /** A new flow: its socket, connected to the service; datagrams wait in `pending` meanwhile. */
  private connect(id: number): FlowSocket {
    const { local, stats, log } = this.opts;
    const socket = udpSocketFor(local.host);
    const fs: FlowSocket = { socket, pending: [] };
    stats.flows++;
    stats.flowsOpened++;
    socket.on('message', (msg) => this.fromService(id, msg));
    // ICMP port unreachable (nothing listens on --local) arrives as ECONNREFUSED on the
    // connected socket: counted, and the flow stays (the service may come back).
    socket.on('error', (e: NodeJS.ErrnoException) => this.sendError(e));
    socket.connect(local.port, local.host, () => {
      const queued = fs.pending ?? [];
      fs.pending = null;
      for (const p of queued) sendDatagram(socket, p, 0, '', this.onSendFailed);
    });
    log.debug('udp_flow_open', `session ${this.session.sid}: UDP flow ${id} opened`, {
      sid: this.session.sid,
      flow: id,
    });
    return fs;
  }

  private fromService(id: number, msg: Buffer): void {
    const flow = this.table.get(id);
    if (!flow || this.closed) return;
    this.table.touch(flow, performance.now());
    const why = this.session.sendUserDatagram(id, msg);
    if (why) return this.drop(why);
    this.opts.stats.datagramsSent++;
    this.opts.stats.bytesSent += msg.length;
  }

  /**
   * A send's outcome. An ICMP port unreachable for an earlier datagram fails
   * the next send on a connected socket (ECONNREFUSED), and Node reports a
   * failed send only to its callback; a read that hears of one is an 'error' event.
   */
  private readonly onSendFailed = (code: string): void => {
    this.drop(code === 'ECONNREFUSED' ? 'unreachable' : 'send_failed');
  };

  private sendError(e: NodeJS.ErrnoException): void {
    this.onSendFailed(e.code ?? 'EIO');
  }

  private sweep(): void {
    for (const flow of this.table.sweep(performance.now())) this.closeFlow(flow, 'idle');
  }

  private closeFlow(flow: Flow<FlowSocket>, why: string): void {
    this.opts.stats.flows--;
    flow.value.socket.close();
    this.opts.log.debug('udp_flow_closed', `session ${this.session.sid}: UDP flow ${flow.id} closed (${why})`, {
      sid: this.session.sid,
      flow: flow.id,
      why,
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const flow of this.table.clear()) this.closeFlow(flow, 'session closed');
  }
}
