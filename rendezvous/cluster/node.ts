import crypto from 'node:crypto';
import type { FramedSocket } from '../../src/transport/framed-socket.js';
import type { ControlMessage, MessageOf } from '../../src/wire/control.js';
import { formatHostPort, parseHostPort, type HostPort } from '../../src/util/addr.js';
import type { Logger } from '../../src/util/log.js';
import { encodeBus, parseBus, type BusMessage } from './bus.js';
import { encodeRecord, newNameRecord, redactUrl, ticketRoute, type NameRecord, type NodeRecord } from './records.js';
import { forwardRelayLeg } from './relay-forward.js';
import { RedisStore } from './store.js';
import type {
  ClaimOutcome,
  Cluster,
  ClusterHost,
  ClusterStatus,
  PeerLink,
  RemoteConnect,
  VisitorSessionMessage,
} from './types.js';

export interface RedisClusterOptions {
  /** redis://HOST:PORT/DB */
  url: string;
  nodeId: string;
  /** Where other nodes reach this node's relay; default: the listening address. */
  advertise?: HostPort;
  /** Lifetime of a name (and of this node's heartbeat) without a refresh. Refreshed every third of it. */
  ttlMs?: number;
  log: Logger;
  /** How long start() waits for Redis before going on without it. */
  startWaitMs?: number;
}

/** A name this node holds in the shared registry, and the local connection holding it. */
interface Held {
  name: string;
  key: string;
  record: NameRecord;
  text: string;
  owner: PeerLink;
}

/** A local visitor connection with sessions brokered on other nodes. */
interface LocalVisitor {
  id: number;
  conn: PeerLink;
  nodes: Set<string>;
  sids: Set<string>;
}

/** A session of a local visitor brokered by node `node`. */
interface ForwardedSession {
  node: string;
  visitor: number;
  relay: HostPort | null;
  relayTaken: boolean;
}

/** Stand-in for a visitor on another node; `fs.send` goes over the bus. */
interface RemoteVisitor extends PeerLink {
  node: string;
  v: number;
}

/** Caps on what other nodes can make this one remember (each entry also has a natural end). */
const MAX_FORWARDED = 100_000;
const MAX_REMOTE_VISITORS = 100_000;

/**
 * A rendezvous node in a cluster that shares one registry on Redis.
 *
 * - Names: `holepunch:name:<name>` holds {node, key, reg} with a TTL this node
 *   refreshes (compare-and-refresh) while the serve connection lives.
 * - Brokering happens on the node that holds the serve connection; a visitor
 *   on another node is represented there by a RemoteVisitor whose messages
 *   travel over the bus.
 * - The visitor's relay leg reaches the visitor's own node, which pipes it to
 *   the owning node's relay (see docs/CLUSTER.md for why).
 */
export class RedisCluster implements Cluster {
  private readonly store: RedisStore;
  private host: ClusterHost | null = null;
  private readonly ttlMs: number;
  private advertise = '';
  private readonly instance = crypto.randomBytes(6).toString('hex');
  private nodeRecord: NodeRecord | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;
  private held = new Map<string, Held>();
  /** Names given up while Redis was out of reach, kept one TTL so the same key reconnecting here gets them back. */
  private recent = new Map<string, { h: Held; until: number }>();
  private visitors = new Map<number, LocalVisitor>();
  private visitorIds = new WeakMap<PeerLink, number>();
  /**
   * Random start: a restarted node with the same --node-id
   * does not reuse the numbers other nodes may still remember.
   */
  private nextVisitor = crypto.randomInt(1, 2 ** 31);
  private forwarded = new Map<string, ForwardedSession>();
  private remote = new Map<string, RemoteVisitor>();
  /** Nodes found missing at the last liveness check: gone for good when missing twice. */
  private suspect = new Set<string>();
  private rttMs: number | null = null;
  private beats = 0;
  private closed = false;

  constructor(readonly opts: RedisClusterOptions) {
    this.ttlMs = opts.ttlMs ?? 15_000;
    this.store = new RedisStore({ url: opts.url, commandTimeoutMs: Math.min(3000, this.ttlMs / 3) });
  }

  get nodeId(): string {
    return this.opts.nodeId;
  }

