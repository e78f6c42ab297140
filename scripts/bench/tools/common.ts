/** Shared bits of the bench's helper programs (run inside lab namespaces, one JSON line per event on stdout). */
import net from 'node:net';

export function out(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** `--key value` pairs; every flag takes a value. */
export function flags(argv: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    const v = argv[i + 1];
    if (!k.startsWith('--') || v === undefined)
      throw new Error(`expected --flag value pairs, got "${argv.slice(i).join(' ')}"`);
    m.set(k.slice(2), v);
  }
  return m;
}

export function num(m: Map<string, string>, key: string, dflt: number): number {
  const v = m.get(key);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${key}: not a number: ${v}`);
  return n;
}

export function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad HOST:PORT ${s}`);
  return { host: s.slice(0, i), port };
}

export function connect(to: { host: string; port: number }, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: to.host, port: to.port, allowHalfOpen: true });
    s.setNoDelay(true);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${to.host}:${to.port} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Runs main, prints {"event":"error"} and exits 1 on failure; a hard deadline keeps a stuck tool from living on. */
export function runTool(main: () => Promise<void>, deadlineMs = 300_000): void {
  const t = setTimeout(() => {
    out({ event: 'error', message: `deadline of ${deadlineMs} ms passed` });
    process.exit(1);
  }, deadlineMs);
  t.unref();
  main().then(
    () => {
      if (!process.exitCode) process.exitCode = 0;
    },
    (e: unknown) => {
      out({ event: 'error', message: e instanceof Error ? e.message : String(e) });
      process.exit(1);
    },
  );
}

export const MODE = { echo: 0x65 /* e */, sink: 0x73 /* s */, source: 0x67 /* g */ } as const;
