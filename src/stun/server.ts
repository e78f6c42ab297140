/**
 * STUN server side: a socket-free responder (decides what to answer and from
 * which local socket) and a thin StunServer that binds the sockets.
 *
 * Socket grid. With only a primary address the server has one socket. With an
 * alternate HOST:PORT it has up to 2 IPs x 2 ports (RFC 5780 §4.1):
 *
 *   index 0  primary-ip : primary-port
 *   index 1  primary-ip : alt-port        (when alt-port differs)
 *   index 2  alt-ip     : primary-port    (when alt-ip differs)
 *   index 3  alt-ip     : alt-port
 *
 * (indices are compacted when a dimension has only one value; use
 * `responder.endpoints` for the actual order.)
 */
import dgram from 'node:dgram';
import { familyOf, isWildcard, toEndpoint, type Endpoint } from './address.js';
import { decodeStun, encodeStun, isStunPacket, StunAttr, StunClass, StunMethod, type StunMessage } from './message.js';

export interface HostPort {
  address: string;
  port: number;
}

export interface StunResponderOptions {
  primary: HostPort;
  /** RFC 5780 alternate address; its IP and/or port must differ from the primary's. */
  alternate?: HostPort;
  /** SOFTWARE attribute on every response; null to leave it out. */
  software?: string | null;
}

export interface StunReply {
  reply: Buffer;
  /** Index into `endpoints` of the socket that must send the reply. */
  via: number;
  /** Destination: the request's source, or its IP at RESPONSE-PORT (RFC 5780 §7.5). */
  to: { address: string; port: number };
}

export interface StunResponderStats {
  requests: number;
  successes: number;
  errors: number;
  ignored: number;
}

/** Attributes (comprehension-required range) that a Binding request may carry and that we accept. */
const TOLERATED_REQUIRED = new Set<number>([
  StunAttr.ChangeRequest,
  StunAttr.ResponsePort,
  StunAttr.Padding,
  // No authentication on this server; ICE-style credentials are accepted and ignored.
  StunAttr.Username,
  StunAttr.MessageIntegrity,
]);

export const DEFAULT_SOFTWARE = 'holepunch';

export class StunResponder {
  /** Local transport address of each socket, by index. */
  readonly endpoints: readonly Endpoint[];
  readonly stats: StunResponderStats = { requests: 0, successes: 0, errors: 0, ignored: 0 };
  private readonly ipCount: number;
  private readonly portCount: number;
  private readonly software: string | null;

  constructor(opts: StunResponderOptions) {
    const family = familyOf(opts.primary.address);
    if (family === null) throw new Error(`primary STUN address is not an IP literal: ${opts.primary.address}`);
    const ips = [opts.primary.address];
    const ports = [opts.primary.port];
    if (opts.alternate) {
      if (familyOf(opts.alternate.address) !== family)
        throw new Error('alternate STUN address must be an IP of the same family');
      // A second IP needs concrete addresses (OTHER-ADDRESS must name it). A second port
      // on the same IP works with a wildcard too: see `handle` for what OTHER-ADDRESS says then.
      const sameIp = opts.alternate.address === opts.primary.address;
      if (!sameIp && (isWildcard(opts.primary.address) || isWildcard(opts.alternate.address))) {
        throw new Error(
          'RFC 5780 needs concrete IPs: bind the primary and alternate to specific addresses, not a wildcard',
        );
      }
      if (opts.alternate.address !== opts.primary.address) ips.push(opts.alternate.address);
      if (opts.alternate.port !== opts.primary.port) ports.push(opts.alternate.port);
      if (ips.length === 1 && ports.length === 1) throw new Error('alternate STUN address equals the primary');
    }
    this.ipCount = ips.length;
    this.portCount = ports.length;
    this.endpoints = ips.flatMap((address) => ports.map((port): Endpoint => ({ address, port, family: family })));
    this.software = opts.software === undefined ? DEFAULT_SOFTWARE : opts.software;
  }

  /** True when the server can do any RFC 5780 test (it has a second socket). */
  get hasAlternate(): boolean {
    return this.endpoints.length > 1;
  }

