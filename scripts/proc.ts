/**
 * Child processes of tests, benchmarks and the demo: run a command bounded in
 * time, collect a child's output lines, wait for its JSON log events, stop its
 * process group; and where the project's own built programs are. Used on
 * loopback and (through scripts/netns-lab.ts) inside network namespaces.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// ---------------------------------------------------------------------------
// Running commands

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** kill the command after this long (default 30 s); code is then 124 */
  timeoutMs?: number;
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  /** throw on a non-zero exit code (default false) */
  check?: boolean;
}

/** Run a command to completion, bounded in time; never rejects unless opts.check. */
export function run(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolveP, rejectP) => {
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, detached: true });
    } catch (e) {
      resolveP({ code: 127, stdout: '', stderr: String(e) });
      return;
    }
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.stdin!.on('error', () => {
      /* the command may exit without reading its input */
    });
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      stderr += String(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res = { code: timedOut ? 124 : (code ?? (signal ? 128 : 1)), stdout, stderr };
      if (opts.check && res.code !== 0) {
        rejectP(new Error(`${cmd} ${args.join(' ')} -> exit ${res.code}: ${stderr.trim() || stdout.trim()}`));
      } else resolveP(res);
    });
    child.stdin!.end(opts.input ?? '');
  });
}

export function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* gone */
    }
  }
}

// ---------------------------------------------------------------------------
// JSON log lines of child processes

interface LineLog {
  lines: { stream: 'stdout' | 'stderr'; text: string }[];
  stdout: string;
  stderr: string;
  waiters: Set<() => void>;
}

const logs = new WeakMap<ChildProcess, LineLog>();
const MAX_KEPT_LINES = 20_000;

/**
 * Start collecting a child's output lines (done automatically by lab.spawn).
 * Idempotent; call it right after spawning so no early line is missed.
 */
export function captureOutput(child: ChildProcess): void {
  if (logs.has(child)) return;
  const log: LineLog = { lines: [], stdout: '', stderr: '', waiters: new Set() };
  logs.set(child, log);
  const wake = () => {
    for (const w of [...log.waiters]) w();
  };
  for (const stream of ['stdout', 'stderr'] as const) {
    const s = child[stream];
    if (!s) continue;
    let partial = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      if (log[stream].length < 4_000_000) log[stream] += d;
      partial += d;
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      for (const text of parts) {
        if (log.lines.length < MAX_KEPT_LINES) log.lines.push({ stream, text });
      }
      wake();
    });
    s.on('end', () => {
      if (partial) log.lines.push({ stream, text: partial });
      partial = '';
      wake();
    });
  }
  child.on('exit', wake);
}

/** Collected output of a child started with lab.spawn (or passed to captureOutput). */
export function outputOf(child: ChildProcess): { stdout: string; stderr: string } {
  const log = logs.get(child);
  return { stdout: log?.stdout ?? '', stderr: log?.stderr ?? '' };
}

function parseJsonLine(text: string): Record<string, unknown> | null {
  const t = text.trim();
  if (!t.startsWith('{')) return null;
  try {
    const v: unknown = JSON.parse(t);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export type EventMatch = string | ((obj: Record<string, unknown>) => boolean);

/** Every JSON log line (stdout or stderr) seen so far that matches. */
export function eventsOf(child: ChildProcess, match: EventMatch): Record<string, unknown>[] {
  const log = logs.get(child);
  if (!log) return [];
  const pred = typeof match === 'string' ? (o: Record<string, unknown>) => o.event === match : match;
  const out: Record<string, unknown>[] = [];
  for (const l of log.lines) {
    const o = parseJsonLine(l.text);
    if (o && pred(o)) out.push(o);
  }
  return out;
}

/**
 * Resolve with the first JSON log line (on stdout or stderr) whose `event` field
 * equals `match` (or for which the predicate is true), including lines printed
 * before the call. Rejects on timeout or when the process exits first, with the
 * tail of its stderr in the message.
 */
export function waitForEvent(
  child: ChildProcess,
  match: EventMatch,
  timeoutMs = 10_000,
  opts: { after?: number } = {},
): Promise<Record<string, unknown>> {
  captureOutput(child);
  const log = logs.get(child)!;
  const pred = typeof match === 'string' ? (o: Record<string, unknown>) => o.event === match : match;
  const label = typeof match === 'string' ? `event "${match}"` : 'matching event';
  let scanned = opts.after ?? 0;
  return new Promise((resolveP, rejectP) => {
    const finish = (err: Error | null, v?: Record<string, unknown>) => {
      clearTimeout(timer);
      log.waiters.delete(check);
      if (err) rejectP(err);
      else resolveP(v!);
    };
    const check = () => {
      for (; scanned < log.lines.length; scanned++) {
        const o = parseJsonLine(log.lines[scanned].text);
        if (o && pred(o)) {
          scanned++;
          finish(null, o);
          return;
        }
      }
      if (child.exitCode !== null || child.signalCode !== null) {
        finish(
          new Error(
            `process ${child.pid} exited (${child.exitCode ?? child.signalCode}) before ${label}; ` +
              `stderr tail:\n${tail(log.stderr)}`,
          ),
        );
      }
    };
    const timer = setTimeout(() => {
      finish(
        new Error(
          `timeout after ${timeoutMs} ms waiting for ${label} from pid ${child.pid}; stderr ` +
            `tail:\n${tail(log.stderr)}\nstdout tail:\n${tail(log.stdout)}`,
        ),
      );
    }, timeoutMs);
    log.waiters.add(check);
    check();
  });
}

/** Number of output lines seen so far: pass as `after` to wait for a *new* event. */
export function lineCount(child: ChildProcess): number {
  return logs.get(child)?.lines.length ?? 0;
}

function tail(s: string, n = 2000): string {
  return s.length > n ? '…' + s.slice(-n) : s;
}

/** Wait for a child to exit, bounded; resolves with its code (or null on timeout). */
export function waitExit(child: ChildProcess, timeoutMs = 10_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolveP) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolveP(null);
    }, timeoutMs);
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      resolveP(code);
    };
    child.once('exit', onExit);
  });
}

/** SIGTERM the child's process group, SIGKILL after graceMs; resolves when it is gone. */
export async function stopProcess(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  killGroup(child, 'SIGTERM');
  if ((await waitExit(child, graceMs)) === null && child.exitCode === null && child.signalCode === null) {
    killGroup(child, 'SIGKILL');
    await waitExit(child, 5000);
  }
}

// ---------------------------------------------------------------------------
// Paths of the project's own programs (relative to this module, not hard-coded)

const HERE = dirname(fileURLToPath(import.meta.url));
/** dist/ (this file is dist/scripts/proc.js once built) */
export const DIST_DIR = resolve(HERE, '..');

/** Absolute path of a built program, e.g. distPath('peer/cli.js'). */
export function distPath(rel: string): string {
  return join(DIST_DIR, rel);
}

/** The project's CLIs, by name. */
export const CLI = {
  peer: distPath('peer/cli.js'),
  rendezvous: distPath('rendezvous/cli.js'),
  relay: distPath('relay/cli.js'),
  probe: distPath('scripts/lab-probe.js'),
} as const;
