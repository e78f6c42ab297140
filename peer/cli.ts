#!/usr/bin/env node
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import { addLogOptions, die, ExitSignal, loggerFrom, onShutdown } from '../src/util/cli-common.js';
import { firstPerFamily, formatHostPort, parseHostPort, type HostPort } from '../src/util/addr.js';
import { codeOf } from '../src/util/errors.js';
import { NAME_RE, type Mode, type Proto } from '../src/wire/control.js';
import { UDP_FLOW_IDLE_MS } from '../src/udp/flow-table.js';
import type { Logger } from '../src/util/log.js';
import { describeIPv6, detectNat, type NatReport } from '../src/stun/nat.js';
import { lookup as dnsLookup } from 'node:dns/promises';
import { describePortmap, portmapReport } from '../src/portmap/report.js';
import { ConfigError, fromCommandLine, layered, loadConfigFile, PeerConfig } from '../src/config/index.js';
import {
  encodePublicKey,
  generateIdentity,
  identityReady,
  parseIdentity,
  parsePublicKey,
  serializeIdentity,
  type Identity,
} from '../src/crypto/identity.js';
import { PeerApp, type ServeSpec, type VisitSpec } from './app.js';
import type { PmtuSettings } from './tunnel.js';
import { checkMaxDatagram } from '../src/punch/pmtu-driver.js';
import { RAISE_TIMER_MS } from '../src/punch/pmtu.js';
import { RESUME_TIMEOUT_MS } from './tunnel.js';
import { adminCall, adminRequest, defaultAdminDir, defaultAdminPath, findAdminSockets } from './admin.js';
import { DEFAULT_PING_COUNT, formatPingLine, MAX_PING_COUNT, pingVerdict, runPings, type PingLine } from './ping.js';
import { VisitPeer } from './visit.js';
import { pingSession, PING_TIMEOUT_MS } from '../src/session/ping.js';
import { formatStatus } from './status.js';
import type { PeerStatus, PingReply } from './app.js';
import { versionLine } from '../src/util/version.js';

/** --resume-timeout default, seconds (RESUME_TIMEOUT_MS in peer/tunnel.ts). */
const DEFAULT_RESUME_TIMEOUT_S = RESUME_TIMEOUT_MS / 1000;
/** --udp-idle-timeout default, seconds (UDP_FLOW_IDLE_MS in src/udp/flow-table.ts). */
const DEFAULT_UDP_IDLE_S = UDP_FLOW_IDLE_MS / 1000;

const program = new Command('peer')
  .description('Reach a TCP or UDP service behind NAT, peer to peer, end-to-end encrypted.')
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
  several services and visitors from one file (see docs/CLI.md "Config file"):
    peer run --config /etc/holepunch/peer.toml
  what is running, on which path?
    peer status
  is the tunnel direct, and how fast does it answer?
    peer ping ssh-home --until-direct
  what kind of NAT am I behind?
    peer nat --server rdv.example.com:7000

