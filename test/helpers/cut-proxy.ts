/**
 * A TCP proxy run by a test, a network element between a peer and a
 * rendezvous or relay (not a mock): it forwards every connection and can cut
 * one with a RST, as a vanished address ends it.
 */
import net from 'node:net';

/** Forwards every connection to `target`; remembers them so a test can cut one. */
export class CutProxy {
  readonly conns: { down: net.Socket; up: net.Socket; bytes: number }[] = [];
  private server!: net.Server;
  port = 0;

  constructor(private readonly target: number) {}

  async start(): Promise<this> {
    this.server = net.createServer((down) => {
      const up = net.connect({ port: this.target, host: '127.0.0.1' });
      const c = { down, up, bytes: 0 };
      this.conns.push(c);
      for (const s of [down, up]) s.on('error', () => {});
      down.on('data', (d: Buffer) => {
        c.bytes += d.length;
      });
      up.on('data', (d: Buffer) => {
        c.bytes += d.length;
      });
      down.pipe(up);
      up.pipe(down);
      down.on('close', () => up.destroy());
      up.on('close', () => down.destroy());
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  /** New connections are refused from now on (the listening socket closes). */
  stopAccepting(): void {
    this.server.close();
  }

  /** Cuts a connection with a RST both ways, as a vanished address would end it. */
  cut(c: { down: net.Socket; up: net.Socket }): void {
    c.down.resetAndDestroy();
    c.up.resetAndDestroy();
  }

  close(): void {
    for (const c of this.conns) {
      c.down.destroy();
      c.up.destroy();
    }
    if (this.server.listening) this.server.close();
  }
}
