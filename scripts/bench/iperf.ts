/** iperf3 clients inside lab hosts (the one throughput meter for ours and the references). */
import type { Lab } from '../netns-lab.js';
import { sleep } from '../../src/util/backoff.js';

export interface IperfRun {
  /** receiver-side goodput, Mbit/s */
  mbps: number;
  retransmits: number | null;
  /** The sending side's mean TCP round-trip time (iperf3's mean_rtt), ms; null when iperf3 does not say. */
  rttMs?: number | null;
  /** times the iperf3 server said it was still busy with the previous test */
  busyRetries?: number;
}

/**
 * One TCP stream for `seconds` (the first second omitted: slow start and
 * window growth are the same warm-up for every contender); reverse = server sends.
 */
export async function iperf(
  lab: Lab,
  node: string,
  host: string,
  port: number,
  o: { reverse?: boolean; seconds: number; ensureServer?: () => Promise<boolean> },
): Promise<IperfRun> {
  // The server serves one test at a time and only notices the previous one has
  // ended when its connections close; through a tunnel that close can lag.
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await iperfOnce(lab, node, host, port, o);
      return { ...r, busyRetries: attempt };
    } catch (e) {
      const kind = e instanceof IperfError ? e.kind : 'other';
      // A refused or reset connection: the server may have exited (start it again) or
      // still be tearing down the previous test; retry a few times, for ours and references alike.
      if (kind === 'refused' && attempt < 3) {
        await o.ensureServer?.();
        await sleep(500);
        continue;
      }
      if (kind !== 'busy' || attempt >= 40) throw e;
      await sleep(250);
    }
  }
}

async function iperfOnce(
  lab: Lab,
  node: string,
  host: string,
  port: number,
  o: { reverse?: boolean; seconds: number },
): Promise<IperfRun> {
  const args = [
    'iperf3',
    '-c',
    host,
    '-p',
    String(port),
    '-t',
    String(o.seconds),
    '-O',
    '1',
    '-J',
    '--connect-timeout',
    '5000',
  ];
  if (o.reverse) args.push('-R');
  const r = await lab.exec(node, args, { timeoutMs: (o.seconds + 25) * 1000 });
  let j: {
    error?: string;
    end?: {
      sum_received?: { bits_per_second?: number };
      sum_sent?: { retransmits?: number };
      streams?: { sender?: { mean_rtt?: number } }[];
    };
  };
  try {
    j = JSON.parse(r.stdout) as typeof j;
  } catch {
    throw new IperfError(
      `iperf3 to ${host}:${port} from ${node}: exit ${r.code}, no JSON: ${(r.stderr || r.stdout).trim().slice(-300)}`,
      iperfErrorKind(r.stderr || r.stdout),
    );
  }
  if (j.error) throw new IperfError(`iperf3 to ${host}:${port} from ${node}: ${j.error}`, iperfErrorKind(j.error));
  const bps = j.end?.sum_received?.bits_per_second;
  if (!bps) throw new Error(`iperf3 to ${host}:${port}: no sum_received in the result`);
  const rttUs = j.end?.streams?.[0]?.sender?.mean_rtt;
  return {
    mbps: bps / 1e6,
    retransmits: j.end?.sum_sent?.retransmits ?? null,
    rttMs: typeof rttUs === 'number' ? rttUs / 1000 : null,
  };
}

/** An iperf3 failure; `kind` is read once from iperf3's own error text (the only thing it gives us). */
class IperfError extends Error {
  constructor(
    message: string,
    readonly kind: 'refused' | 'busy' | 'other' = 'other',
  ) {
    super(message);
  }
}

function iperfErrorKind(text: string): IperfError['kind'] {
  if (/refused|reset by peer/.test(text)) return 'refused';
  return /busy/.test(text) ? 'busy' : 'other';
}
