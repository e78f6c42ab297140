/**
 * `npm start`: the whole product on one machine, with no input needed.
 * Starts a rendezvous, a small HTTP service, `peer serve` for it and
 * `peer visit` in front of it, all on loopback, then fetches a page through
 * the tunnel and prints where to connect. Ctrl-C stops everything.
 * `--once` exits after the demonstration (used by tests).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { CLI, captureOutput, waitForEvent, stopProcess } from './proc.js';

const once = process.argv.includes('--once');
const secret = 'demo-secret-' + Math.random().toString(36).slice(2);
const children: ChildProcess[] = [];

function start(bin: string, args: string[]): ChildProcess {
  const c = spawn(process.execPath, [bin, ...args, '--log-format', 'json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  captureOutput(c);
  children.push(c);
  return c;
}

async function shutdown(code: number): Promise<never> {
  await Promise.all(children.map((c) => stopProcess(c, 1500)));
  process.exit(code);
}

async function main(): Promise<void> {
  const service = http.createServer((_req, res) =>
    res.end(`hello from the service behind the tunnel (${new Date().toISOString()})\n`),
  );
  await new Promise<void>((r) => service.listen(0, '127.0.0.1', () => r()));
  const servicePort = (service.address() as net.AddressInfo).port;
  console.log(`1. demo HTTP service on 127.0.0.1:${servicePort} (stands for ssh on a home box)`);

  const rdv = start(CLI.rendezvous, ['--listen', '127.0.0.1:0']);
  const rdvReady = await waitForEvent(rdv, 'ready', 10_000);
  const server = `127.0.0.1:${String(rdvReady.port)}`;
  console.log(`2. rendezvous listening on ${server}`);

  const serve = start(CLI.peer, [
    'serve',
    '--name',
    'demo',
    '--local',
    `127.0.0.1:${servicePort}`,
    '--server',
    server,
    '--secret',
    secret,
  ]);
  await waitForEvent(serve, 'ready', 15_000);
  console.log(`3. peer serve registered the name "demo"`);

  const visit = start(CLI.peer, ['visit', 'demo', '--bind', '127.0.0.1:0', '--server', server, '--secret', secret]);
  const v = await waitForEvent(visit, 'ready', 15_000);
  const path = await waitForEvent(visit, 'path', 15_000);
  console.log(`4. peer visit exposes "demo" on 127.0.0.1:${String(v.port)} (path: ${String(path.path)})`);

  const body = await new Promise<string>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: Number(v.port), path: '/', timeout: 10_000 }, (res) => {
        let s = '';
        res.on('data', (d) => (s += d));
        res.on('end', () => resolve(s));
      })
      .on('error', reject);
  });
  console.log(`5. fetched through the tunnel: ${body.trim()}`);
  console.log(`\nTry it yourself:  curl http://127.0.0.1:${String(v.port)}/`);
  if (once) return shutdown(0);
  console.log('Press Ctrl-C to stop.');
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));
}

main().catch(async (e) => {
  console.error(`demo failed: ${(e as Error).message}`);
  await shutdown(1);
});