Environment: PEER_SERVER, PEER_SECRET and PEER_TOKEN stand in for --server, --secret and --token.
Logs go to stderr; --log-format json prints one object per line with an "event" field.`,
  )
  .version(versionLine('peer'), '-V, --version', 'print the package version and the protocol version it speaks')
  .showHelpAfterError('(run with --help for usage)');

/** Options of every command that runs tunnels (serve, visit, run). */
function tunnelOptions(cmd: Command): Command {
  addLogOptions(cmd);
  return cmd
    .option(
      '--config <file>',
      'TOML config file (keys are these option names; flags and environment variables override it)',
    )
    .addOption(
      new Option(
        '--server <host:port>',
        'the rendezvous to use; several nodes of a cluster comma-separated (a:7000,b:7000), failing over in order',
      ).env('PEER_SERVER'),
    )
    .addOption(
      new Option(
        '--secret <secret>',
        'shared secret of this service; both peers must use the same (prefer PEER_SECRET: flags show in ps)',
      ).env('PEER_SECRET'),
    )
    .addOption(
      new Option('--token <token>', 'token the rendezvous requires, if it was started with --token').env('PEER_TOKEN'),
    )
    .addOption(
      new Option('--mode <mode>', 'auto: relay first, upgrade to direct; direct: never relay; relay: never punch')
        .choices(['auto', 'direct', 'relay'])
        .default('auto'),
    )
    .option(
      '--identity <file>',
      'long-term key pair from `peer keygen` ' +
        '(serve: holds the name, proves the server to pinning visitors; visit: proves us to --allow)',
    )
    .option(
      '--admin <path>',
      `admin socket for \`peer status\` (default ${path.join(defaultAdminDir(), 'peer-PID.sock')})`,
    )
    .option('--no-admin', 'do not open an admin socket')
    .option('--no-portmap', 'do not ask the gateway for a port mapping (PCP, NAT-PMP, UPnP IGD) of the data socket')
    .option(
      '--no-ipv6',
      'no IPv6 data socket: direct paths over IPv4 only (the rendezvous may still be reached over IPv6)',
    )
    .option(
      '--metrics <host:port>',
      'serve Prometheus metrics at http://HOST:PORT/metrics (and status JSON at /status)',
    )
    .option(
      '--resume-timeout <seconds>',
      'how long a session waits for a lost network, relay or rendezvous to come back ' +
        '(open connections wait too) before it ends',
      String(DEFAULT_RESUME_TIMEOUT_S),
    )
    .option(
      '--max-datagram <bytes>',
      'largest UDP payload sent on a direct path (548-1472; default: what the path MTU search finds, up to 1472)',
    )
    .option(
      '--pmtu-raise-interval <seconds>',
      'after a path MTU search ends below the largest size, search again this much later (1-3600)',
      String(RAISE_TIMER_MS / 1000),
    )
    .option(
      '--udp-idle-timeout <seconds>',
      'with --proto udp: a flow (one client address) with no datagram either way for this long is closed',
      String(DEFAULT_UDP_IDLE_S),
    )
    .option(
      '--drain-timeout <seconds>',
      'on SIGTERM/SIGINT, how long open connections get to finish before they are ended with a FIN',
      '10',
    );
}

/** `--proto` of serve and visit (config key `proto`): what the name carries. */
function protoOption(): Option {
  return new Option('--proto <proto>', 'what the name carries: TCP connections, or UDP datagrams (WireGuard, DNS...)')
    .choices(['tcp', 'udp'])
    .default('tcp');
}

interface LogOpts {
  logFormat: string;
  logLevel: string;
  quiet?: boolean;
}

/**
 * The config file (if any) and a logger that honours it; config errors end the process with their file:line
 * message.
 */
function setup(cmd: Command): { file: PeerConfig | null; log: Logger } {
  const o = cmd.opts<LogOpts & { config?: string }>();
  let file: PeerConfig | null = null;
  let configError: ConfigError | null = null;
  if (o.config) {
    try {
      file = loadConfigFile(o.config, PeerConfig);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      configError = e;
    }
  }
  // Under ssh ProxyCommand our stderr is the user's terminal: warnings and errors only, unless --log-level says.
  // `peer ping` likewise: its stdout is the point, the session's info lines are noise.
  const stdioQuiet =
    ((o as { stdio?: boolean }).stdio === true || cmd.name() === 'ping') && !fromCommandLine(cmd, 'logLevel');
  const log = loggerFrom({
    logFormat: layered(cmd, 'logFormat', { top: file?.['log-format'] }),
    logLevel: stdioQuiet ? 'warn' : layered(cmd, 'logLevel', { top: file?.['log-level'] }),
    quiet: layered(cmd, 'quiet', { top: file?.quiet }),
  });
  if (configError) die(log, configError);
  return { file, log };
}

function checkName(log: Logger, name: string): void {
  if (!NAME_RE.test(name))
    die(log, `invalid name "${name}": use 1-63 of A-Z a-z 0-9 . _ - starting with a letter or digit`, 'usage');
}

function parseOrDie(log: Logger, value: string, what: string, defaultHost: string): HostPort {
  try {
    return parseHostPort(value, defaultHost, what);
  } catch (e) {
    return die(log, (e as Error).message, 'usage');
  }
}

function keyOrDie(log: Logger, text: string, what: string): Uint8Array {
  try {
    return parsePublicKey(text);
  } catch (e) {
    return die(log, `${what}: ${(e as Error).message}`, 'usage');
  }
}

function loadIdentity(log: Logger, file: string): Identity {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return die(
      log,
      `cannot read identity file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} ` +
        `(make one with \`peer keygen --out ${file}\`)`,
      'identity',
    );
  }
  try {
    const mode = fs.statSync(file).mode & 0o077;
    if (mode) log.warn('insecure_identity', `identity file ${file} is readable by other users; chmod 600 it`, { file });
    return parseIdentity(text, `identity file ${file}`);
  } catch (e) {
    return die(log, (e as Error).message, 'identity');
  }
}

