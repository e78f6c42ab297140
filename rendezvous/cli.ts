#!/usr/bin/env node
import { Command, Option } from 'commander';
import { addLogOptions, die, ExitSignal, loggerFrom, onShutdown } from '../src/util/cli-common.js';
import { formatHostPort, parseHostPort, type HostPort } from '../src/util/addr.js';
import { familyOf } from '../src/stun/address.js';
import type { StunResponderStats } from '../src/stun/server.js';
import { RendezvousServer } from './server.js';
import { checkRegistryUrl, defaultNodeId, NODE_ID_RE, RedisCluster } from './cluster/index.js';
import { ConfigError, layered, loadConfigFile, RendezvousConfig } from '../src/config/index.js';
import { createRendezvousMetrics, natLabel } from './metrics.js';
import { TrafficHistory } from './traffic.js';
import { dashboardPages } from './dashboard/index.js';
import { startObserveServer } from '../src/metrics/http.js';
import { CodedError, listenError } from '../src/util/errors.js';
import type { Logger } from '../src/util/log.js';
import { versionLine } from '../src/util/version.js';

const program = new Command('rendezvous')
  .description(
    'The public meeting point: peers register names, visitors are introduced to them, and ' +
      'traffic is relayed when no direct path can be punched. It never sees plaintext.',
  )
  .addHelpText(
    'after',
    `
Examples:
  rendezvous                                   # TCP and UDP 7000 on all addresses (UDP 7001 too: STUN), relay embedded
  rendezvous --listen 0.0.0.0:7000 --alt-udp 198.51.100.8:7001 --token "$T"
  rendezvous --config /etc/holepunch/rendezvous.toml --metrics 127.0.0.1:9100 # dashboard at /, Prometheus, /status JSON
  rendezvous --metrics 10.0.0.5:9100 --metrics-token "$MT"   # off loopback: open http://10.0.0.5:9100/?token=$MT once
  relay --listen 0.0.0.0:7001 --key "$K" & rendezvous --relay relay.example.com:7001 --relay-key "$K"
  rendezvous --registry redis://10.0.0.5:6379/0 --node-id rdv-a --advertise 10.0.0.11:7000   # one node of a cluster (docs/CLUSTER.md)

Open TCP and UDP on the --listen port, and UDP on the second STUN port (--listen port + 1, e.g. 7001,
or --alt-port; or the --alt-udp address) in your firewall.`,
  )
  .option('--listen <host:port>', 'TCP control channel and embedded relay', '0.0.0.0:7000')
  .option(
    '--udp <host:port>',
    'UDP for STUN and punch coordination (default: the --listen address and port); ' +
      'one address per family: 203.0.113.10:7000,[2001:db8::10]:7000',
  )
  .option(
    '--alt-udp <host:port>',
    'a second UDP address (another IP of this host) so peers can classify their NAT (RFC 5780); ' +
      'one per family, matching --udp',
  )
  .option(
    '--alt-port <port|off>',
    'a second UDP port on the --udp address that answers STUN, so peers behind a symmetric NAT can tell ' +
      '(default: the UDP port + 1; 0 or off: none; ignored with --alt-udp)',
  )
  .addOption(new Option('--token <token>', 'require this token from every peer').env('RENDEZVOUS_TOKEN'))
  .option('--relay <host:port>', 'use a standalone relay (see `relay --help`) instead of the embedded one')
  .addOption(new Option('--relay-key <key>', 'key shared with the standalone relay').env('RELAY_KEY'))
  .addOption(
    new Option(
      '--registry <url>',
      'share names and sessions with other nodes through Redis: redis://HOST:PORT/DB (default: this node alone, in memory)',
    ).env('RENDEZVOUS_REGISTRY'),
  )
  .option('--node-id <id>', "this node's name in the cluster (default: hostname plus a random suffix)")
  .option(
    '--advertise <host:port>',
    'where other nodes reach this node (its relay) in a cluster (default: the --listen address)',
  )
  .option(
    '--registry-ttl <seconds>',
    'cluster: a name (and a node) lapses this long after its last refresh; refreshed every third of it',
    '15',
  )
  .option(
    '--config <file>',
    'TOML config file (keys are these option names; flags and environment variables override it)',
  )
  .option('--max-conns-per-ip <n>', 'limit: control connections from one IP address', '256')
  .option('--max-connections <n>', 'limit: control connections in total', '20000')
  .option('--max-names-per-conn <n>', 'limit: names one serve connection may register', '16')
  .option('--max-sessions-per-conn <n>', 'limit: sessions one visitor connection may open', '256')
  .option('--max-sessions <n>', 'limit: sessions brokered at once', '100000')
  .option('--max-memory <mb>', 'limit: refuse new connections and sessions above this resident memory', '1024')
  .option('--relay-rate <mbit>', 'limit: relay bandwidth per session and direction in Mbit/s (0: unlimited)', '0')
  .option('--handshake-timeout <s>', 'limit: close a connection that has not said hello after this long', '10')
  .option('--idle-timeout <s>', 'limit: close a control connection silent for this long (peers ping every 20 s)', '90')
  .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics and status JSON at /status')
  .addOption(
    new Option(
      '--metrics-token <token>',
      'require this token on the --metrics listener (dashboard, /metrics, /status); ' +
        'needed for the dashboard off loopback',
    ).env('RENDEZVOUS_METRICS_TOKEN'),
  )
  .option('--status <host:port>', 'serve the read-only status JSON at http://HOST:PORT/status (also on --metrics)')
  .version(versionLine('rendezvous'), '-V, --version', 'print the package version and the protocol version it speaks')
  .showHelpAfterError('(run with --help for usage)');
