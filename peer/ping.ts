import { sleep } from '../src/util/backoff.js';
import { codeOf, CodedError, type ErrorCode } from '../src/util/errors.js';
import type { PingReply } from './app.js';

/** `peer ping` waits this long between probes (like ping(8) and `tailscale ping`). */
export const PING_INTERVAL_MS = 1000;
/** Probes sent when --count is not given. */
export const DEFAULT_PING_COUNT = 10;
/** Upper bound on --count: every loop is bounded. */
export const MAX_PING_COUNT = 100_000;

/** One probe: a pong, or why there was none. */
export type PingLine =
  | ({ seq: number; ok: true; via: 'admin' | 'standalone' } & PingReply)
  | { seq: number; ok: false; via: 'admin' | 'standalone'; name: string; error: string; code: string };

export interface PingRun {
  name: string;
  count: number;
  untilDirect: boolean;
  timeoutMs: number;
  intervalMs?: number;
  via: 'admin' | 'standalone';
  probe: (timeoutMs: number) => Promise<PingReply>;
  print: (line: PingLine) => void;
}

/**
 * Sends up to `count` probes, one per interval, printing each. With
 * untilDirect it stops at the first pong on the direct path. Resolves with
 * what the exit status rests on.
 */
export async function runPings(r: PingRun): Promise<{ pongs: number; direct: boolean; lines: PingLine[] }> {
  const lines: PingLine[] = [];
  let pongs = 0;
  let direct = false;
  for (let seq = 1; seq <= Math.min(r.count, MAX_PING_COUNT); seq++) {
    if (seq > 1) await sleep(r.intervalMs ?? PING_INTERVAL_MS);
    let line: PingLine;
    try {
      const reply = await r.probe(r.timeoutMs);
      line = { seq, ok: true, via: r.via, ...reply };
      pongs++;
      if (reply.path === 'direct') direct = true;
    } catch (e) {
      line = { seq, ok: false, via: r.via, name: r.name, error: (e as Error).message, code: codeOf(e) };
    }
    lines.push(line);
    r.print(line);
    if (r.untilDirect && direct) break;
    // Only a lost probe is worth another try; a closed session or a peer without NAME will not change.
    if (!line.ok && line.code !== 'timeout') break;
  }
  return { pongs, direct, lines };
}

/** `pong from ssh-home via direct 192.0.2.7:41641 in 0.84 ms`, like `tailscale ping`. */
export function formatPingLine(l: PingLine): string {
  if (!l.ok) return `no pong from ${l.name}: ${l.error}`;
  return `pong from ${l.name} via ${l.path} ${l.remote} in ${l.rttMs} ms`;
}

/** The verdict after the last probe: null when the run succeeded. */
export function pingVerdict(
  r: { pongs: number; direct: boolean; lines: PingLine[] },
  opts: { name: string; count: number; untilDirect: boolean },
): CodedError | null {
  const last = r.lines[r.lines.length - 1];
  // Stopped early on an error that another probe would not fix: that error is the verdict.
  if (!r.pongs && last && !last.ok && last.code !== 'timeout')
    return new CodedError(last.code as ErrorCode, last.error);
  if (!r.pongs) return new CodedError('timeout', `no answer from "${opts.name}" in ${r.lines.length} probe(s)`);
  if (opts.untilDirect && !r.direct)
    return new CodedError(
      'no_direct_path',
      `"${opts.name}" answered, but not on a direct path, within ${r.lines.length} probe(s)` +
        ' (see `peer status` and docs/TROUBLESHOOTING.md)',
    );
  return null;
}
