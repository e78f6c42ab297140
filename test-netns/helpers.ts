// A whole tunnel inside a netns lab, for the punching tests: the rendezvous on
// rdv (two addresses, so peers can classify their NAT), an echo service and
// `peer serve` on host b, `peer visit` on host a, and a checking TCP client
// that runs INSIDE host a's namespace (the visitor's port is bound to a's
// loopback). Everything is torn down with the lab in t.after, also on failure.

import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import {
  distPath,
  eventsOf,
  lineCount,
  outputOf,
  startLab,
  stopProcess,
  waitExit,
  waitForEvent,
  type Lab,
  type Topology,
} from './lab.js';
import { sleep } from '../src/util/backoff.js';
export { sleep };

export const RDV = { host: '203.0.113.10', port: 7000 };
export const RDV_ALT = { host: '203.0.113.11', port: 7001 };
export const SERVICE = 'svc';
export const SECRET = 'netns lab secret: correct horse battery staple';
export const ECHO = distPath('scripts/lab-echo.js');
/** UDP echo / DNS responder and checking clients (`--proto udp` tests). */
export const LAB_UDP = distPath('scripts/lab-udp.js');

export type PathKind = 'relay' | 'direct';
export type LogEvent = Record<string, unknown>;

/** One line printed by scripts/lab-echo.ts client at the end. */
export interface EchoResult {
  ok: boolean;
  bytes: number;
  sentBytes: number;
  gotBytes: number;
  sent: string;
  got: string;
  ms: number;
  error?: string;
}

export interface TunnelOptions {
  prefix?: string;
  /** Debug logs on both peers (punch_start / punch_ok with the plan). Default true. */
  debug?: boolean;
  serveArgs?: string[];
  visitArgs?: string[];
  /** Start everything but `peer visit` (call tl.startVisit() later). */
  noVisit?: boolean;
  /**
   * The rendezvous's address flags. Default: RDV plus `--alt-udp` RDV_ALT (two
   * addresses, RFC 5780). ONE_ADDRESS / README_RDV: one address, as README says.
   */
  rdvArgs?: string[];
  /** A UDP service: the echo is lab-udp's UDP echo, and serve and visit run with `--proto udp`. */
  udp?: boolean;
  /** The peers' --server (default RDV): e.g. a name that a hosts file (lab.setHosts) resolves. */
  server?: string;
}

/** The rendezvous on one address with only --listen and --udp (its default second STUN port, 7001, answers). */
export const ONE_ADDRESS_RDV = ['--listen', `${RDV.host}:${RDV.port}`, '--udp', `${RDV.host}:${RDV.port}`];
/** README's rendezvous.toml: `listen = "0.0.0.0:7000"` (wildcard; UDP 7000 and 7001 on every address). */
export const README_RDV = ['--listen', `0.0.0.0:${RDV.port}`];

export class TunnelLab {
  rdv!: ChildProcess;
  echo!: ChildProcess;
  serve!: ChildProcess;
  visit!: ChildProcess;
  echoPort = 0;
  visitPort = 0;

  constructor(readonly lab: Lab) {}

  private opts: TunnelOptions = {};

  private get logArgs(): string[] {
    return ['--log-format', 'json', '--log-level', this.opts.debug === false ? 'info' : 'debug'];
  }

  private get commonArgs(): string[] {
    // --no-admin: the namespaces share /tmp, so two peers would fight over the default admin socket.
    const server = this.opts.server ?? `${RDV.host}:${RDV.port}`;
    return ['--server', server, '--secret', SECRET, '--no-admin', ...this.logArgs];
  }