/** Settings shared by every entry of one command: flags > entry > env > file top level > default. */
function commonFor(
  cmd: Command,
  log: Logger,
  file: PeerConfig | null,
  entry: { server?: string; secret?: string; token?: string; mode?: Mode; 'udp-idle-timeout'?: number },
  identity: Identity | undefined,
  label: string,
) {
  const udpIdleS = Number(
    layered<string | number>(cmd, 'udpIdleTimeout', {
      entry: entry['udp-idle-timeout'],
      top: file?.['udp-idle-timeout'],
    }) ?? DEFAULT_UDP_IDLE_S,
  );
  if (!Number.isFinite(udpIdleS) || udpIdleS < 1 || udpIdleS > 86_400)
    die(log, `invalid --udp-idle-timeout "${String(udpIdleS)}": expected seconds from 1 to 86400`, 'usage');
  // Commands without the flag (peer ping standalone) take the default.
  const resumeS = Number(
    layered<string | number>(cmd, 'resumeTimeout', { top: file?.['resume-timeout'] }) ?? DEFAULT_RESUME_TIMEOUT_S,
  );
  if (!Number.isFinite(resumeS) || resumeS < 1)
    die(log, `invalid --resume-timeout "${String(resumeS)}": expected seconds >= 1`, 'usage');
  const server = layered<string>(cmd, 'server', { entry: entry.server, top: file?.server });
  const secret = layered<string>(cmd, 'secret', { entry: entry.secret, top: file?.secret });
  if (!server)
    die(
      log,
      `${label}: no rendezvous: pass --server HOST:PORT, set PEER_SERVER, or set server in the config file`,
      'usage',
    );
  if (!secret)
    die(log, `${label}: no secret: pass --secret, set PEER_SECRET, or set secret in the config file`, 'usage');
  // A comma-separated list names several rendezvous nodes of one cluster: used in order, failing over
  // (docs/CLUSTER.md).
  const parts = server.split(',').filter((s) => s.trim());
  const servers =
    parts.length > 1
      ? parts.map((s) => parseOrDie(log, s, '--server', '127.0.0.1'))
      : [parseOrDie(log, server, '--server', '127.0.0.1')];
  return {
    server: servers[0],
    servers,
    secret,
    token: layered<string>(cmd, 'token', { entry: entry.token, top: file?.token }),
    mode: layered<Mode>(cmd, 'mode', { entry: entry.mode, top: file?.mode }) ?? 'auto',
    portmap: layered<boolean>(cmd, 'portmap', { top: file?.portmap }) !== false,
    ipv6: layered<boolean>(cmd, 'ipv6', { top: file?.ipv6 }) !== false,
    identity,
    resumeTimeoutMs: resumeS * 1000,
    udpIdleMs: udpIdleS * 1000,
    pmtu: pmtuSettings(cmd, log, file),
  };
}

/** `--max-datagram` and `--pmtu-raise-interval` (or their config keys), validated. */
function pmtuSettings(cmd: Command, log: Logger, file: PeerConfig | null): PmtuSettings {
  const out: PmtuSettings = {};
  const max = layered<string | number>(cmd, 'maxDatagram', { top: file?.['max-datagram'] });
  if (max !== undefined) {
    const n = Number(max);
    const bad = String(max).trim() === '' ? 'expected a number' : checkMaxDatagram(n);
    if (bad) die(log, `invalid --max-datagram "${max}": ${bad}`, 'usage');
    out.maxDatagram = n;
  }
  const raise = layered<string | number>(cmd, 'pmtuRaiseInterval', { top: file?.['pmtu-raise-interval'] });
  if (raise !== undefined) {
    const s = Number(raise);
    if (String(raise).trim() === '' || !Number.isFinite(s) || s < 1 || s > 3600)
      die(log, `invalid --pmtu-raise-interval "${raise}": expected seconds from 1 to 3600`, 'usage');
    out.raiseIntervalMs = s * 1000;
  }
  return out;
}

/**
 * Starts every entry in one process, with the admin socket and metrics; the process lives until a signal or a fatal
 * error.
 */
