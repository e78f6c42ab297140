#!/usr/bin/env node
// The bench's service behind `peer serve`. The first byte of a connection picks
// what it does, so one exposed name serves every measurement of one session:
//   'e' echo the rest back (latency, streams, connect time)
//   's' sink: read and discard (upload load)
//   'g' source: write as fast as the reader takes it until the peer closes (download load)
//   svc --bind 127.0.0.1:0  -> {"event":"ready","port":N}
import net from 'node:net';
import { flags, hostPort, MODE, out, runTool } from './common.js';

const CHUNK = Buffer.alloc(64 * 1024, 0x5a);

function handle(s: net.Socket): void {
  s.setNoDelay(true);
  s.on('error', () => {});
  s.once('data', (first: Buffer) => {
    const mode = first[0];
    const rest = first.subarray(1);
    if (mode === MODE.echo) {
      if (rest.length) s.write(rest);
      s.pipe(s);
    } else if (mode === MODE.sink) {
      s.resume();
      s.on('end', () => s.end());
    } else if (mode === MODE.source) {
      const pump = () => {
        while (!s.destroyed && s.write(CHUNK));
      };
      s.on('drain', pump);
      s.on('end', () => s.destroy());
      s.on('close', () => s.off('drain', pump));
      pump();
    } else s.destroy();
  });
}

runTool(async () => {
  const m = flags(process.argv.slice(2));
  const { host, port } = hostPort(m.get('bind') ?? '127.0.0.1:0');
  const srv = net.createServer({ allowHalfOpen: true }, handle);
  await new Promise<void>((r) => srv.listen({ host, port }, () => r()));
  out({ event: 'ready', port: (srv.address() as net.AddressInfo).port });
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}, 24 * 3600_000);
