#!/usr/bin/env node
// Many idle tunnels in one process: `count` VisitPeers (the class behind
// `peer visit`), each with its own control connection, UDP socket and
// session to the same served name. Each carries one echo to prove it works,
// then all sit idle until SIGTERM.
//   multi-visit --server H:P --name NAME --count 100 [--parallel 10] [--direct-wait-ms 15000]   (PEER_SECRET in env)
//   -> {"event":"ready","sessions":N,"direct":D,"ms":T}
import { VisitPeer } from '../../../peer/visit.js';
import { createLogger } from '../../../src/util/log.js';
import { connect, flags, hostPort, MODE, num, out, runTool } from './common.js';
import { sleep } from '../../../src/util/backoff.js';

async function echoOnce(port: number): Promise<void> {
  const s = await connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('echo through a new tunnel timed out')), 15_000);
    s.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    s.once('error', reject);
    s.write(Buffer.from([MODE.echo, 0x2e]));
  });
  s.destroy();
}

runTool(async () => {
  const m = flags(process.argv.slice(2));
  const secret = process.env.PEER_SECRET;
  if (!secret) throw new Error('PEER_SECRET must be set');
  const server = hostPort(m.get('server') ?? '');
  const name = m.get('name') ?? 'svc';
  const count = num(m, 'count', 100);
  const parallel = num(m, 'parallel', 10);
  const log = createLogger({ format: 'json', level: 'warn' });
  const peers: VisitPeer[] = [];
  const t0 = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const peer = new VisitPeer({ name, server, secret, mode: 'auto', log });
      peers.push(peer);
      await peer.init();
      const addr = await peer.listen({ host: '127.0.0.1', port: 0 });
      await echoOnce(addr.port);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  const directCount = () =>
    peers.filter((p) => [...p.host.tunnels.values()].some((t) => t.session.path?.kind === 'direct')).length;
  const deadline = Date.now() + num(m, 'direct-wait-ms', 15_000);
  while (directCount() < count && Date.now() < deadline) await sleep(200);
  out({ event: 'ready', sessions: peers.length, direct: directCount(), ms: Date.now() - t0 });
  const stop = () => {
    out({ event: 'stopped', direct: directCount() });
    for (const p of peers) p.stop();
    setTimeout(() => process.exit(0), 100);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}, 24 * 3600_000);