addLogOptions(program);

program.action(async (_o: unknown, cmd: Command) => {
  let file: RendezvousConfig | null = null;
  let configError: ConfigError | null = null;
  const flags = cmd.opts<{ config?: string }>();
  if (flags.config) {
    try {
      file = loadConfigFile(flags.config, RendezvousConfig);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      configError = e;
    }
  }
  // Flags, then environment variables, then the file, then defaults.
  const pick = <T>(key: string, fileKey: keyof RendezvousConfig) =>
    layered<T>(cmd, key, { top: file?.[fileKey] as T | undefined });
  const o = {
    listen: pick<string>('listen', 'listen')!,
    udp: pick<string>('udp', 'udp'),
    altUdp: pick<string>('altUdp', 'alt-udp'),
    altPort: pick<string | number>('altPort', 'alt-port'),
    token: pick<string>('token', 'token'),
    relay: pick<string>('relay', 'relay'),
    relayKey: pick<string>('relayKey', 'relay-key'),
    metrics: pick<string>('metrics', 'metrics'),
    metricsToken: pick<string>('metricsToken', 'metrics-token'),
    status: pick<string>('status', 'status'),
  };
  const log = loggerFrom({
    logFormat: pick('logFormat', 'log-format'),
    logLevel: pick('logLevel', 'log-level'),
    quiet: pick('quiet', 'quiet'),
  });
  if (configError) return die(log, configError);
  let listen, udp, altUdp, udpOther, relay, metrics, status;
  try {
    listen = parseHostPort(o.listen, '0.0.0.0', '--listen');
    // One address per family: `--udp 203.0.113.10:7000,[2001:db8::10]:7000`, `--alt-udp` likewise.
    const udps = o.udp ? perFamily(o.udp, listen.host, '--udp') : [];
    const alts = o.altUdp ? perFamily(o.altUdp, listen.host, '--alt-udp') : [];
    udp = udps[0];
    const main = familyOf(udp?.host ?? listen.host);
    const altOf = (fam: string | null) => alts.find((a) => familyOf(a.host) === fam);
    altUdp = alts.length === 1 && udps.length < 2 ? alts[0] : altOf(main);
    if (udps[1]) udpOther = { udp: udps[1], altUdp: altOf(familyOf(udps[1].host)) };
    const used = [altUdp, udpOther?.altUdp].filter(Boolean).length;
    if (used < alts.length)
      throw new Error('--alt-udp names an address of a family that --udp does not (give --udp one address per family)');
    relay = o.relay ? parseHostPort(o.relay, '127.0.0.1', '--relay') : undefined;
    metrics = o.metrics ? parseHostPort(o.metrics, '127.0.0.1', '--metrics') : undefined;
    status = o.status ? parseHostPort(o.status, '127.0.0.1', '--status') : undefined;
  } catch (e) {
    return die(log, (e as Error).message, 'usage');
  }
  const altPort = parseAltPort(o.altPort, udp?.port ?? listen.port);
  if (typeof altPort === 'string') return die(log, altPort, 'usage');
  if (altUdp && o.altPort !== undefined && altPort !== altUdp.port)
    return die(
      log,
      '--alt-port and --alt-udp both name the second STUN port: give one (--alt-udp HOST:PORT has its own)',
      'usage',
    );
  if (relay && !o.relayKey) die(log, '--relay needs --relay-key (the same key the relay was started with)', 'usage');
  const limits = limitsFrom(log, (key, fileKey) => pick<string | number>(key, fileKey as keyof RendezvousConfig));
  const cluster = clusterFrom(
    {
      registry: pick<string>('registry', 'registry'),
      nodeId: pick<string>('nodeId', 'node-id'),
      advertise: pick<string>('advertise', 'advertise'),
      registryTtl: String(pick<string | number>('registryTtl', 'registry-ttl') ?? '15'),
    },
    listen.host,
    log,
  );
  const server = new RendezvousServer({
    host: listen.host,
    port: listen.port,
    udp,
    altUdp,
    udpOther,
    altPort,
    token: o.token,
    log,
    relay: relay ? { host: relay.host, port: relay.port, key: o.relayKey! } : undefined,
    cluster,
    ...limits,
  });
  const observers: { close(): Promise<void> }[] = [];
  onShutdown(log, async () => {
    await Promise.all(observers.map((x) => x.close()));
    await server.close();
  });
  try {
    const addr = await server.listen();
    const stun = server.stuns.flatMap((s) => s.endpoints.map((e) => formatHostPort(e)));
    log.info(
      'ready',
      `rendezvous listening on ${formatHostPort(addr)}, STUN on udp ` +
        `${stun.join(', ')}${relay ? '' : ' (relay embedded)'}`,
      {
        address: addr.address,
        port: addr.port,
        listen: formatHostPort(addr),
        udp: stun,
        relay: relay ? formatHostPort(relay) : 'embedded',
        ...(cluster ? { node: cluster.nodeId, registry: cluster.registryUp ? 'up' : 'down' } : {}),
      },
    );
    const started = Date.now();
    const traffic = new TrafficHistory(server);
    observers.push({ close: () => Promise.resolve(traffic.close()) });
    const statusJson = () => rendezvousStatus(server, started, traffic, cluster);
    if (metrics) {
      const m = await startObserveServer({
        listen: metrics,
        registry: createRendezvousMetrics(server),
        status: statusJson,
        pages: dashboardPages(),
        token: o.metricsToken,
      });
      observers.push(m);
      const where = formatHostPort(m);
      log.info(
        'metrics',
        `dashboard at http://${where}/, metrics at http://${where}/metrics, status at http://${where}/status`,
        { listen: where, dashboard: `http://${where}/`, tokenRequired: !!o.metricsToken },
      );
      if (!m.loopback && !o.metricsToken)
        log.warn(
          'metrics_open',
          `the metrics listener ${where} is not on loopback and has no --metrics-token: /metrics and /status` +
            ' are open to whoever reaches it, and the dashboard is refused (set --metrics-token)',
          { listen: where },
        );
    }
    if (status) {
      const st = await startObserveServer({ listen: status, status: statusJson });
      observers.push(st);
      const where = formatHostPort(st);
      log.info('status', `status at http://${where}/status`, { listen: where });
    }
  } catch (e) {
    if (e instanceof ExitSignal) return;
    die(log, startFailure(e, o.listen));
  }
});

