#!/usr/bin/env node
import { Command, Option } from 'commander';
import { addLogOptions, die, ExitSignal, loggerFrom, onShutdown } from '../src/util/cli-common.js';
import { parseHostPort } from '../src/util/addr.js';
import { NAME_RE } from '../src/wire/control.js';
import { ServePeer } from './serve.js';
import { VisitPeer } from './visit.js';
import type { Logger } from '../src/util/log.js';
import { detectNat } from '../src/stun/nat.js';

const program = new Command('peer')
  .description('Reach a TCP service behind NAT, peer to peer, end-to-end encrypted.')
  .addHelpText(
    'after',
    `
Examples:
  on the machine with the service:
    peer serve --name ssh-home --local 127.0.0.1:22 --server rdv.example.com:7000 --secret "$S"
  on the machine that wants it:
    peer visit ssh-home --bind 127.0.0.1:2222 --server rdv.example.com:7000 --secret "$S"
  as an ssh ProxyCommand (PEER_SERVER and PEER_SECRET in the environment):
    ssh -o ProxyCommand='peer visit %h --stdio' ssh-home
  what kind of NAT am I behind?
    peer nat --server rdv.example.com:7000

Environment: PEER_SERVER, PEER_SECRET and PEER_TOKEN stand in for --server, --secret and --token.
Logs go to stderr; --log-format json prints one object per line with an "event" field.`,
  )
  .showHelpAfterError('(run with --help for usage)');

function common(cmd: Command): Command {
  addLogOptions(cmd);
  return cmd
    .addOption(new Option('--server <host:port>', 'the rendezvous to use').env('PEER_SERVER').makeOptionMandatory())
    .addOption(new Option('--secret <secret>', 'shared secret of this service; both peers must use the same (prefer PEER_SECRET: flags show in ps)').env('PEER_SECRET').makeOptionMandatory())
    .addOption(new Option('--token <token>', 'token the rendezvous requires, if it was started with --token').env('PEER_TOKEN'))
    .addOption(new Option('--mode <mode>', 'auto: relay first, upgrade to direct; direct: never relay; relay: never punch').choices(['auto', 'direct', 'relay']).default('auto'));
}

interface CommonOpts {
  server: string;
  secret: string;
  token?: string;
  mode: 'auto' | 'direct' | 'relay';
  logFormat: string;
  logLevel: string;
  quiet?: boolean;
}

function checkName(log: Logger, name: string): void {
  if (!NAME_RE.test(name)) die(log, `invalid name "${name}": use 1-63 of A-Z a-z 0-9 . _ - starting with a letter or digit`);
}

function parseOrDie(log: Logger, value: string, what: string, defaultHost: string) {
  try {
    return parseHostPort(value, defaultHost, what);
  } catch (e) {
    return die(log, (e as Error).message);
  }
}

common(program.command('serve'))
  .description('make a local TCP service reachable by name')
  .requiredOption('--name <name>', 'name visitors use to reach this service (e.g. ssh-home)')
  .requiredOption('--local <host:port>', 'the local service to expose (e.g. 127.0.0.1:22)')
  .action(async (o: CommonOpts & { name: string; local: string }) => {
    const log = loggerFrom(o);
    checkName(log, o.name);
    const peer = new ServePeer({
      name: o.name,
      local: parseOrDie(log, o.local, '--local', '127.0.0.1'),
      server: parseOrDie(log, o.server, '--server', '127.0.0.1'),
      secret: o.secret,
      token: o.token,
      mode: o.mode,
      log,
    });
    onShutdown(log, () => peer.stop());
    try {
      await peer.start();
    } catch (e) {
      if (e instanceof ExitSignal) return;
      die(log, (e as Error).message);
    }
  });

common(program.command('visit'))
  .description('reach a named service: on a local port (--bind) or on stdin/stdout (--stdio)')
  .argument('<name>', 'the name the service was registered with')
  .option('--bind <host:port>', 'accept local connections here (e.g. 127.0.0.1:2222); port 0 picks one')
  .option('--stdio', 'carry one connection over stdin/stdout (for ssh -o ProxyCommand)')
  .action(async (name: string, o: CommonOpts & { bind?: string; stdio?: boolean }) => {
    const log = loggerFrom(o);
    checkName(log, name);
    if (!o.bind === !o.stdio) die(log, 'visit needs exactly one of --bind HOST:PORT or --stdio');
    const bind = o.bind ? parseOrDie(log, o.bind, '--bind', '127.0.0.1') : null;
    const peer = new VisitPeer({ name, server: parseOrDie(log, o.server, '--server', '127.0.0.1'), secret: o.secret, token: o.token, mode: o.mode, log });
    onShutdown(log, () => peer.stop());
    try {
      await peer.init();
      if (bind) {
        const addr = await peer.listen(bind);
        const where = `${addr.address}:${addr.port}`;
        log.info('ready', `"${name}" is reachable at ${where}`, { name, address: addr.address, port: addr.port, bind: where });
      } else {
        log.info('ready', `"${name}" connected on stdin/stdout`, { name, stdio: true });
        await peer.stdio();
        peer.stop();
        setTimeout(() => process.exit(0), 50);
      }
    } catch (e) {
      if (e instanceof ExitSignal) return;
      die(log, (e as Error).message);
    }
  });

addLogOptions(program.command('nat'))
  .description('classify this host\'s NAT against a rendezvous (or any RFC 5389 STUN server)')
  .addHelpText('after', '\nMapping and filtering tests need a server with a second address (rendezvous --alt-udp).')
  .addOption(new Option('--server <host:port>', 'the rendezvous (its UDP port) or a STUN server').env('PEER_SERVER').makeOptionMandatory())
  .option('--json', 'print the report as one JSON object on stdout')
  .action(async (o: { server: string; json?: boolean; logFormat: string; logLevel: string; quiet?: boolean }) => {
    const log = loggerFrom(o);
    const server = parseOrDie(log, o.server, '--server', '127.0.0.1');
    try {
      const report = await detectNat({ address: server.host, port: server.port });
      if (o.json) {
        process.stdout.write(JSON.stringify(report) + '\n');
      } else {
        const ep = (e: { address: string; port: number }) => `${e.address}:${e.port}`;
        const lines = [
          `public address:      ${ep(report.publicAddress)}`,
          `local address:       ${ep(report.localAddress)}`,
          `on a public address: ${report.isPublic ? 'yes' : 'no'}`,
          `mapping:             ${report.mapping}`,
          `filtering:           ${report.filtering}`,
          `NAT type:            ${report.natType}`,
          `hole punching:       ${report.isPublic || report.mapping === 'endpoint-independent' ? 'easy' : report.mapping === 'unknown' ? 'unknown' : 'hard (birthday punching against easy NATs; relay against another hard one)'}`,
          ...report.notes.map((n) => `note: ${n}`),
        ];
        process.stdout.write(lines.join('\n') + '\n');
      }
    } catch (e) {
      die(log, `NAT test against ${server.host}:${server.port} failed: ${(e as Error).message}`);
    }
  });

program.parseAsync(process.argv).catch((e) => {
  if (!(e instanceof ExitSignal)) die(null, (e as Error).message);
});