  /**
   * Answers a datagram received on socket `localIndex` from `rinfo`.
   * Returns null (send nothing) for anything but a well-formed Binding
   * request. Never throws on network input.
   */
  handle(
    packet: Uint8Array,
    rinfo: { address: string; port: number; family?: string | number },
    localIndex: number,
  ): StunReply | null {
    if (!Number.isInteger(localIndex) || localIndex < 0 || localIndex >= this.endpoints.length) return null;
    const req = isStunPacket(packet) ? decodeStun(packet) : null;
    if (req === null || req.cls !== StunClass.Request || req.method !== StunMethod.Binding) {
      this.stats.ignored++;
      return null;
    }
    // RESPONSE-PORT only picks another port on the same source IP, which a
    // spoofer could pick anyway; port 0 cannot be a destination, from a
    // forged source port 0 or from RESPONSE-PORT (dgram's send() throws on it).
    if (req.responsePort === 0 || rinfo.port === 0) {
      this.stats.ignored++;
      return null;
    }
    this.stats.requests++;
    const client = toEndpoint(rinfo);
    const to = { address: rinfo.address, port: req.responsePort ?? rinfo.port };

    const unknown = (req.attributes ?? []).map((a) => a.type).filter((t) => t < 0x8000 && !TOLERATED_REQUIRED.has(t));
    if (unknown.length > 0)
      return this.error(req, localIndex, to, 420, 'Unknown Attribute', [...new Set(unknown)].slice(0, 16));

    const ipIdx = Math.floor(localIndex / this.portCount);
    const portIdx = localIndex % this.portCount;
    const changeIp = req.changeRequest?.changeIp ?? false;
    const changePort = req.changeRequest?.changePort ?? false;
    // A change this server cannot make is answered like an RFC 5389-only server
    // would: 420 naming CHANGE-REQUEST, so the client knows the test is impossible.
    if ((changeIp && this.ipCount < 2) || (changePort && this.portCount < 2)) {
      return this.error(req, localIndex, to, 420, 'Unknown Attribute', [StunAttr.ChangeRequest]);
    }
    const via = this.index(changeIp ? 1 - ipIdx : ipIdx, changePort ? 1 - portIdx : portIdx);
    const origin = this.endpoints[via];
    const res: StunMessage = {
      cls: StunClass.SuccessResponse,
      method: StunMethod.Binding,
      transactionId: req.transactionId,
      xorMappedAddress: client,
      mappedAddress: client, // for RFC 3489-era clients that only read MAPPED-ADDRESS
      fingerprint: true,
    };
    if (!isWildcard(origin.address)) res.responseOrigin = origin;
    if (this.hasAlternate) {
      // RFC 5780 §7.3: the address that differs in IP and port from the one that received the request.
      // A wildcard-bound server with a second port only (the rendezvous's default, one address)
      // cannot name its IP: OTHER-ADDRESS then carries the unspecified IP (0.0.0.0 / ::) with the
      // other port, which our clients read as "the IP you sent this request to, this port"
      // (see otherAddressFor in nat.ts).
      res.otherAddress = this.endpoints[this.index(this.ipCount - 1 - ipIdx, this.portCount - 1 - portIdx)];
    }
    if (this.software !== null) res.software = this.software;
    this.stats.successes++;
    return { reply: encodeStun(res), via, to };
  }

  private index(ipIdx: number, portIdx: number): number {
    return ipIdx * this.portCount + portIdx;
  }

  private error(
    req: StunMessage,
    via: number,
    to: StunReply['to'],
    code: number,
    reason: string,
    unknown?: number[],
  ): StunReply {
    this.stats.errors++;
    const res: StunMessage = {
      cls: StunClass.ErrorResponse,
      method: StunMethod.Binding,
      transactionId: req.transactionId,
      errorCode: { code, reason },
      fingerprint: true,
    };
    if (unknown) res.unknownAttributes = unknown;
    if (this.software !== null) res.software = this.software;
    return { reply: encodeStun(res), via, to };
  }
}

// ---------------------------------------------------------------- StunServer

export interface StunServerOptions extends StunResponderOptions {
  /**
   * Datagrams that are not STUN (e.g. punch coordination sharing the port)
   * go here with the socket they arrived on. Without it they are dropped.
   */
  onOtherDatagram?: (msg: Buffer, rinfo: dgram.RemoteInfo, socket: dgram.Socket) => void;
  /** Socket errors after binding (they never throw). */
  onError?: (err: Error, socket: dgram.Socket) => void;
}

