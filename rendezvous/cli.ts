#!/usr/bin/env node
import { Command, Option } from 'commander';
import { addLogOptions, die, ExitSignal, loggerFrom, onShutdown } from '../src/util/cli-common.js';
import { parseHostPort } from '../src/util/addr.js';
import { RendezvousServer } from './server.js';

const program = new Command('rendezvous')
  .description('The public meeting point: peers register names, visitors are introduced to them, and traffic is relayed when no direct path can be punched. It never sees plaintext.')
  .addHelpText(
    'after',
    `
Examples:
  rendezvous                                   # TCP and UDP 7000 on all addresses, relay embedded
  rendezvous --listen 0.0.0.0:7000 --alt-udp 198.51.100.8:7001 --token "$T"
  relay --listen 0.0.0.0:7001 --key "$K" & rendezvous --relay relay.example.com:7001 --relay-key "$K"

Open TCP and UDP on the --listen port (and the --alt-udp port) in your firewall.`,
  )
  .option('--listen <host:port>', 'TCP control channel and embedded relay', '0.0.0.0:7000')
  .option('--udp <host:port>', 'UDP for STUN and punch coordination (default: the --listen address and port)')
  .option('--alt-udp <host:port>', 'a second UDP address (another IP of this host) so peers can classify their NAT (RFC 5780)')
  .addOption(new Option('--token <token>', 'require this token from every peer').env('RENDEZVOUS_TOKEN'))
  .option('--relay <host:port>', 'use a standalone relay (see `relay --help`) instead of the embedded one')
  .addOption(new Option('--relay-key <key>', 'key shared with the standalone relay').env('RELAY_KEY'))
  .showHelpAfterError('(run with --help for usage)');
addLogOptions(program);

program.action(async (o: { listen: string; udp?: string; altUdp?: string; token?: string; relay?: string; relayKey?: string; logFormat: string; logLevel: string; quiet?: boolean }) => {
  const log = loggerFrom(o);
  let listen, udp, altUdp, relay;
  try {
    listen = parseHostPort(o.listen, '0.0.0.0', '--listen');
    udp = o.udp ? parseHostPort(o.udp, listen.host, '--udp') : undefined;
    altUdp = o.altUdp ? parseHostPort(o.altUdp, listen.host, '--alt-udp') : undefined;
    relay = o.relay ? parseHostPort(o.relay, '127.0.0.1', '--relay') : undefined;
  } catch (e) {
    return die(log, (e as Error).message);
  }
  if (relay && !o.relayKey) die(log, '--relay needs --relay-key (the same key the relay was started with)');
  const server = new RendezvousServer({
    host: listen.host,
    port: listen.port,
    udp,
    altUdp,
    token: o.token,
    log,
    relay: relay ? { host: relay.host, port: relay.port, key: o.relayKey! } : undefined,
  });
  onShutdown(log, () => server.close());
  try {
    const addr = await server.listen();
    const stun = server.stun!.endpoints.map((e) => `${e.address}:${e.port}`);
    log.info('ready', `rendezvous listening on ${addr.address}:${addr.port}, STUN on udp ${stun.join(', ')}${relay ? '' : ' (relay embedded)'}`, {
      address: addr.address,
      port: addr.port,
      listen: `${addr.address}:${addr.port}`,
      udp: stun,
      relay: relay ? `${relay.host}:${relay.port}` : 'embedded',
    });
  } catch (e) {
    if (e instanceof ExitSignal) return;
    const err = e as NodeJS.ErrnoException;
    die(log, err.message.startsWith('cannot listen') ? err.message : err.code === 'EADDRINUSE' ? `cannot listen on ${o.listen}: the port is already in use` : `cannot start: ${err.message}`);
  }
});

program.parseAsync(process.argv).catch((e) => {
  if (!(e instanceof ExitSignal)) die(null, (e as Error).message);
});
