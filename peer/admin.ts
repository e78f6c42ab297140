import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CodedError, codeOf, type ErrorCode } from '../src/util/errors.js';

/**
 * The local admin socket: a unix socket that answers `peer status`. One JSON
 * request line in, one JSON reply line out, then the connection closes. The
 * socket is 0600 in a 0700 directory, so only the user running the peer can ask.
 */

/** `$XDG_RUNTIME_DIR/holepunch`, else `/tmp/holepunch-UID`: where peers put their admin sockets. */
export function defaultAdminDir(env: NodeJS.ProcessEnv = process.env): string {
  const runtime = env.XDG_RUNTIME_DIR;
  return runtime
    ? path.join(runtime, 'holepunch')
    : path.join(os.tmpdir(), `holepunch-${process.getuid?.() ?? 'user'}`);
}

/**
 * One socket per process (`peer-PID.sock`), so any number of peers can run
 * side by side and `peer status` finds them all in the directory.
 */
export function defaultAdminPath(env: NodeJS.ProcessEnv = process.env, pid = process.pid): string {
  return path.join(defaultAdminDir(env), `peer-${pid}.sock`);
}

/** Admin sockets of running peers in the default directory (stale files are skipped). */
export async function findAdminSockets(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const dir = defaultAdminDir(env);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const candidates = names.filter((n) => /^peer(-\d+)?\.sock$/.test(n)).map((n) => path.join(dir, n));
  const live = await Promise.all(candidates.map(async (p) => ((await isLive(p)) ? p : null)));
  return live.filter((p): p is string => p !== null).sort();
}

/** One admin request: `cmd` and, for some commands, arguments (`ping`: name, timeoutMs). */
export type AdminRequest = { cmd: string } & Record<string, unknown>;
export type AdminHandler = (request: AdminRequest) => Promise<unknown>;

export class AdminServer {
  private server: net.Server | null = null;

  constructor(
    readonly socketPath: string,
    private readonly handler: AdminHandler,
  ) {}

  /**
   * Listens. A socket file left by a process that died is replaced; one that
   * a live process answers on is an error (two peers cannot share a path).
   */
  async listen(): Promise<void> {
    const dir = path.dirname(this.socketPath);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (fs.existsSync(this.socketPath)) {
      if (await isLive(this.socketPath))
        throw new CodedError(
          'address_in_use',
          `admin socket ${this.socketPath} is in use by another running peer (give this one its own --admin PATH)`,
        );
      fs.unlinkSync(this.socketPath);
    }
    const server = net.createServer((sock) => this.onConnection(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new CodedError('listen_failed', `cannot create admin socket ${this.socketPath}: ${e.code ?? e.message}`),
        ),
      );
      // umask-independent: nobody else may connect between listen() and chmod().
      const old = process.umask(0o177);
      try {
        server.listen(this.socketPath, () => resolve());
      } finally {
        process.umask(old);
      }
    });
    fs.chmodSync(this.socketPath, 0o600);
    server.unref();
    this.server = server;
  }

  close(): void {
    if (!this.server) return;
    this.server.close();
    this.server = null;
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      // already gone
    }
  }

  private onConnection(sock: net.Socket): void {
    let buf = '';
    sock.setTimeout(5000, () => sock.destroy());
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (buf.length > 4096) return void sock.destroy();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.pause();
      void this.answer(buf.slice(0, nl)).then((reply) => sock.end(JSON.stringify(reply) + '\n'));
    });
  }

  private async answer(line: string): Promise<unknown> {
    let req: { cmd?: unknown } & Record<string, unknown>;
    try {
      req = JSON.parse(line) as { cmd?: unknown };
    } catch {
      return { ok: false, error: 'request is not JSON' };
    }
    if (typeof req?.cmd !== 'string') return { ok: false, error: 'request needs a "cmd"' };
    try {
      return { ok: true, ...((await this.handler({ ...req, cmd: req.cmd })) as object) };
    } catch (e) {
      return { ok: false, error: (e as Error).message, code: codeOf(e) };
    }
  }
}

function isLive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    const done = (live: boolean) => {
      s.destroy();
      resolve(live);
    };
    s.setTimeout(1000, () => done(true));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Sends one request to a running peer's admin socket; rejects with a message saying what to check. */
export function adminRequest(socketPath: string, cmd: string, timeoutMs = 5000): Promise<Record<string, unknown>> {
  return adminCall(socketPath, { cmd }, timeoutMs);
}

/** adminRequest with arguments: the whole request object goes as one JSON line. */
export function adminCall(
  socketPath: string,
  request: AdminRequest,
  timeoutMs = 5000,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new CodedError('no_peer', `the peer at ${socketPath} did not answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.once('connect', () => s.write(JSON.stringify(request) + '\n'));
    s.on('data', (d: Buffer) => (buf += d.toString('utf8')));
    s.once('end', () => {
      clearTimeout(timer);
      try {
        const reply = JSON.parse(buf) as Record<string, unknown>;
        if (reply.ok === false)
          reject(
            typeof reply.code === 'string' && reply.code !== 'internal'
              ? new CodedError(reply.code as ErrorCode, String(reply.error))
              : new Error(`the peer refused: ${String(reply.error)}`),
          );
        else resolve(reply);
      } catch {
        reject(new Error(`unreadable answer from ${socketPath}`));
      }
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new CodedError(
          'no_peer',
          e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
            ? `no running peer at ${socketPath} (is \`peer serve\`, \`visit --bind\` or \`run\` ` +
                `running as this user? else pass its --admin PATH)`
            : e.code === 'EACCES'
              ? `permission denied on ${socketPath}: run as the user that runs the peer`
              : `cannot reach ${socketPath}: ${e.code ?? e.message}`,
        ),
      );
    });
  });
}
