/**
 * The bench's lab: two cone NATs and a rendezvous on the "internet", with the
 * services every section measures against already running on host b:
 *   - the bench service (tools/svc.ts: echo / sink / source), served as "svc";
 *   - an iperf3 server on port 5201, served as "iperf" (and reached directly by
 *     the wireguard-go and ssh -R references).
 */
import type { ChildProcess } from 'node:child_process';
import {
  CLI,
  Lab,
  distPath,
  eventsOf,
  lineCount,
  outputOf,
  stopProcess,
  waitForEvent,
  type Topology,
} from '../netns-lab.js';
import { sleep } from '../../src/util/backoff.js';

export const RDV = { host: '203.0.113.10', port: 7000 };
export const RDV_ALT = { host: '203.0.113.11', port: 7001 };
export const SECRET = 'bench secret: not for production';
export const IPERF_PORT = 5201;
export const TOPOLOGY: Topology = { a: 'cone', b: 'cone' };

export const TOOL = {
  svc: distPath('scripts/bench/tools/svc.js'),
  rtt: distPath('scripts/bench/tools/rtt.js'),
  streams: distPath('scripts/bench/tools/streams.js'),
  udp: distPath('scripts/bench/tools/udp.js'),
  cold: distPath('scripts/bench/tools/cold.js'),
  multiVisit: distPath('scripts/bench/tools/multi-visit.js'),
  rdvLoad: distPath('scripts/bench/tools/rdv-load.js'),
  relayFloor: distPath('scripts/bench/tools/relay-floor.js'),
} as const;

export type Mode = 'auto' | 'relay' | 'direct';

export interface PeerProcOptions {
  mode?: Mode;
  /** write a V8 CPU profile into this directory when the process exits */
  cpuProfDir?: string;
  extra?: string[];
}

export interface Visit {
  child: ChildProcess;
  port: number;
}

const env = () => ({ ...process.env, PEER_SECRET: SECRET });

function nodeArgs(o: PeerProcOptions): string[] {
  return o.cpuProfDir ? [process.execPath, '--cpu-prof', '--cpu-prof-dir', o.cpuProfDir] : [process.execPath];
}

export class BenchEnv {
  rdv!: ChildProcess;
  svc!: ChildProcess;
  iperfd!: ChildProcess;
  svcPort = 0;
  readonly serves = new Map<string, ChildProcess>();
  /** Why the iperf3 server had to be restarted (its exit and last output), if ever. */
  readonly iperfRestarts: string[] = [];

  private constructor(readonly lab: Lab) {}

  static async up(say: (s: string) => void): Promise<BenchEnv> {
    await Lab.prune();
    const lab = await Lab.up({ topology: TOPOLOGY });
    const e = new BenchEnv(lab);
    try {
      say(`lab ${lab.prefix} up (cone/cone)`);
      e.rdv = e.startRendezvous();
      e.svc = lab.spawnNode('b', TOOL.svc, ['--bind', '127.0.0.1:0']);
      e.iperfd = lab.spawn('b', ['iperf3', '-s', '-p', String(IPERF_PORT)]);
      const [, svcReady] = await Promise.all([
        waitForEvent(e.rdv, 'ready', 20_000),
        waitForEvent(e.svc, 'ready', 20_000),
      ]);
      e.svcPort = Number(svcReady.port);
      await Promise.all([
        e.startServe('svc', `127.0.0.1:${e.svcPort}`),
        e.startServe('iperf', `127.0.0.1:${IPERF_PORT}`),
      ]);
    } catch (err) {
      await lab.down();
      throw err;
    }
    return e;
  }

  /** iperf3 -s has been seen to exit mid-bench; start it again if so. Returns true if it was restarted. */
  async ensureIperf(): Promise<boolean> {
    const d = this.iperfd;
    if (d.exitCode === null && d.signalCode === null) return false;
    const o = outputOf(d);
    this.iperfRestarts.push(`exit ${d.exitCode ?? d.signalCode}: ${(o.stderr + o.stdout).trim().slice(-300)}`);
    this.iperfd = this.lab.spawn('b', ['iperf3', '-s', '-p', String(IPERF_PORT)]);
    await sleep(500);
    return true;
  }

