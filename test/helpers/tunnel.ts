/**
 * Loopback harness for end-to-end tests: runs the real built CLIs as child
 * processes on 127.0.0.1 and gives tests small, bounded helpers around them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import { CLI, captureOutput, stopProcess, waitForEvent, waitExit, outputOf } from '../../scripts/proc.js';

export { waitForEvent, waitExit, outputOf, stopProcess };

export class Procs {
  private children: ChildProcess[] = [];
  private servers: net.Server[] = [];

  spawnCli(which: keyof typeof CLI, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const child = spawn(process.execPath, [CLI[which], ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PEER_SERVER: '', PEER_SECRET: '', PEER_TOKEN: '', ...env },
      detached: true,
    });
    captureOutput(child);
    this.children.push(child);
    return child;
  }

  async rendezvous(extra: string[] = []): Promise<{ child: ChildProcess; port: number; addr: string }> {
    const child = this.spawnCli('rendezvous', ['--listen', '127.0.0.1:0', '--log-format', 'json', ...extra]);
    const ready = await waitForEvent(child, 'ready', 10_000);
    const port = Number(ready.port);
    return { child, port, addr: `127.0.0.1:${port}` };
  }

  async serve(
    name: string,
    local: string,
    server: string,
    secret: string,
    extra: string[] = [],
  ): Promise<ChildProcess> {
    const child = this.spawnCli('peer', [
      'serve',
      '--name',
      name,
      '--local',
      local,
      '--server',
      server,
      '--secret',
      secret,
      '--log-format',
      'json',
      ...extra,
    ]);
    await waitForEvent(child, 'ready', 15_000);
    return child;
  }

  /** Starts `visit --bind 127.0.0.1:0`; resolves with the bound port once ready. */
  async visit(
    name: string,
    server: string,
    secret: string,
    extra: string[] = [],
  ): Promise<{ child: ChildProcess; port: number }> {
    const child = this.spawnCli('peer', [
      'visit',
      name,
      '--bind',
      '127.0.0.1:0',
      '--server',
      server,
      '--secret',
      secret,
      '--log-format',
      'json',
      ...extra,
    ]);
    const ready = await waitForEvent(child, 'ready', 15_000);
    return { child, port: Number(ready.port) };
  }

  /** A TCP echo service that supports half-close: it ends its side after echoing everything. */
  async echoServer(): Promise<{ port: number; server: net.Server; connections: () => number }> {
    let count = 0;
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      count++;
      s.on('error', () => {});
      s.pipe(s);
    });
    this.servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return { port: (server.address() as net.AddressInfo).port, server, connections: () => count };
  }

  track(server: net.Server): void {
    this.servers.push(server);
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.children.map((c) => stopProcess(c, 2000)));
    for (const s of this.servers) s.close();
    this.children = [];
    this.servers = [];
  }
}

/**
 * Sends `size` random bytes to host:port, half-closes, and collects what comes
 * back until the far end closes. Resolves with hashes of both; rejects on timeout.
 */
export function echoTransfer(
  port: number,
  size: number,
  timeoutMs = 60_000,
): Promise<{ sent: string; got: string; gotBytes: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const sentHash = crypto.createHash('sha256');
    const gotHash = crypto.createHash('sha256');
    let gotBytes = 0;
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`transfer of ${size} bytes timed out after ${timeoutMs} ms with ${gotBytes} bytes back`));
    }, timeoutMs);
    s.on('data', (d: Buffer) => {
      gotHash.update(d);
      gotBytes += d.length;
    });
    s.on('end', () => {
      clearTimeout(timer);
      s.end();
      resolve({ sent: sentHash.digest('hex'), got: gotHash.digest('hex'), gotBytes, ms: Date.now() - t0 });
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    let left = size;
    const chunk = 64 * 1024;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(chunk, left);
        const b = crypto.randomBytes(n);
        sentHash.update(b);
        left -= n;
        if (!s.write(b)) return void s.once('drain', pump);
      }
      s.end();
    };
    s.once('connect', pump);
  });
}

/** Connects and resolves with the first error code or 'end'/'close' seen, for refused/reset checks. */
export function connectOutcome(port: number, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      s.destroy();
      resolve('timeout');
    }, timeoutMs);
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(e.code ?? 'error');
    });
    s.on('end', () => {
      clearTimeout(timer);
      s.destroy();
      resolve('end');
    });
    s.resume();
  });
}

export const SECRET = 'correct horse battery staple';
