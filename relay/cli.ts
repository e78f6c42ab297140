#!/usr/bin/env node
import net from 'node:net';
import { Command, Option } from 'commander';
import { addLogOptions, die, ExitSignal, loggerFrom, onShutdown } from '../src/util/cli-common.js';
import { parseHostPort, formatHostPort } from '../src/util/addr.js';
import { FramedSocket } from '../src/transport/framed-socket.js';
import { relayKeyFrom } from '../src/wire/ticket.js';
import type { ControlMessage } from '../src/wire/control.js';
import { RELAY_BIND_TIMEOUT_MS, Relay } from './relay.js';
import { cryptoReady } from '../src/crypto/sodium.js';
import { ConfigError, layered, loadConfigFile, RelayConfig } from '../src/config/index.js';
import { versionLine } from '../src/util/version.js';

const program = new Command('relay')
  .description(
    'A standalone relay, for operators who run it apart from the rendezvous.\n' +
      'Start the rendezvous with --relay HOST:PORT --relay-key KEY pointing here. It forwards sealed\n' +
      'datagrams between the two sides of a session and cannot read them.',
  )
  .option('--listen <host:port>', 'where peers connect', '0.0.0.0:7001')
  .addOption(
    new Option(
      '--key <key>',
      'key shared with the rendezvous (--relay-key there); required here, in RELAY_KEY or in --config',
    ).env('RELAY_KEY'),
  )
  .option(
    '--config <file>',
    'TOML config file (keys are these option names; flags and environment variables override it)',
  )
  .version(versionLine('relay'), '-V, --version', 'print the package version and the protocol version it speaks')
  .showHelpAfterError('(run with --help for usage)');
addLogOptions(program);

program.action((_o: unknown, cmd: Command) => {
  let file: RelayConfig | null = null;
  let configError: ConfigError | null = null;
  const flags = cmd.opts<{ config?: string }>();
  if (flags.config) {
    try {
      file = loadConfigFile(flags.config, RelayConfig);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      configError = e;
    }
  }
  const pick = <T>(key: string, fileKey: keyof RelayConfig) =>
    layered<T>(cmd, key, { top: file?.[fileKey] as T | undefined });
  const o = { listen: pick<string>('listen', 'listen')!, key: pick<string>('key', 'key') };
  const log = loggerFrom({
    logFormat: pick('logFormat', 'log-format'),
    logLevel: pick('logLevel', 'log-level'),
    quiet: pick('quiet', 'quiet'),
  });
  if (configError) return die(log, configError);
  if (!o.key)
    return die(
      log,
      "relay needs a key: --key K, RELAY_KEY, or key in the config file (the rendezvous's --relay-key)",
      'usage',
    );
  let listen;
  try {
    listen = parseHostPort(o.listen, '0.0.0.0', '--listen');
  } catch (e) {
    return die(log, (e as Error).message, 'usage');
  }
  const relay = new Relay({ key: relayKeyFrom(o.key), log });
  const server = net.createServer((socket) => {
    const fs = new FramedSocket(socket, {
      idleTimeoutMs: RELAY_BIND_TIMEOUT_MS,
      firstMessageTimeoutMs: RELAY_BIND_TIMEOUT_MS,
    });
    fs.once('message', (m: ControlMessage) => {
      if (m.type === 'relay_resume') return relay.resume(fs, m);
      if (m.type !== 'relay_bind') return fs.fail('bad_message', 'expected relay_bind first');
      relay.adopt(fs, m.ticket, m.resume);
    });
  });
  onShutdown(log, () => {
    relay.close();
    server.close();
  });
  server.once('error', (e: NodeJS.ErrnoException) => {
    try {
      if (e.code === 'EADDRINUSE')
        die(log, `cannot listen on ${o.listen}: the port is already in use`, 'address_in_use');
      else die(log, `cannot start: ${e.message}`, 'listen_failed');
    } catch (x) {
      if (!(x instanceof ExitSignal)) throw x;
    }
  });
  // Resume proofs (relay_resume) are checked with libsodium's BLAKE2b.
  void cryptoReady().then(() =>
    server.listen({ host: listen.host, port: listen.port }, () => {
      const a = server.address() as net.AddressInfo;
      log.info('ready', `relay listening on ${formatHostPort(a)}`, {
        address: a.address,
        port: a.port,
        listen: formatHostPort(a),
      });
    }),
  );
});

program.parseAsync(process.argv).catch((e) => {
  if (!(e instanceof ExitSignal)) die(null, e as Error);
});
