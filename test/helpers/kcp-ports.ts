/**
 * One driver interface over our KCP and the C reference (ikcp.c through the
 * node-kcp addon), for the interop tests and the KCP benchmark
 * (scripts/bench-kcp.ts): both drive either implementation the same way.
 */
import { createRequire } from 'node:module';
import { Kcp } from '../../src/kcp/index.js';
import { Slab } from '../../src/kcp/slab.js';

/** What a driver needs from either implementation. */
export interface KcpPort {
  send(b: Buffer): number;
  recv(): Buffer | null;
  input(b: Buffer): number;
  update(now: number): void;
  flush(): void;
  waitSnd(): number;
  /** ms until update() is due */
  delay(now: number): number;
  close(): void;
}

export interface KcpSettings {
  stream: boolean;
  nodelay: readonly [number, number, number, number];
  wnd: number;
  mtu: number;
}

interface CKcp {
  output(fn: (data: Buffer, size: number, ctx: unknown) => void): void;
  input(b: Buffer): number | undefined;
  send(b: Buffer): number | undefined;
  recv(): Buffer | undefined;
  update(now: number): void;
  check(now: number): number; // ms until the next update is due
  flush(): void;
  nodelay(nodelay: number, interval: number, resend: number, nc: number): number;
  wndsize(snd: number, rcv: number): number;
  setmtu(mtu: number): number;
  waitsnd(): number;
  stream(on: number): number;
  release(): void;
}

// node-kcp's package "main" prints its include dir; load the addon itself.
const require = createRequire(import.meta.url);
let addon: { KCP: new (conv: number, context: object) => CKcp } | null = null;

/** Our KCP. `out` gets its own copy of each datagram (Kcp reuses its output buffer; a socket send needs it longer). */
export function oursPort(conv: number, out: (b: Buffer) => void, s: KcpSettings): KcpPort {
  const slab = new Slab();
  const k = new Kcp(conv, (b) => out(slab.copy(b)), { stream: s.stream });
  k.setNodelay(...s.nodelay);
  k.setWndSize(s.wnd, s.wnd);
  k.setMtu(s.mtu);
  return {
    send: (b) => k.send(b),
    recv: () => k.recv(),
    input: (b) => k.input(b),
    update: (now) => k.update(now),
    flush: () => k.flush(),
    waitSnd: () => k.waitSnd(),
    delay: (now) => k.check(now) - now,
    close: () => {},
  };
}

/** ikcp.c through node-kcp, which already hands a fresh copy to every output call. */
export function cPort(conv: number, out: (b: Buffer) => void, s: KcpSettings): KcpPort {
  addon ??= require('node-kcp/build/Release/kcp.node') as { KCP: new (conv: number, context: object) => CKcp };
  const k = new addon.KCP(conv, {});
  k.output((data, size) => out(size === data.length ? data : data.subarray(0, size)));
  k.nodelay(...s.nodelay);
  k.wndsize(s.wnd, s.wnd);
  k.setmtu(s.mtu);
  if (s.stream) k.stream(1);
  return {
    send: (b) => k.send(b) ?? 0,
    recv: () => k.recv() ?? null,
    input: (b) => k.input(b) ?? 0,
    update: (now) => k.update(Math.floor(now)),
    flush: () => k.flush(),
    waitSnd: () => k.waitsnd(),
    delay: (now) => k.check(Math.floor(now)),
    close: () => k.release(),
  };
}