/**
 * Binds the responder's socket grid and answers from the right socket. Port 0
 * in `primary`/`alternate` picks free ports (kept equal across the two IPs, as
 * RFC 5780 requires); the actual addresses are in `endpoints` after listen().
 */
export class StunServer {
  private _responder: StunResponder | null = null;
  private _sockets: dgram.Socket[] = [];
  private closed = false;

  constructor(private readonly opts: StunServerOptions) {}

  get responder(): StunResponder {
    if (this._responder === null) throw new Error('StunServer is not listening');
    return this._responder;
  }

  /** Sockets in `endpoints` order. */
  get sockets(): readonly dgram.Socket[] {
    return this._sockets;
  }

  get endpoints(): readonly Endpoint[] {
    return this.responder.endpoints;
  }

  /** The primary transport address (index 0). */
  address(): Endpoint {
    return this.responder.endpoints[0];
  }

  async listen(): Promise<void> {
    if (this._responder !== null || this.closed) throw new Error('StunServer.listen() called twice');
    const { primary, alternate } = this.opts;
    // Port 0 with an alternate IP: the chosen port must also be free on the other IP; retry a few times.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.bindGrid(primary, alternate);
        return;
      } catch (err) {
        await this.closeSockets();
        const retriable =
          (err as NodeJS.ErrnoException).code === 'EADDRINUSE' && (primary.port === 0 || alternate?.port === 0);
        if (!retriable || attempt >= 4) throw err;
      }
    }
  }

  private async bindGrid(primary: HostPort, alternate: HostPort | undefined): Promise<void> {
    // A host name binds as IPv4 unless it is an IPv6 literal.
    const type = familyOf(primary.address) === 'IPv6' ? 'udp6' : 'udp4';
    const bind = async (address: string, port: number): Promise<dgram.Socket> => {
      const s = dgram.createSocket({ type, reuseAddr: false });
      this._sockets.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind({ address, port, exclusive: true }, () => {
          s.off('error', reject);
          resolve();
        });
      });
      return s;
    };
    const pp = await bind(primary.address, primary.port);
    // The bound address, so a host name such as 'localhost' becomes the IP the responder needs.
    const primaryIp = pp.address().address;
    const primaryPort = pp.address().port;
    let altPort = primaryPort;
    let altIp = primaryIp;
    const grid: dgram.Socket[] = [pp];
    if (alternate) {
      // Same host as the primary (a second port only): use the primary's bound IP (a name such as 'localhost'
      // resolved).
      altIp = alternate.address === primary.address ? primaryIp : alternate.address;
      // Distinct alt port requested (or port 0 meaning "pick one different from the primary").
      const wantsAltPort = alternate.port !== primary.port || alternate.port === 0;
      if (wantsAltPort) {
        const pa = await bind(primaryIp, alternate.port);
        altPort = pa.address().port;
        grid.push(pa);
      }
      if (alternate.address !== primary.address) {
        const ap = await bind(alternate.address, primaryPort);
        altIp = ap.address().address;
        grid.push(ap);
        if (wantsAltPort) grid.push(await bind(altIp, altPort));
      }
    }
    const responder = new StunResponder({
      primary: { address: primaryIp, port: primaryPort },
      alternate: alternate ? { address: altIp, port: altPort } : undefined,
      software: this.opts.software,
    });
    this._sockets = grid;
    grid.forEach((s, i) => this.attach(s, i));
    this._responder = responder;
  }

  private attach(socket: dgram.Socket, index: number): void {
    socket.on('error', (err) => this.opts.onError?.(err, socket));
    socket.on('message', (msg, rinfo) => {
      if (!isStunPacket(msg)) {
        this.opts.onOtherDatagram?.(msg, rinfo, socket);
        return;
      }
      const r = this._responder?.handle(msg, rinfo, index);
      if (!r || this.closed) return;
      // Send errors (e.g. ENETUNREACH for a spoofed source) are not the client's problem nor ours,
      // and a destination dgram refuses outright (it throws) must not end the process.
      try {
        this._sockets[r.via]?.send(r.reply, r.to.port, r.to.address, () => {});
      } catch {
        /* dropped, like a send that failed later */
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.closeSockets();
  }

  private async closeSockets(): Promise<void> {
    const sockets = this._sockets;
    this._sockets = [];
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            try {
              s.close(() => resolve());
            } catch {
              resolve(); // already closed
            }
          }),
      ),
    );
  }
}