async function runAll(
  cmd: Command,
  log: Logger,
  file: PeerConfig | null,
  serves: ServeSpec[],
  visits: VisitSpec[],
): Promise<void> {
  if (!serves.length && !visits.length)
    die(
      log,
      'nothing to run: give --name/--local (serve), a NAME (visit), ' +
        'or [[serve]]/[[visit]] entries in the --config file',
      'usage',
    );
  const o = cmd.opts<{ drainTimeout: string }>();
  const drainS = Number(layered<string | number>(cmd, 'drainTimeout', { top: file?.['drain-timeout'] }));
  if (!Number.isFinite(drainS) || drainS < 0)
    die(log, `invalid --drain-timeout "${o.drainTimeout}": expected seconds >= 0`, 'usage');
  const app = new PeerApp(log);
  const stdio = visits.some((v) => v.bind === null);
  const several = serves.length + visits.length > 1;
  // One line per entry reads better with the entry's name on it when a process runs several.
  const logFor = (name: string) => (several ? log.child({ entry: name }) : log);
  onShutdown(log, () => app.shutdown(drainS * 1000), drainS * 1000 + 5000);
  try {
    // A `visit --stdio` (one per ssh connection) shares the config file with the long-running
    // peer, so it takes the file's listeners (admin, metrics) only when told on the command line.
    const metrics = stdio
      ? cmd.opts<{ metrics?: string }>().metrics
      : layered<string>(cmd, 'metrics', { top: file?.metrics });
    if (metrics) {
      const where = await app.startMetrics(parseOrDie(log, metrics, '--metrics', '127.0.0.1'));
      log.info('metrics', `metrics at http://${where}/metrics, status at http://${where}/status`, { listen: where });
    }
    await startAdmin(cmd, log, file, app, stdio);
    await Promise.all(serves.map((s) => app.startServe(s, logFor(s.name))));
    await Promise.all(visits.filter((v) => v.bind).map((v) => app.startVisit(v, logFor(v.name))));
    const one = visits.find((v) => v.bind === null);
    if (one) {
      await app.startVisit(one, log);
      app.stop();
      await app.released();
      setTimeout(() => process.exit(0), 50);
    }
  } catch (e) {
    if (e instanceof ExitSignal) return;
    die(log, e as Error);
  }
}

async function startAdmin(
  cmd: Command,
  log: Logger,
  file: PeerConfig | null,
  app: PeerApp,
  stdio: boolean,
): Promise<void> {
  const configured = stdio
    ? cmd.opts<{ admin?: string | boolean }>().admin
    : layered<string | boolean>(cmd, 'admin', { top: file?.admin });
  if (configured === false) return;
  const explicit = typeof configured === 'string';
  // ssh starts one `visit --stdio` per connection: they stay out of the way unless asked.
  if (stdio && !explicit) return;
  const where = explicit ? configured : defaultAdminPath();
  try {
    await app.startAdmin(where);
    log.debug('admin', `admin socket at ${where}`, { path: where });
  } catch (e) {
    if (explicit) die(log, e as Error);
    log.warn('admin_unavailable', `no admin socket: ${(e as Error).message}`, { path: where });
  }
}

function identityFor(cmd: Command, log: Logger, file: PeerConfig | null): Identity | undefined {
  const f = layered<string>(cmd, 'identity', { top: file?.identity });
  return f ? loadIdentity(log, f) : undefined;
}

tunnelOptions(program.command('serve'))
  .description(
    'make a local TCP (or, with --proto udp, UDP) service reachable by name (or every [[serve]] entry of --config)',
  )
  .option('--name <name>', 'name visitors use to reach this service (e.g. ssh-home)')
  .option('--local <host:port>', 'the local service to expose (e.g. 127.0.0.1:22)')
  .addOption(protoOption())
  .option(
    '--allow <pubkey>',
    'only visitors holding this key (from `peer keygen`) may connect; repeat for several',
    (v: string, prev: string[] = []) => [...prev, v],
  )
  .action(async (_o: unknown, cmd: Command) => {
    const { file, log } = setup(cmd);
    await identityReady();
    const o = cmd.opts<{ name?: string; local?: string; allow?: string[] }>();
    const identity = identityFor(cmd, log, file);
    let entries = file?.serve ?? [];
    if (o.name) {
      checkName(log, o.name);
      const fromFile = entries.find((e) => e.name.toLowerCase() === o.name!.toLowerCase());
      const local = o.local ?? fromFile?.local;
      if (!local) die(log, `serve "${o.name}": missing --local HOST:PORT`, 'usage');
      entries = [{ ...fromFile, name: o.name, local }];
    } else if (o.local) die(log, 'serve: --local needs --name', 'usage');
    else if (!entries.length)
      die(log, 'serve needs --name NAME --local HOST:PORT (or [[serve]] entries in --config FILE)', 'usage');
    const specs = entries.map((e) => serveSpec(cmd, log, file, e, identity, o.allow));
    await runAll(cmd, log, file, specs, []);
  });