  /** Starts the rendezvous, echo service, serve and (unless noVisit) visit; resolves when all are ready. */
  async start(opts: TunnelOptions = {}): Promise<void> {
    const { lab } = this;
    this.opts = opts;
    const logArgs = this.logArgs;
    this.rdv = lab.spawnCli('rdv', 'rendezvous', [
      ...(opts.rdvArgs ?? ['--listen', `${RDV.host}:${RDV.port}`, '--alt-udp', `${RDV_ALT.host}:${RDV_ALT.port}`]),
      ...logArgs,
    ]);
    this.echo = opts.udp
      ? lab.spawnNode('b', LAB_UDP, ['echo', '--bind', '127.0.0.1:0'])
      : lab.spawnNode('b', ECHO, ['server', '--bind', '127.0.0.1:0']);
    const [, echoReady] = await Promise.all([
      waitForEvent(this.rdv, 'ready', 15_000),
      waitForEvent(this.echo, 'ready', 15_000),
    ]);
    this.echoPort = Number(echoReady.port);
    await this.startServe();
    if (!opts.noVisit) await this.startVisit();
  }

  /** Starts `peer serve` on host b (again after stopProcess: new peer processes); resolves once registered. */
  async startServe(): Promise<void> {
    this.serve = this.lab.spawnCli('b', 'peer', [
      'serve',
      '--name',
      SERVICE,
      '--local',
      `127.0.0.1:${this.echoPort}`,
      ...this.commonArgs,
      ...(this.opts.udp ? ['--proto', 'udp'] : []),
      ...(this.opts.serveArgs ?? []),
    ]);
    await waitForEvent(this.serve, 'ready', 20_000);
  }

  /** Starts `peer visit --bind 127.0.0.1:0` on host a; resolves once it is ready (its session is open). */
  async startVisit(): Promise<void> {
    this.visit = this.lab.spawnCli('a', 'peer', [
      'visit',
      SERVICE,
      '--bind',
      '127.0.0.1:0',
      ...this.commonArgs,
      ...(this.opts.udp ? ['--proto', 'udp'] : []),
      ...(this.opts.visitArgs ?? []),
    ]);
    const ready = await waitForEvent(this.visit, 'ready', 20_000);
    this.visitPort = Number(ready.port);
  }

  /** Client args for a transfer of `bytes` through the visitor's port. */
  private clientArgs(bytes: number, o: { delayMs?: number; chunk?: number; timeoutMs?: number }): string[] {
    return [
      'client',
      '--to',
      `127.0.0.1:${this.visitPort}`,
      '--bytes',
      String(bytes),
      '--chunk',
      String(o.chunk ?? 65536),
      '--delay-ms',
      String(o.delayMs ?? 0),
      '--timeout-ms',
      String(o.timeoutMs ?? 60_000),
    ];
  }

  /**
   * Starts an echo transfer inside host a; `result` resolves with the client's
   * final JSON line (it never rejects on a failed transfer: ok is false then).
   */
  startTransfer(
    bytes: number,
    o: { delayMs?: number; chunk?: number; timeoutMs?: number } = {},
  ): { child: ChildProcess; result: Promise<EchoResult> } {
    const timeoutMs = o.timeoutMs ?? 60_000;
    const child = this.lab.spawnNode('a', ECHO, this.clientArgs(bytes, { ...o, timeoutMs }));
    const result = (async () => {
      try {
        return (await waitForEvent(child, 'result', timeoutMs + 10_000)) as unknown as EchoResult;
      } catch (e) {
        await stopProcess(child, 500);
        return { ok: false, bytes, sentBytes: 0, gotBytes: 0, sent: '', got: '', ms: 0, error: (e as Error).message };
      }
    })();
    return { child, result };
  }

  async transfer(bytes: number, o: { delayMs?: number; chunk?: number; timeoutMs?: number } = {}): Promise<EchoResult> {
    const { child, result } = this.startTransfer(bytes, o);
    const r = await result;
    await waitExit(child, 5000);
    return r;
  }

  /** The visitor's `path` events so far (or after line `after`). */
  pathEvents(who: 'visit' | 'serve' = 'visit'): LogEvent[] {
    return eventsOf(this[who], 'path');
  }

  /** relay/direct sequence of the visitor's `path` events. */
  pathSequence(who: 'visit' | 'serve' = 'visit'): PathKind[] {
    return this.pathEvents(who).map((e) => e.path as PathKind);
  }

