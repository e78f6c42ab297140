import crypto from 'node:crypto';
import { formatHostPort } from '../util/addr.js';
import { listenError } from '../util/errors.js';
import http from 'node:http';
import type { Registry } from 'prom-client';
import type { HostPort } from '../util/addr.js';

/** A static page served as-is (the rendezvous dashboard's HTML, CSS and script). */
export interface StaticPage {
  type: string;
  body: string | (() => string);
}

export interface ObserveServerOptions {
  listen: HostPort;
  /** Served at /metrics in the Prometheus text format. */
  registry?: Registry;
  /** Served at /status as JSON; may return a promise of it. */
  status?: () => unknown;
  /** Pages by exact path ("/", "/dashboard.js"): the dashboard. Off loopback they need `token`. */
  pages?: Record<string, StaticPage>;
  /**
   * When set, every request needs it: `Authorization: Bearer TOKEN`, or
   * `?token=TOKEN` once (the answer sets a cookie and sends the browser back
   * to the page without it in the address), or that cookie.
   */
  token?: string;
}

/** The cookie a browser keeps after `?token=`: a hash of the token, never the token itself. */
export const TOKEN_COOKIE = 'hp_metrics';
/** How long a browser keeps that cookie. */
const TOKEN_COOKIE_MAX_AGE_S = 7 * 24 * 3600;
/** Idle keep-alive connections close after this long. */
const KEEP_ALIVE_MS = 5_000;

/** True for 127.0.0.0/8, ::1 and IPv4-mapped loopback: only this host can reach such a listener. */
export function isLoopbackAddress(address: string): boolean {
  const a = address.toLowerCase();
  if (a === '::1' || a === 'localhost') return true;
  const v4 = a.startsWith('::ffff:') ? a.slice(7) : a;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

function cookieValue(token: string): string {
  return crypto.createHash('sha256').update(`holepunch-metrics\0${token}`).digest('hex');
}

function sameSecret(a: string, b: string): boolean {
  const x = crypto.createHash('sha256').update(a).digest();
  const y = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(x, y);
}

/** How a request fares against the listener's access rule (pure; tested in test/dashboard-auth.test.ts). */
export type Access = { ok: true } | { ok: true; setCookie: string; redirect: string } | { ok: false; why: string };

export function checkAccess(
  req: { url?: string; headers: http.IncomingHttpHeaders },
  opts: { token?: string; loopback: boolean; isPage: boolean },
): Access {
  const token = opts.token;
  if (!token) {
    // Compatible with listeners from before the dashboard: /metrics and /status stay as they were.
    if (opts.isPage && !opts.loopback)
      return {
        ok: false,
        why:
          'this listener is not on loopback: the dashboard needs a token' +
          ' (start the rendezvous with --metrics-token)',
      };
    return { ok: true };
  }
  const auth = req.headers.authorization;
  if (typeof auth === 'string' && /^bearer /i.test(auth) && sameSecret(auth.slice(7).trim(), token))
    return { ok: true };
  const cookies = String(req.headers.cookie ?? '')
    .split(';')
    .map((c) => c.trim().split('='))
    .filter(([k]) => k === TOKEN_COOKIE);
  if (cookies.some(([, v]) => v !== undefined && sameSecret(v, cookieValue(token)))) return { ok: true };
  const url = parseRequestUrl(req.url);
  if (!url) return { ok: false, why: 'malformed request URL' };
  const given = url.searchParams.get('token');
  if (given !== null && sameSecret(given, token)) {
    url.searchParams.delete('token');
    return {
      ok: true,
      setCookie:
        `${TOKEN_COOKIE}=${cookieValue(token)}; HttpOnly; SameSite=Strict; Path=/;` +
        ` Max-Age=${TOKEN_COOKIE_MAX_AGE_S}`,
      redirect: url.pathname + url.search,
    };
  }
  return {
    ok: false,
    why: 'a token is required: open /?token=TOKEN once, or send Authorization: Bearer TOKEN (--metrics-token)',
  };
}

/**
 * A read-only HTTP listener for operators: /metrics (Prometheus), /status
 * (JSON) and, on the rendezvous, its dashboard at /. Nothing here changes
 * state. With a token, every path needs it; without one, the dashboard is
 * served on loopback only, and /metrics and /status are as open as the
 * address they listen on (bind them to loopback or a private address).
 */
export async function startObserveServer(
  opts: ObserveServerOptions,
): Promise<{ server: http.Server; address: string; port: number; loopback: boolean; close(): Promise<void> }> {
  let loopback = isLoopbackAddress(opts.listen.host);
  const server = http.createServer((req, res) => {
    void handle(opts, loopback, req, res).catch(() => {
      // Never a reason to bring the process down: the client gets a 500.
      if (!res.headersSent) reply(res, 500, 'text/plain', 'internal error\n');
      else res.destroy();
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(listenError(e, formatHostPort(opts.listen))));
    server.listen({ host: opts.listen.host, port: opts.listen.port }, () => resolve());
  });
  const a = server.address() as { address: string; port: number };
  // What was bound decides (a host name may resolve anywhere).
  loopback = isLoopbackAddress(a.address);
  return {
    server,
    address: a.address,
    port: a.port,
    loopback,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A request's target against a dummy base; null when it is no URL (e.g. `//`, a host-relative form). */
function parseRequestUrl(target: string | undefined): URL | null {
  try {
    return new URL(target ?? '/', 'http://x');
  } catch {
    return null;
  }
}

async function handle(
  opts: ObserveServerOptions,
  loopback: boolean,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'text/plain', 'read-only: GET only\n');
  const page = opts.pages?.[path];
  const access = checkAccess(req, { token: opts.token, loopback, isPage: !!page });
  if (!access.ok) return reply(res, 401, 'text/plain', `unauthorized: ${access.why}\n`);
  if ('redirect' in access) {
    res.writeHead(303, { location: access.redirect, 'set-cookie': access.setCookie, 'cache-control': 'no-store' });
    return void res.end();
  }
  try {
    if (page) return reply(res, 200, page.type, typeof page.body === 'string' ? page.body : page.body(), true);
    if (path === '/metrics' && opts.registry)
      return reply(res, 200, opts.registry.contentType, await opts.registry.metrics());
    if (path === '/status' && opts.status)
      return reply(res, 200, 'application/json', JSON.stringify(await opts.status(), null, 2) + '\n');
    const paths = [opts.pages?.['/'] ? '/' : '', opts.registry ? '/metrics' : '', opts.status ? '/status' : '']
      .filter(Boolean)
      .join(' ');
    return reply(res, 404, 'text/plain', `not found; try ${paths}\n`);
  } catch (e) {
    return reply(res, 500, 'text/plain', `error: ${(e as Error).message}\n`);
  }
}

/** Pages get a strict content policy: their own script and style only, nothing from elsewhere. */
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

function reply(res: http.ServerResponse, code: number, type: string, body: string, page = false): void {
  res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', ...(page ? PAGE_HEADERS : {}) });
  res.end(body);
}
