import { EventEmitter } from 'node:events';
import { Redis } from 'ioredis';
import { CLAIM, HEARTBEAT, REFRESH, RELEASE } from './scripts.js';
import {
  busChannel,
  nameKey,
  nodeKey,
  parseNameRecord,
  parseNodeRecord,
  type NameRecord,
  type NodeRecord,
} from './records.js';

export interface StoreOptions {
  url: string;
  /** Fail a command after this long rather than stall a control connection behind a hung Redis. */
  commandTimeoutMs?: number;
}

interface Scripted {
  hpClaim(key: string, record: string, pubKey: string, ttl: number): Promise<[number, string | null | undefined]>;
  hpRefresh(...args: (string | number)[]): Promise<(number | string)[]>;
  hpRelease(key: string, record: string): Promise<number>;
  hpHeartbeat(key: string, record: string, ttl: number): Promise<string | null>;
}

export type ClaimReply = { ok: true; previous: NameRecord | null } | { ok: false; holder: NameRecord | null };

/** How many names one refresh script touches, so a node with many names never blocks Redis for long. */
const REFRESH_CHUNK = 500;

/**
 * The Redis edge: two connections (commands; pub/sub) and the registry
 * operations as atomic scripts. Commands fail fast while Redis is out of
 * reach (no offline queue: a registration must not be applied minutes later);
 * ioredis keeps reconnecting. Emits 'up' and 'down' (reason) on transitions,
 * and 'message' (raw string) for our bus channel.
 */
export class RedisStore extends EventEmitter {
  private readonly cmd: Redis & Scripted;
  private readonly sub: Redis;
  private isUp = false;
  private closed = false;
  private channel: string | null = null;

  constructor(readonly opts: StoreOptions) {
    super();
    const common = {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 3000,
      commandTimeout: opts.commandTimeoutMs ?? 3000,
      // Retry forever, at most every 2 s: Redis coming back is the normal end of an outage.
      retryStrategy: (times: number) => Math.min(100 * times, 2000),
      autoResubscribe: false,
    };
    this.cmd = new Redis(opts.url, common) as Redis & Scripted;
    this.sub = new Redis(opts.url, common);
    this.cmd.defineCommand('hpClaim', { numberOfKeys: 1, lua: CLAIM });
    this.cmd.defineCommand('hpRelease', { numberOfKeys: 1, lua: RELEASE });
    this.cmd.defineCommand('hpHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT });
    this.cmd.defineCommand('hpRefresh', { lua: REFRESH });
    this.cmd.on('ready', () => this.setUp(true));
    this.cmd.on('close', () => this.setUp(false, 'connection closed'));
    this.cmd.on('error', (e: Error) => {
      this.lastError = e.message;
    });
    this.sub.on('error', () => {
      /* reported through the command connection */
    });
    this.sub.on('ready', () => {
      if (this.channel) this.sub.subscribe(this.channel).catch(() => undefined);
    });
    this.sub.on('message', (_ch: string, text: string) => this.emit('message', text));
  }

  lastError = '';

  get up(): boolean {
    return this.isUp && !this.closed;
  }

  /** Connects both links; resolves once up or after `waitMs` (it keeps retrying in the background either way). */
  async start(channelNode: string, waitMs: number): Promise<boolean> {
    this.channel = busChannel(channelNode);
    this.cmd.connect().catch(() => undefined);
    this.sub.connect().catch(() => undefined);
    if (this.up) return true;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.off('up', onUp);
        resolve(false);
      }, waitMs);
      const onUp = () => {
        clearTimeout(t);
        resolve(true);
      };
      this.once('up', onUp);
    });
  }

  close(): Promise<void> {
    this.closed = true;
    this.cmd.disconnect();
    this.sub.disconnect();
    return Promise.resolve();
  }

  async claim(name: string, record: string, pubKey: string, ttlMs: number): Promise<ClaimReply> {
    const [ok, other] = await this.cmd.hpClaim(nameKey(name), record, pubKey, ttlMs);
    return ok === 1 ? { ok: true, previous: parseNameRecord(other) } : { ok: false, holder: parseNameRecord(other) };
  }

  /** Compare-and-refresh; returns the names now held by someone else, with what holds them. */
  async refresh(
    entries: { name: string; record: string }[],
    ttlMs: number,
  ): Promise<{ name: string; holder: NameRecord | null }[]> {
    const lost: { name: string; holder: NameRecord | null }[] = [];
    for (let i = 0; i < entries.length; i += REFRESH_CHUNK) {
      const chunk = entries.slice(i, i + REFRESH_CHUNK);
      const reply = await this.cmd.hpRefresh(
        chunk.length,
        ...chunk.map((e) => nameKey(e.name)),
        ttlMs,
        ...chunk.map((e) => e.record),
      );
      for (let j = 0; j + 1 < reply.length; j += 2) {
        const e = chunk[Number(reply[j]) - 1];
        if (e) lost.push({ name: e.name, holder: parseNameRecord(String(reply[j + 1])) });
      }
    }
    return lost;
  }

  async release(name: string, record: string): Promise<boolean> {
    return (await this.cmd.hpRelease(nameKey(name), record)) === 1;
  }

  async lookup(name: string): Promise<NameRecord | null> {
    return parseNameRecord(await this.cmd.get(nameKey(name)));
  }

  /** Writes our heartbeat; returns the record it replaced (null if none). */
  async heartbeat(record: NodeRecord, recordText: string, ttlMs: number): Promise<NodeRecord | null> {
    return parseNodeRecord(await this.cmd.hpHeartbeat(nodeKey(record.node), recordText, ttlMs));
  }

  async nodes(ids: string[]): Promise<Map<string, NodeRecord>> {
    const out = new Map<string, NodeRecord>();
    if (!ids.length) return out;
    const texts = await this.cmd.mget(...ids.map(nodeKey));
    ids.forEach((id, i) => {
      const r = parseNodeRecord(texts[i]);
      if (r) out.set(id, r);
    });
    return out;
  }

  /** Every node with a live heartbeat record, for the dashboard: SCAN in bounded steps, at most `limit`. */
  async allNodes(limit = 1000): Promise<NodeRecord[]> {
    const out: NodeRecord[] = [];
    let cursor = '0';
    for (let i = 0; i < 100 && out.length < limit; i++) {
      const [next, keys] = await this.cmd.scan(cursor, 'MATCH', nodeKey('*'), 'COUNT', 200);
      if (keys.length)
        for (const text of await this.cmd.mget(...keys)) {
          const r = parseNodeRecord(text);
          if (r && out.length < limit) out.push(r);
        }
      cursor = next;
      if (cursor === '0') break;
    }
    return out;
  }

  /** Round trip to Redis in ms. */
  async ping(): Promise<number> {
    const t0 = performance.now();
    await this.cmd.ping();
    return performance.now() - t0;
  }

  /** Publishes on a node's bus channel; resolves with how many subscribers got it (0: that node is not listening). */
  async publish(node: string, text: string): Promise<number> {
    return this.cmd.publish(busChannel(node), text);
  }

  private setUp(up: boolean, reason = ''): void {
    if (this.closed || up === this.isUp) return;
    this.isUp = up;
    if (up) this.emit('up');
    else this.emit('down', this.lastError || reason);
  }
}