function serveSpec(
  cmd: Command,
  log: Logger,
  file: PeerConfig | null,
  e: {
    name: string;
    local: string;
    server?: string;
    secret?: string;
    token?: string;
    mode?: Mode;
    allow?: string[];
    proto?: Proto;
    'udp-idle-timeout'?: number;
  },
  identity: Identity | undefined,
  allowFlags?: string[],
): ServeSpec {
  const allow = (allowFlags ?? e.allow ?? []).map((k) => keyOrDie(log, k, `serve "${e.name}" --allow`));
  if (allow.length && !identity)
    log.info('identity', `serve "${e.name}": --allow without --identity; using a fresh key for this run`, {
      name: e.name,
    });
  return {
    name: e.name,
    local: parseOrDie(log, e.local, '--local', '127.0.0.1'),
    proto: layered<Proto>(cmd, 'proto', { entry: e.proto }) ?? 'tcp',
    allow: allow.length ? allow : undefined,
    ...commonFor(cmd, log, file, e, identity, `serve "${e.name}"`),
  };
}

tunnelOptions(program.command('visit'))
  .description(
    'reach a named service: on a local port (--bind) or on stdin/stdout (--stdio); ' +
      'without NAME, every [[visit]] entry of --config',
  )
  .argument('[name]', 'the name the service was registered with')
  .option('--bind <host:port>', 'accept local connections here (e.g. 127.0.0.1:2222); port 0 picks one')
  .option(
    '--stdio',
    'carry one connection over stdin/stdout (for ssh -o ProxyCommand); ' +
      'logs warnings and errors only unless --log-level',
  )
  .option(
    '--server-key <pubkey>',
    'refuse the server unless it proves it holds this key (its `peer keygen` public key)',
  )
  .addOption(protoOption())
  .action(async (name: string | undefined, _o: unknown, cmd: Command) => {
    const { file, log } = setup(cmd);
    await identityReady();
    const o = cmd.opts<{ bind?: string; stdio?: boolean; serverKey?: string }>();
    const identity = identityFor(cmd, log, file);
    let specs: VisitSpec[];
    if (name) {
      checkName(log, name);
      const fromFile = file?.visit.find((e) => e.name.toLowerCase() === name.toLowerCase());
      if (o.bind && o.stdio) die(log, 'visit needs exactly one of --bind HOST:PORT or --stdio', 'usage');
      const bind = o.stdio ? null : (o.bind ?? fromFile?.bind);
      if (bind === undefined) die(log, 'visit needs exactly one of --bind HOST:PORT or --stdio', 'usage');
      specs = [visitSpec(cmd, log, file, { ...fromFile, name, bind }, identity, o.serverKey)];
    } else {
      if (o.bind || o.stdio) die(log, 'visit: --bind and --stdio need a NAME', 'usage');
      if (!file?.visit.length) die(log, 'visit needs a NAME (or [[visit]] entries in --config FILE)', 'usage');
      specs = file.visit.map((e) => visitSpec(cmd, log, file, e, identity, o.serverKey));
    }
    await runAll(cmd, log, file, [], specs);
  });

function visitSpec(
  cmd: Command,
  log: Logger,
  file: PeerConfig | null,
  e: {
    name: string;
    bind: string | null;
    server?: string;
    secret?: string;
    token?: string;
    mode?: Mode;
    'server-key'?: string;
    proto?: Proto;
    'udp-idle-timeout'?: number;
  },
  identity: Identity | undefined,
  serverKeyFlag?: string,
): VisitSpec {
  const serverKey = serverKeyFlag ?? e['server-key'];
  const proto = layered<Proto>(cmd, 'proto', { entry: e.proto }) ?? 'tcp';
  if (proto === 'udp' && e.bind === null)
    die(log, `visit "${e.name}": --stdio carries one TCP connection; a UDP service needs --bind HOST:PORT`, 'usage');
  return {
    name: e.name,
    bind: e.bind === null ? null : parseOrDie(log, e.bind, '--bind', '127.0.0.1'),
    proto,
    serverKey: serverKey ? keyOrDie(log, serverKey, `visit "${e.name}" --server-key`) : undefined,
    ...commonFor(cmd, log, file, e, identity, `visit "${e.name}"`),
  };
}