  get registryUp(): boolean {
    return this.store.up;
  }

  async start(host: ClusterHost, listening: { host: string; port: number }): Promise<void> {
    const { log } = this.opts;
    this.host = host;
    const adv = this.opts.advertise ?? { host: listening.host, port: listening.port };
    if (adv.host === '0.0.0.0' || adv.host === '::') {
      log.warn(
        'cluster',
        `listening on all addresses: other nodes will reach this node's relay at ` +
          `${formatHostPort(adv)}, which only works on one host; pass --advertise HOST:PORT`,
      );
    }
    this.advertise = formatHostPort(adv);
    this.nodeRecord = {
      node: this.opts.nodeId,
      advertise: this.advertise,
      instance: this.instance,
      started: Date.now(),
    };
    const where = redactUrl(this.opts.url);
    this.store.on('message', (text: string) => this.onBus(text));
    this.store.on('down', (reason: string) => {
      log.error(
        'registry_down',
        `lost the cluster registry at ${where} (${reason}): serving the ${this.held.size} ` +
          `name(s) held here; registrations and visits to other nodes are refused until it is back`,
        { registry: where, reason },
      );
    });
    this.store.on('up', () => {
      log.info(
        'registry_up',
        `cluster registry at ${where} is reachable: node "${this.opts.nodeId}" re-asserts its ` +
          `${this.held.size} name(s)`,
        { registry: where, node: this.opts.nodeId, names: this.held.size },
      );
      this.recent.clear();
      void this.beatSoon();
    });
    const up = await this.store.start(this.opts.nodeId, this.opts.startWaitMs ?? 3000);
    if (!up)
      log.error(
        'registry_down',
        `cannot reach the cluster registry at ${where} ` +
          `(${this.store.lastError || 'no answer'}); serving without it and retrying`,
        { registry: where },
      );
    else await this.beatSoon();
    this.heartbeatTimer = setInterval(() => void this.beatSoon(), Math.max(200, Math.floor(this.ttlMs / 3)));
    this.heartbeatTimer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    // A heartbeat already under way would refresh (re-assert) the names after
    // we release them, holding them for another TTL: let it finish first.
    await this.beating?.catch(() => undefined);
    // Give our names back now rather than after the TTL: a clean shutdown moves serves at once.
    if (this.store.up) {
      await Promise.allSettled([...this.held.values()].map((h) => this.store.release(h.name, h.text)));
    }
    await this.store.close();
  }

  /**
   * The nodes of the cluster with a live heartbeat, and where their relays are (the dashboard); [] while Redis is
   * down.
   */
  async nodes(): Promise<{ node: string; relay: string; self: boolean; startedAt: number }[]> {
    if (!this.store.up) return [];
    try {
      const all = await this.store.allNodes();
      return all
        .map((r) => ({ node: r.node, relay: r.advertise, self: r.node === this.opts.nodeId, startedAt: r.started }))
        .sort((a, b) => a.node.localeCompare(b.node));
    } catch {
      return [];
    }
  }

  status(): ClusterStatus {
    return {
      node: this.opts.nodeId,
      advertise: this.advertise,
      registry: this.store.up ? 'up' : 'down',
      names: this.held.size,
      remoteVisitors: this.remote.size,
      forwardedSessions: this.forwarded.size,
      registryRttMs: this.rttMs === null ? null : Math.round(this.rttMs * 100) / 100,
    };
  }

  // ---- names ----

  async claim(name: string, key: string, owner: PeerLink): Promise<ClaimOutcome> {
    if (!this.store.up) return this.reclaimOffline(name, key, owner);
    const record = newNameRecord(this.opts.nodeId, key);
    const text = encodeRecord(record);
    let reply;
    try {
      reply = await this.store.claim(name, text, key, this.ttlMs);
    } catch (e) {
      return unavailable(`registry error: ${(e as Error).message}`);
    }
    if (!reply.ok) {
      const where = reply.holder?.node === this.opts.nodeId ? '' : ` (on node "${reply.holder?.node ?? '?'}")`;
      return { ok: false, code: 'name_taken', message: `the name "${name}" is already served by someone else${where}` };
    }
    this.held.set(name.toLowerCase(), { name, key, record, text, owner });
    const prev = reply.previous;
    // The same key held it on another node: that node still thinks it serves the name; tell it to let go.
    if (prev && prev.node !== this.opts.nodeId)
      void this.publish(prev.node, { t: 'moved', from: this.opts.nodeId, name: name.toLowerCase(), reg: prev.reg });
    return { ok: true };
  }