  lastPath(who: 'visit' | 'serve' = 'visit'): PathKind | undefined {
    return this.pathSequence(who).at(-1);
  }

  /** Resolves with the first `path` event of `kind` (including earlier ones unless `after` is given). */
  waitPath(kind: PathKind, timeoutMs: number, who: 'visit' | 'serve' = 'visit', after?: number): Promise<LogEvent> {
    return waitForEvent(this[who], (o) => o.event === 'path' && o.path === kind, timeoutMs, { after });
  }

  /** Position in the visitor's output, to wait for or count only newer events. */
  mark(who: 'visit' | 'serve' = 'visit'): number {
    return lineCount(this[who]);
  }

  events(event: string, who: 'visit' | 'serve' | 'rdv' = 'visit'): LogEvent[] {
    return eventsOf(this[who], event);
  }

  /** ms from the visitor's first `path` event (the session's start) to its first `direct` one; null if never. */
  timeToDirect(): number | null {
    const ev = this.pathEvents();
    const direct = ev.find((e) => e.path === 'direct');
    if (!direct || !ev.length) return null;
    return Date.parse(String(direct.time)) - Date.parse(String(ev[0].time));
  }

  /** Writes every process's captured output to DIR/<test>-<proc>.log (NETNS_LOG_DIR, for debugging). */
  saveLogs(dir: string, name: string): void {
    mkdirSync(dir, { recursive: true });
    const base = name.replace(/[^A-Za-z0-9]+/g, '_').slice(0, 60);
    for (const k of ['rdv', 'echo', 'serve', 'visit'] as const) {
      const c = this[k];
      if (!c) continue;
      const o = outputOf(c);
      writeFileSync(join(dir, `${base}-${k}.log`), o.stderr + o.stdout);
    }
  }

  /** Output tails of all processes, for assertion messages. */
  dump(n = 3000): string {
    const parts: string[] = [];
    for (const k of ['rdv', 'serve', 'visit'] as const) {
      const c = this[k];
      if (!c) continue;
      const e = outputOf(c).stderr;
      parts.push(`--- ${k} stderr (tail) ---\n${e.length > n ? '…' + e.slice(-n) : e}`);
    }
    return parts.join('\n');
  }
}

/**
 * A lab with the whole tunnel running; null when the machine cannot run
 * namespaces (the test is then marked skipped with the reason).
 */
export async function startTunnelLab(
  t: TestContext,
  topology: Topology,
  opts: TunnelOptions = {},
): Promise<TunnelLab | null> {
  const lab = await startLab(t, topology, opts.prefix);
  if (!lab) return null;
  const tl = new TunnelLab(lab);
  // Registered after the lab's teardown, so it runs first (t.after is LIFO... or not: write either way).
  if (process.env.NETNS_LOG_DIR) t.after(() => tl.saveLogs(process.env.NETNS_LOG_DIR!, t.name));
  try {
    await tl.start(opts);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${tl.dump()}`);
  }
  return tl;
}

/** A unique lab prefix per test (parallel runs and leftovers never collide). */
export function uniquePrefix(tag: string): string {
  const rand = Math.floor(Math.random() * 0xfff)
    .toString(16)
    .padStart(3, '0');
  return `${tag.replace(/[^a-z0-9]/g, '').slice(0, 6)}${rand}`.replace(/^[^a-z]/, 'x');
}

/** The nft table of peerBlockRuleset: `nft delete table inet PEER_BLOCK_TABLE` lifts the block. */
export const PEER_BLOCK_TABLE = 'labpeerblock';

/** nft rules on a router dropping UDP to and from one internet address (the peer's site), before conntrack sees it. */
export function peerBlockRuleset(peer: string): string {
  return `
table inet ${PEER_BLOCK_TABLE} {
  chain ingress { type filter hook prerouting priority -390; policy accept; ip saddr ${peer} meta l4proto udp drop; }
  chain egress { type filter hook postrouting priority 390; policy accept; ip daddr ${peer} meta l4proto udp drop; }
}
`;
}