  startRendezvous(o: { cpuProfDir?: string } = {}): ChildProcess {
    return this.lab.spawn('rdv', [
      ...nodeArgs(o),
      CLI.rendezvous,
      '--listen',
      `${RDV.host}:${RDV.port}`,
      '--alt-udp',
      `${RDV_ALT.host}:${RDV_ALT.port}`,
      '--log-format',
      'json',
      '--log-level',
      'info',
    ]);
  }

  /** (Re)starts `peer serve --name name` on b; resolves once registered. */
  async startServe(name: string, local: string, o: PeerProcOptions = {}): Promise<ChildProcess> {
    const old = this.serves.get(name);
    if (old) await stopProcess(old, 3000);
    const child = this.lab.spawn(
      'b',
      [
        ...nodeArgs(o),
        CLI.peer,
        'serve',
        '--name',
        name,
        '--local',
        local,
        '--server',
        `${RDV.host}:${RDV.port}`,
        '--mode',
        o.mode ?? 'auto',
        '--log-format',
        'json',
        ...(o.extra ?? []),
      ],
      { env: env() },
    );
    this.serves.set(name, child);
    await waitForEvent(child, 'ready', 20_000);
    return child;
  }

  /** Starts `peer visit name --bind 127.0.0.1:0` on a; resolves once it is ready. */
  async startVisit(name: string, o: PeerProcOptions = {}): Promise<Visit> {
    const child = this.lab.spawn(
      'a',
      [
        ...nodeArgs(o),
        CLI.peer,
        'visit',
        name,
        '--bind',
        '127.0.0.1:0',
        '--server',
        `${RDV.host}:${RDV.port}`,
        '--mode',
        o.mode ?? 'auto',
        '--log-format',
        'json',
        ...(o.extra ?? []),
      ],
      { env: env() },
    );
    const ready = await waitForEvent(child, 'ready', 30_000);
    return { child, port: Number(ready.port) };
  }

  /** Resolves when the visitor's session is on the direct path (now or later). */
  async waitDirect(v: Visit, timeoutMs = 15_000): Promise<void> {
    const last = eventsOf(v.child, 'path').at(-1);
    if (last?.path === 'direct') return;
    await waitForEvent(v.child, (o) => o.event === 'path' && o.path === 'direct', timeoutMs, {
      after: lineCount(v.child),
    });
  }

  /** Path of the visitor's session right now, from its `path` events. */
  pathOf(v: Visit): string | undefined {
    return eventsOf(v.child, 'path').at(-1)?.path as string | undefined;
  }

  /** Runs a bench tool (tools/*.js) in a node to completion; returns its `result` (or `error`) line. */
  async tool(node: string, script: string, args: string[], timeoutMs: number): Promise<Record<string, unknown>> {
    const r = await this.lab.exec(node, [process.execPath, script, ...args], { timeoutMs, env: env() });
    const lines = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const res = lines.find((l) => l.event === 'result');
    if (!res) {
      const err = lines.find((l) => l.event === 'error');
      throw new Error(
        `${script.split('/').pop()} in ${node} failed (exit ${r.code}): ${String(err?.message ?? '')} ${r.stderr.trim().slice(-800)}`,
      );
    }
    return res;
  }

  /** Starts a bench tool that keeps running; resolves with the child once `event` is printed. */
  async spawnTool(
    node: string,
    script: string,
    args: string[],
    event: string,
    timeoutMs: number,
  ): Promise<{ child: ChildProcess; first: Record<string, unknown> }> {
    const child = this.lab.spawnNode(node, script, args, { env: env() });
    const first = await waitForEvent(child, event, timeoutMs);
    return { child, first };
  }

  async down(): Promise<void> {
    await this.lab.down();
  }
}