  release(name: string, owner: PeerLink): void {
    const k = name.toLowerCase();
    const h = this.held.get(k);
    if (!h || h.owner !== owner) return;
    this.held.delete(k);
    // Compare-and-delete: if another registration replaced ours
    // meanwhile, it stays. Unreachable Redis: the TTL ends it.
    if (this.store.up) this.store.release(h.name, h.text).catch(() => undefined);
    else this.recent.set(k, { h, until: Date.now() + this.ttlMs });
  }

  /**
   * Redis out of reach: nothing new can be checked, but a serve that lost its
   * connection to us and comes back with the same key gets its name back under
   * the same record (still ours in Redis, or re-asserted, or reported lost, by
   * the next refresh once Redis is back).
   */
  private reclaimOffline(name: string, key: string, owner: PeerLink): ClaimOutcome {
    const k = name.toLowerCase();
    const cur = this.held.get(k);
    if (cur && cur.key === key) {
      // The same key from a new connection while the old one lingers: it moves, as on one node.
      this.held.set(k, { ...cur, owner });
      return { ok: true };
    }
    const r = this.recent.get(k);
    if (!r || r.h.key !== key || r.until < Date.now()) return unavailable('registrations are paused');
    this.recent.delete(k);
    this.held.set(k, { ...r.h, owner });
    return { ok: true };
  }

  // ---- visits: the visitor's side ----

  async connect(visitor: PeerLink, m: MessageOf<'connect'>): Promise<RemoteConnect> {
    if (!this.store.up) return unavailable(`cannot look up "${m.name}"`);
    let holder: NameRecord | null;
    try {
      holder = await this.store.lookup(m.name);
    } catch (e) {
      return unavailable(`cannot look up "${m.name}": ${(e as Error).message}`);
    }
    if (!holder || holder.node === this.opts.nodeId)
      return { ok: false, code: 'unknown_name', message: `no peer is serving "${m.name}"` };
    const lv = this.localVisitor(visitor);
    if (!lv) return unavailable('too many visitors on this node');
    const sent = await this.publish(holder.node, {
      t: 'connect',
      from: this.opts.nodeId,
      v: lv.id,
      addr: visitor.fs.remote.slice(0, 80),
      rtt: visitor.rttMs,
      m,
    });
    if (sent === 0)
      return {
        ok: false,
        code: 'unknown_name',
        message:
          `"${m.name}" is registered on node "${holder.node}", which is not answering (it may ` +
          `have just died; its names expire within ${Math.round(this.ttlMs / 1000)} s)`,
      };
    if (sent < 0) return unavailable(`cannot reach node "${holder.node}"`);
    lv.nodes.add(holder.node);
    return { ok: true };
  }

  fromVisitor(visitor: PeerLink, m: VisitorSessionMessage): boolean {
    const f = this.forwarded.get(m.sid);
    const id = this.visitorIds.get(visitor);
    if (!f || id === undefined || f.visitor !== id) return false;
    void this.publish(f.node, { t: 'visitor', from: this.opts.nodeId, v: id, m });
    if (m.type === 'path_report' && m.path === 'closed') this.forgetForwarded(m.sid);
    return true;
  }

  connectionClosed(conn: PeerLink): void {
    for (const h of [...this.held.values()]) if (h.owner === conn) this.release(h.name, conn);
    const id = this.visitorIds.get(conn);
    if (id === undefined) return;
    const lv = this.visitors.get(id);
    this.visitors.delete(id);
    if (!lv) return;
    for (const sid of lv.sids) this.forwarded.delete(sid);
    for (const node of lv.nodes) void this.publish(node, { t: 'gone', from: this.opts.nodeId, v: id });
  }

