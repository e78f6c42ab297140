import { listenError } from '../util/errors.js';
import http from 'node:http';
import type { Registry } from 'prom-client';
import type { HostPort } from '../util/addr.js';

export interface ObserveServerOptions {
  listen: HostPort;
  /** Served at /metrics in the Prometheus text format. */
  registry?: Registry;
  /** Served at /status as JSON. */
  status?: () => unknown | Promise<unknown>;
}

/**
 * A read-only HTTP listener for operators: /metrics (Prometheus) and /status
 * (JSON). Nothing here changes state, so it needs no authentication beyond
 * where it listens; bind it to loopback or a private address.
 */
export async function startObserveServer(
  opts: ObserveServerOptions,
): Promise<{ server: http.Server; address: string; port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => void handle(opts, req, res));
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(listenError(e, `${opts.listen.host}:${opts.listen.port}`)),
    );
    server.listen({ host: opts.listen.host, port: opts.listen.port }, () => resolve());
  });
  const a = server.address() as { address: string; port: number };
  return {
    server,
    address: a.address,
    port: a.port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function handle(opts: ObserveServerOptions, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'text/plain', 'read-only: GET only\n');
  try {
    if (path === '/metrics' && opts.registry)
      return reply(res, 200, opts.registry.contentType, await opts.registry.metrics());
    if (path === '/status' && opts.status)
      return reply(res, 200, 'application/json', JSON.stringify(await opts.status(), null, 2) + '\n');
    const paths = [opts.registry ? '/metrics' : '', opts.status ? '/status' : ''].filter(Boolean).join(' ');
    return reply(res, 404, 'text/plain', `not found; try ${paths}\n`);
  } catch (e) {
    return reply(res, 500, 'text/plain', `error: ${(e as Error).message}\n`);
  }
}

function reply(res: http.ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}