/**
 * Why the server could not start, as a coded error. Our own listeners throw
 * CodedErrors. A system error (it has a `syscall`) comes straight from the TCP
 * listen or the cluster registry. The server words its UDP (STUN) listen failure
 * itself, keeping the errno in `code` but no `syscall`: that message is passed on.
 */
function startFailure(e: unknown, listen: string): CodedError {
  if (e instanceof CodedError) return e;
  const err = e as NodeJS.ErrnoException;
  if (!err.syscall && err.code)
    return new CodedError(err.code === 'EADDRINUSE' ? 'address_in_use' : 'listen_failed', err.message);
  if (err.code === 'EADDRINUSE') return listenError(err, listen);
  return new CodedError(err.syscall === 'listen' ? 'listen_failed' : 'internal', `cannot start: ${err.message}`, {
    cause: e,
  });
}

/**
 * --alt-port / `alt-port`: undefined (default: UDP port + 1), false (0 or "off": none) or a port;
 * a string is the error message.
 */
/** `HOST:PORT[,HOST:PORT]`: at most one address per family (pure but for the error). */
function perFamily(value: string, defaultHost: string, what: string): HostPort[] {
  const list = value.split(',').map((v) => parseHostPort(v, defaultHost, what));
  const fams = list.map((h) => familyOf(h.host) ?? 'name');
  if (list.length > 2 || new Set(fams).size !== fams.length || (fams.includes('name') && list.length > 1))
    throw new Error(`invalid ${what} "${value}": one address, or one IPv4 and one IPv6 address`);
  return list;
}