  takeRelayLeg(fs: FramedSocket, ticket: string): boolean {
    const route = ticketRoute(ticket);
    const f = route && route.role === 'visitor' ? this.forwarded.get(route.sid) : undefined;
    if (!route || !f || !f.relay || f.relayTaken) return false;
    f.relayTaken = true;
    const sid = route.sid;
    this.opts.log.debug(
      'relay_forward',
      `relay leg of session ${sid} goes to node "${f.node}" at ${formatHostPort(f.relay)}`,
      { sid, node: f.node },
    );
    forwardRelayLeg(fs, ticket, f.relay, (reason) =>
      this.opts.log.debug('relay_forward_end', `forwarded relay leg of session ${sid} ended: ${reason}`, { sid }),
    );
    return true;
  }

  private localVisitor(conn: PeerLink): LocalVisitor | null {
    const id = this.visitorIds.get(conn);
    if (id !== undefined) {
      const lv = this.visitors.get(id);
      if (lv) return lv;
    }
    if (this.visitors.size >= MAX_REMOTE_VISITORS) return null;
    const lv: LocalVisitor = { id: this.nextVisitor++, conn, nodes: new Set(), sids: new Set() };
    this.visitors.set(lv.id, lv);
    this.visitorIds.set(conn, lv.id);
    return lv;
  }

  private forgetForwarded(sid: string): void {
    const f = this.forwarded.get(sid);
    if (!f) return;
    this.forwarded.delete(sid);
    this.visitors.get(f.visitor)?.sids.delete(sid);
  }

  // ---- the bus ----

  /** Resolves with the number of receivers, or -1 when Redis is out of reach. */
  private async publish(node: string, m: BusMessage): Promise<number> {
    if (!this.store.up) return -1;
    try {
      return await this.store.publish(node, encodeBus(m));
    } catch {
      return -1;
    }
  }

  private onBus(text: string): void {
    const m = parseBus(text);
    if (!m || !this.host || this.closed) return;
    switch (m.t) {
      case 'connect':
        if (m.m.type !== 'connect') return;
        return this.host.brokerFor(this.remoteVisitor(m.from, m.v, m.addr, m.rtt), m.m);
      case 'deliver':
        return this.deliver(m.from, m.v, m.m, m.relay);
      case 'visitor': {
        const rv = this.remote.get(`${m.from}/${m.v}`);
        if (rv && (m.m.type === 'candidates' || m.m.type === 'path_report')) this.host.visitorMessage(rv, m.m);
        return;
      }
      case 'gone': {
        const rv = this.remote.get(`${m.from}/${m.v}`);
        if (!rv) return;
        this.remote.delete(`${m.from}/${m.v}`);
        this.host.visitorGone(rv);
        return;
      }
      case 'moved': {
        const h = this.held.get(m.name);
        if (!h || h.record.reg !== m.reg) return;
        this.held.delete(m.name);
        this.opts.log.info('name_moved', `"${h.name}" is now served through node "${m.from}"`, {
          name: h.name,
          node: m.from,
        });
        this.host.nameLost(h.name, false);
        return;
      }
    }
  }

  /** The owning node's answer for one of our visitors. */
  private deliver(from: string, v: number, m: ControlMessage, relay: string | undefined): void {
    const lv = this.visitors.get(v);
    if (!lv) {
      // The visitor left before the answer came: let the owning node end the session now.
      if (m.type === 'connected') void this.publish(from, { t: 'gone', from: this.opts.nodeId, v });
      return;
    }
    if (m.type === 'connected') {
      if (this.forwarded.size >= MAX_FORWARDED)
        return lv.conn.fs.fail('limit', 'this rendezvous node has too many sessions; try again later', {
          reqId: m.reqId,
        });
      let to: HostPort | null = null;
      try {
        to = relay ? parseHostPort(relay, '127.0.0.1', 'relay') : null;
      } catch {
        to = null;
      }
      this.forwarded.set(m.sid, { node: from, visitor: v, relay: to, relayTaken: false });
      lv.sids.add(m.sid);
    }
    lv.conn.fs.send(m);
  }