tunnelOptions(program.command('run'))
  .description('run every [[serve]] and [[visit]] entry of a config file in one process')
  .addHelpText(
    'after',
    '\nExample:\n  peer run --config /etc/holepunch/peer.toml\n\nSee docs/CLI.md "Config file" for the format.',
  )
  .action(async (_o: unknown, cmd: Command) => {
    const { file, log } = setup(cmd);
    if (!file) die(log, 'run needs --config FILE', 'usage');
    await identityReady();
    const identity = identityFor(cmd, log, file);
    const serves = file.serve.map((e) => serveSpec(cmd, log, file, e, identity));
    const visits = file.visit.map((e) => visitSpec(cmd, log, file, e, identity));
    await runAll(cmd, log, file, serves, visits);
  });

program
  .command('status')
  .description('show the tunnels of the running peer (serve, visit --bind or run) through its admin socket')
  .option('--admin <path>', `one peer's admin socket (default: every running peer in ${defaultAdminDir()})`)
  .option('--json', "print each peer's status as one JSON object per line")
  .action(async (o: { admin?: string; json?: boolean }) => {
    const sockets = o.admin ? [o.admin] : await findAdminSockets();
    if (!sockets.length)
      die(
        null,
        `no running peer found (no live admin socket in ${defaultAdminDir()}); ` +
          'is `peer serve`, `peer visit --bind` or `peer run` running as this user?',
        'no_peer',
      );
    try {
      for (const sock of sockets) {
        const reply = (await adminRequest(sock, 'status')) as unknown as PeerStatus & { ok?: boolean };
        delete reply.ok;
        process.stdout.write(o.json ? JSON.stringify(reply) + '\n' : formatStatus(reply));
      }
    } catch (e) {
      die(null, (e as Error).message, 'no_peer');
    }
  });

addLogOptions(program.command('ping'))
  .description('send probes through the tunnel to NAME and print the path each took (direct or relay) and its RTT')
  .argument('<name>', 'a name a running peer serves or visits, or (with --server/--secret) any served name')
  .option('-c, --count <n>', `probes to send, one per second`, String(DEFAULT_PING_COUNT))
  .option('--until-direct', 'stop at the first answer on a direct path; exit 1 if none came over direct')
  .option('--timeout <ms>', 'how long each probe waits for its answer', String(PING_TIMEOUT_MS))
  .option('--json', 'one JSON object per probe on stdout')
  .option('--admin <path>', `ping through this running peer (default: the one in ${defaultAdminDir()} that has NAME)`)
  .option('--config <file>', 'TOML config file, for --server/--secret/--token when pinging on its own')
  .addOption(
    new Option('--server <host:port>', 'no running peer has NAME: open a session through this rendezvous').env(
      'PEER_SERVER',
    ),
  )
  .addOption(new Option('--secret <secret>', "with --server: the service's shared secret").env('PEER_SECRET'))
  .addOption(new Option('--token <token>', 'with --server: the rendezvous token').env('PEER_TOKEN'))
  .addOption(
    new Option('--mode <mode>', 'with --server: auto, direct or relay, as for visit').choices([
      'auto',
      'direct',
      'relay',
    ]),
  )
  .option('--identity <file>', 'with --server: our key pair, for servers that pin visitors')
  .option('--server-key <pubkey>', 'with --server: refuse the server unless it holds this key')
  .addHelpText(
    'after',
    `
Through a running peer (\`peer serve\`, \`visit --bind\` or \`run\`): its admin socket sends each probe on
the session's active path. With no running peer for NAME, --server and --secret (or PEER_SERVER and
PEER_SECRET) open a session of its own, as \`peer visit\` does, and ping over it.

Examples:
  peer ping ssh-home                          # 10 probes through the running peer
  peer ping ssh-home --until-direct -c 30     # wait for the hole punch; exit 1 if it never comes
  peer ping ssh-home --server rdv.example.com:7000 --json   # on its own, one JSON object per probe

Each line: pong from NAME via direct 203.0.113.7:41641 in 3.1 ms (or via relay HOST:PORT).
Exit status: 0 if a probe was answered (with --until-direct: on a direct path), 1 otherwise.`,
  )
  .action(async (name: string, _o: unknown, cmd: Command) => {
    const { file, log } = setup(cmd);
    checkName(log, name);
    const o = cmd.opts<{ count: string; untilDirect?: boolean; timeout: string; json?: boolean; admin?: string }>();
    const count = Number(o.count);
    if (!Number.isInteger(count) || count < 1 || count > MAX_PING_COUNT)
      die(log, `invalid --count "${o.count}": expected a whole number from 1 to ${MAX_PING_COUNT}`, 'usage');
    const timeoutMs = Number(o.timeout);
    if (!Number.isFinite(timeoutMs) || timeoutMs < 1 || timeoutMs > 60_000)
      die(log, `invalid --timeout "${o.timeout}": expected milliseconds from 1 to 60000`, 'usage');
    const print = (l: PingLine) => process.stdout.write(o.json ? JSON.stringify(l) + '\n' : formatPingLine(l) + '\n');
    const run = { name, count, untilDirect: !!o.untilDirect, timeoutMs, print };
    const finish = (r: { pongs: number; direct: boolean; lines: PingLine[] }) => {
      const bad = pingVerdict(r, run);
      if (bad) die(o.json ? null : log, bad);
      setTimeout(() => process.exit(0), 50);
    };
    const sock = o.admin ?? (await adminSocketFor(name));
    if (sock) {
      const probe = async (t: number) =>
        (await adminCall(sock, { cmd: 'ping', name, timeoutMs: t }, t + 2000)) as unknown as PingReply;
      return finish(await runPings({ ...run, via: 'admin', probe }));
    }
    const server = layered<string>(cmd, 'server', { top: file?.server });
    if (!server)
      die(
        log,
        `no running peer serves or visits "${name}" (no admin socket in ${defaultAdminDir()} has it): ` +
          'pass --server and --secret (or PEER_SERVER and PEER_SECRET) to ping on its own',
        'no_peer',
      );
    await identityReady();
    const identity = identityFor(cmd, log, file);
    const serverKey = cmd.opts<{ serverKey?: string }>().serverKey;
    const spec = visitSpec(cmd, log, file, { name, bind: null }, identity, serverKey);
    const peer = new VisitPeer({ ...spec, log });
    try {
      await peer.init();
    } catch (e) {
      peer.stop();
      die(log, e as Error);
    }
    const tunnel = [...peer.host.tunnels.values()][0];
    const sid = tunnel.session.sid;
    const probe = async (t: number): Promise<PingReply> => ({
      name,
      kind: 'visit',
      sid,
      ...(await pingSession(tunnel.session, t).then((r) => ({ ...r, rttMs: Math.round(r.rttMs * 100) / 100 }))),
    });
    const result = await runPings({ ...run, via: 'standalone', probe });
    peer.stop();
    finish(result);
  });