function parseAltPort(raw: string | number | undefined, udpPort: number): number | false | undefined | string {
  if (raw === undefined) return undefined;
  const text = String(raw).trim().toLowerCase();
  if (text === 'off' || text === '0') return false;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535)
    return `invalid --alt-port "${raw}": expected a port from 1 to 65535, or 0 / off for none`;
  if (n === udpPort && udpPort !== 0) return `invalid --alt-port ${n}: it must differ from the UDP port (${udpPort})`;
  return n;
}

/** Limit options: whole numbers within sane bounds, named in the error when not. */
const LIMITS = [
  ['maxConnsPerIp', 'max-conns-per-ip', 1, 1_000_000, 1],
  ['maxConnections', 'max-connections', 1, 10_000_000, 1],
  ['maxNamesPerConn', 'max-names-per-conn', 1, 100_000, 1],
  ['maxSessionsPerConn', 'max-sessions-per-conn', 1, 1_000_000, 1],
  ['maxSessions', 'max-sessions', 1, 100_000_000, 1],
  ['maxMemoryMb', 'max-memory', 64, 1_000_000, 1],
  ['relayRate', 'relay-rate', 0, 1_000_000, 1_000_000 / 8],
  ['handshakeTimeoutMs', 'handshake-timeout', 1, 3600, 1000],
  ['idleTimeoutMs', 'idle-timeout', 5, 86_400, 1000],
] as const;

function limitsFrom(
  log: Logger,
  pick: (key: string, fileKey: string) => string | number | undefined,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [opt, flag, min, max, scale] of LIMITS) {
    const camel = flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
    const raw = pick(camel, flag);
    if (raw === undefined) continue;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max)
      die(log, `invalid --${flag} "${raw}": expected a number from ${min} to ${max}`, 'usage');
    out[opt] = Math.round(n * scale);
  }
  return out;
}