  /** The stand-in for visitor `v` of node `node` (one object per visitor, so the broker can compare identities). */
  private remoteVisitor(node: string, v: number, addr: string, rtt: number | null): RemoteVisitor {
    const key = `${node}/${v}`;
    // The punch reaches a remote visitor through Redis: count that hop into its RTT so both sides still probe together.
    const rttMs = (rtt ?? 0) + 2 * (this.rttMs ?? 0);
    let rv = this.remote.get(key);
    if (rv) {
      rv.rttMs = rttMs;
      return rv;
    }
    const send = (m: ControlMessage): boolean => {
      void this.publish(node, {
        t: 'deliver',
        from: this.opts.nodeId,
        v,
        m,
        relay: m.type === 'connected' ? this.advertise : undefined,
      });
      return true;
    };
    rv = {
      node,
      v,
      rttMs,
      fs: {
        send,
        fail: (code, message, extra = {}) => void send({ type: 'error', code, message, ...extra }),
        remote: `${addr} via ${node}`,
      },
    };
    if (this.remote.size < MAX_REMOTE_VISITORS) this.remote.set(key, rv);
    return rv;
  }

  // ---- heartbeat ----

  /** Runs a heartbeat now unless one is running. */
  private beatSoon(): Promise<void> {
    if (!this.beating) this.beating = this.beat().finally(() => (this.beating = null));
    return this.beating;
  }

  /** Node record, name refresh (and re-assertion after an outage), RTT, liveness of the nodes we broker with. */
  private async beat(): Promise<void> {
    if (!this.store.up || this.closed || !this.nodeRecord) return;
    const { log } = this.opts;
    try {
      const prev = await this.store.heartbeat(this.nodeRecord, encodeRecord(this.nodeRecord), this.ttlMs);
      // On the first beat an old record is our own previous run
      // (restarted within the TTL); later, it is another process.
      const first = this.beats++ === 0;
      if (prev && prev.instance !== this.instance && !first) {
        log.error(
          'node_id_conflict',
          `another live process uses --node-id "${this.opts.nodeId}" (advertising ` +
            `${prev.advertise}); give each node its own id`,
          { node: this.opts.nodeId },
        );
      }
      this.rttMs = await this.store.ping();
      const held = [...this.held.values()];
      const lost = await this.store.refresh(
        held.map((h) => ({ name: h.name, record: h.text })),
        this.ttlMs,
      );
      for (const l of lost) this.onLost(l.name, l.holder);
      await this.checkNodes();
    } catch (e) {
      log.warn('registry_error', `cluster heartbeat failed: ${(e as Error).message}`);
    }
  }

  private onLost(name: string, holder: NameRecord | null): void {
    const k = name.toLowerCase();
    const h = this.held.get(k);
    if (!h) return;
    this.held.delete(k);
    const conflict = !holder || holder.key !== h.key;
    if (conflict)
      this.opts.log.error(
        'name_conflict',
        `"${name}" is now held by another key on node "${holder?.node ?? '?'}" (registered ` +
          `while this node could not reach the registry); dropping it here`,
        { name },
      );
    this.host?.nameLost(name, conflict);
  }

  /** Nodes missing from Redis at two checks in a row are dead: end what we hold for them. */
  private async checkNodes(): Promise<void> {
    const ids = new Set<string>();
    for (const rv of this.remote.values()) ids.add(rv.node);
    for (const f of this.forwarded.values()) ids.add(f.node);
    if (!ids.size) return void this.suspect.clear();
    const alive = await this.store.nodes([...ids]);
    for (const id of ids) {
      if (alive.has(id)) {
        this.suspect.delete(id);
        continue;
      }
      if (!this.suspect.has(id)) {
        this.suspect.add(id);
        continue;
      }
      this.suspect.delete(id);
      this.opts.log.warn('node_gone', `node "${id}" stopped its heartbeat: ending the sessions brokered with it`, {
        node: id,
      });
      for (const [key, rv] of this.remote) {
        if (rv.node !== id) continue;
        this.remote.delete(key);
        this.host?.visitorGone(rv);
      }
      for (const [sid, f] of this.forwarded) if (f.node === id) this.forgetForwarded(sid);
    }
  }
}

function unavailable(what: string): { ok: false; code: 'service_unavailable'; message: string } {
  return {
    ok: false,
    code: 'service_unavailable',
    message: `the cluster registry is unreachable: ${what}; try again shortly`,
  };
}