/** The admin socket of a running peer that serves or visits `name`, if any. */
async function adminSocketFor(name: string): Promise<string | null> {
  for (const sock of await findAdminSockets()) {
    try {
      const st = (await adminRequest(sock, 'status', 2000)) as unknown as PeerStatus;
      if (st.entries?.some((e) => e.name.toLowerCase() === name.toLowerCase())) return sock;
    } catch {
      // a peer that does not answer is not the one
    }
  }
  return null;
}

program
  .command('keygen')
  .description('make a long-term key pair: prints the public key, writes the key pair to a file readable only by you')
  .option('--out <file>', 'where to write the key pair', defaultIdentityPath())
  .option('--force', 'overwrite an existing file')
  .addHelpText(
    'after',
    '\nGive the file to `serve --identity` / `visit --identity`; give the printed public key to the other side\n' +
      '(`serve --allow KEY` to admit a visitor, `visit --server-key KEY` to pin a server).',
  )
  .action(async (o: { out: string; force?: boolean }) => {
    await identityReady();
    if (fs.existsSync(o.out) && !o.force)
      die(
        null,
        `${o.out} already exists ` +
          '(use --force to replace it; visitors or servers pinning its key would then refuse you)',
        'usage',
      );
    const id = generateIdentity();
    try {
      fs.mkdirSync(path.dirname(o.out), { recursive: true, mode: 0o700 });
      // O_EXCL unless --force, and 0600 from the first byte, not after a chmod.
      fs.writeFileSync(o.out, serializeIdentity(id), { mode: 0o600, flag: o.force ? 'w' : 'wx' });
      fs.chmodSync(o.out, 0o600);
    } catch (e) {
      die(null, `cannot write ${o.out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'identity');
    }
    process.stdout.write(encodePublicKey(id.publicKey) + '\n');
    process.stderr.write(`key pair written to ${o.out}\n`);
  });

/** What the mapping verdict rests on, in words, for the plain-text `peer nat` output. */
function mappingScope(t: { port: boolean; address: boolean }, mapping: string): string {
  if (mapping === 'unknown') return '';
  if (t.port && t.address) return ' (tested across server ports and addresses)';
  if (t.port) return ' (tested across server ports; address dependence NOT tested: the server has one address)';
  return ' (tested across server addresses; port dependence NOT tested)';
}

function defaultIdentityPath(): string {
  const base = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'holepunch', 'identity.json');
}

addLogOptions(program.command('nat'))
  .description("classify this host's NAT against a rendezvous (or any RFC 5389 STUN server)")
  .addHelpText(
    'after',
    '\nThe mapping test needs a server with a second port (a rendezvous has one by default: its UDP port + 1)' +
      ' or a second address (rendezvous --alt-udp); with a second port only, address-dependent mapping' +
      ' cannot be told from endpoint-independent, and the report says so.',
  )
  .addOption(
    new Option('--server <host:port>', 'the rendezvous (its UDP port) or a STUN server')
      .env('PEER_SERVER')
      .makeOptionMandatory(),
  )
  .option('--json', 'print the report as one JSON object on stdout')
  .option('--no-portmap', 'do not ask the default gateway which port mapping protocols it offers')
  .action(async (o: { server: string; json?: boolean; portmap: boolean } & LogOpts) => {
    const log = loggerFrom(o);
    // A server list (a,b) is for failover; any one of them classifies the NAT.
    const server = parseOrDie(log, o.server.split(',')[0].trim(), '--server', '127.0.0.1');
    try {
      // Each family on its own: a name's first A record and first AAAA record (a literal: its family).
      const fams = firstPerFamily(await resolveAll(server.host));
      const detect = (address: string | undefined) =>
        address ? detectNat({ address, port: server.port }).then(ok, fail) : Promise.resolve(null);
      const [v4, v6, portmap] = await Promise.all([
        detect(fams.IPv4),
        detect(fams.IPv6),
        o.portmap ? portmapReport(log) : null,
      ]);
      if (!fams.IPv4 && !fams.IPv6) throw new Error(`cannot resolve ${server.host}`);
      // The top level stays the IPv4 report (its fields are unchanged); a host with IPv6 only gets that one.
      const main = v4?.ok ? v4.report : v6?.ok ? v6.report : null;
      if (!main) throw v4 && !v4.ok ? v4.error : v6 && !v6.ok ? v6.error : new Error('no answer');
      const ipv6 = !v6
        ? null
        : v6.ok
          ? { ...v6.report, ...describeIPv6(v6.report) }
          : { error: (v6.error as Error).message };
      const report = { ...main, ipv6, ...(portmap ? { portmap } : {}) };
      if (o.json) {
        process.stdout.write(JSON.stringify(report) + '\n');
      } else {
        const ep = (e: { address: string; port: number }) => formatHostPort(e);
        const punching =
          report.isPublic || report.mapping === 'endpoint-independent'
            ? 'easy'
            : report.mapping === 'unknown'
              ? 'unknown'
              : 'hard (birthday punching against easy NATs; relay against another hard one)';
        const six = !ipv6
          ? 'no IPv6 address for the server'
          : 'error' in ipv6
            ? `no answer (${ipv6.error})`
            : `${ipv6.summary}; public address ${ep(ipv6.publicAddress)}`;
        const lines = [
          `public address:      ${ep(report.publicAddress)}`,
          `local address:       ${ep(report.localAddress)}`,
          `on a public address: ${report.isPublic ? 'yes' : 'no'}`,
          `mapping:             ${report.mapping}${mappingScope(report.mappingTested, report.mapping)}`,
          `filtering:           ${report.filtering}`,
          `port allocation:     ${report.allocation}${report.step !== undefined ? ` (step ${report.step})` : ''}`,
          `NAT type:            ${report.natType}`,
          `hole punching:       ${punching}`,
          ...(portmap ? [`port mapping:        ${describePortmap(portmap)}`] : []),
          ...report.notes.map((n) => `note: ${n}`),
          `IPv6:                ${six}`,
        ];
        process.stdout.write(lines.join('\n') + '\n');
      }
    } catch (e) {
      die(log, `NAT test against ${formatHostPort(server)} failed: ${(e as Error).message}`, codeOf(e));
    }
  });

type Detected = { ok: true; report: NatReport } | { ok: false; error: unknown };
const ok = (report: NatReport): Detected => ({ ok: true, report });
const fail = (error: unknown): Detected => ({ ok: false, error });

/** Every address `host` resolves to (a literal: itself; none when it does not resolve). */
async function resolveAll(host: string): Promise<string[]> {
  try {
    return (await dnsLookup(host, { all: true })).map((r) => r.address);
  } catch {
    return [];
  }
}

program.parseAsync(process.argv).catch((e) => {
  if (!(e instanceof ExitSignal)) die(null, e as Error);
});