interface ClusterFlags {
  registry?: string;
  nodeId?: string;
  advertise?: string;
  registryTtl: string;
}

/**
 * --registry and its companions: a RedisCluster, or undefined
 * for a single in-memory node. Bad values end the process.
 */
function clusterFrom(f: ClusterFlags, listenHost: string, log: Logger): RedisCluster | undefined {
  if (!f.registry) {
    if (f.nodeId || f.advertise) die(log, '--node-id and --advertise only apply with --registry', 'usage');
    return undefined;
  }
  const bad = checkRegistryUrl(f.registry);
  if (bad) die(log, bad, 'usage');
  const nodeId = f.nodeId ?? defaultNodeId();
  if (!NODE_ID_RE.test(nodeId))
    die(log, `invalid --node-id "${nodeId}": use 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit`, 'usage');
  const ttl = Number(f.registryTtl);
  if (!Number.isFinite(ttl) || ttl < 1 || ttl > 3600)
    die(log, `invalid --registry-ttl "${f.registryTtl}": expected seconds between 1 and 3600`, 'usage');
  let advertise;
  try {
    advertise = f.advertise ? parseHostPort(f.advertise, listenHost, '--advertise') : undefined;
  } catch (e) {
    return die(log, (e as Error).message, 'usage');
  }
  return new RedisCluster({ url: f.registry, nodeId, advertise, ttlMs: ttl * 1000, log });
}

/**
 * What the read-only /status endpoint (and the dashboard) shows: peers, names
 * with their NAT type and time online, each brokered session with its path,
 * endpoints, bytes and rate, the relay, traffic over 15 minutes, the cluster.
 * No secret, token, ticket or key is in it.
 */
async function rendezvousStatus(
  server: RendezvousServer,
  started: number,
  traffic: TrafficHistory,
  cluster: RedisCluster | undefined,
) {
  const snap = server.snapshot();
  const stun = sumStats(server.stuns.map((s) => s.responder.stats));
  const now = Date.now();
  const seconds = (ms: number) => Math.round(ms / 100) / 10;
  return {
    uptimeS: seconds(now - started),
    peers: snap.peers,
    names: snap.names.map((n) => ({
      ...n,
      natType: n.nat ? natLabel(n.nat) : 'unknown',
      onlineS: n.since === null ? null : seconds(now - n.since),
    })),
    sessions: snap.sessions.map((s) => ({
      ...s,
      visitor: { ...s.visitor, natType: natLabel(s.visitor.nat) },
      server: { ...s.server, natType: natLabel(s.server.nat) },
      traffic: traffic.session(s.sid, s.startedAt, now),
    })),
    traffic: traffic.status(),
    relay: server.relay
      ? {
          embedded: true,
          sessions: server.relay.sessionCount,
          pending: server.relay.pendingCount,
          bytes: server.relay.bytesForwarded,
        }
      : { embedded: false },
    stun: stun ? { ...stun } : null,
    limitsHit: server.stats.limitsHit ?? 0,
    ...(server.opts.cluster ? { cluster: server.opts.cluster.status() } : {}),
    ...(cluster
      ? {
          clusterNodes: (await cluster.nodes()).map((n) => ({
            ...n,
            upS: n.startedAt ? seconds(Math.max(0, now - n.startedAt)) : null,
          })),
        }
      : {}),
  };
}

program.parseAsync(process.argv).catch((e) => {
  if (!(e instanceof ExitSignal)) die(null, e as Error);
});

/** STUN counters of every family's server, summed (null: no STUN). */
function sumStats(all: StunResponderStats[]): StunResponderStats | null {
  if (!all.length) return null;
  const out: StunResponderStats = { requests: 0, successes: 0, errors: 0, ignored: 0 };
  for (const st of all) for (const k of Object.keys(out) as (keyof StunResponderStats)[]) out[k] += st[k];
  return out;
}
