/**
 * The direct-path reference: a wireguard-go tunnel between hosts a and b across
 * the same two cone NATs.
 *
 * What works here: each host runs `wireguard-go -f wgX` in its own namespace
 * (the TUN device is created in the namespace the process runs in; /dev/net/tun
 * is shared). Interface names differ per host (wga, wgb) because the UAPI socket
 * lives in /var/run/wireguard, which all namespaces share. Both sides listen on
 * UDP 51820 and name the other's *public* address (its router's WAN address,
 * port 51820: the cone NATs preserve ports) as endpoint, with persistent
 * keepalive 1 s: both send, each outbound packet opens its own NAT for the
 * other's, and the handshake completes within a couple of keepalives. This is
 * plain simultaneous-open hole punching, with the endpoints known in advance.
 *
 * The `udp` section runs a second pair (its own devices, addresses and
 * ports, see WgSpec) whose endpoint on a is `peer visit --proto udp`'s port:
 * wireguard-go through our tunnel.
 */
import type { Lab } from '../netns-lab.js';
import { run } from '../netns-lab.js';
import { sleep } from '../../src/util/backoff.js';

export interface WgTunnel {
  /** b's address inside the tunnel (iperf3 -c this from a) */
  addrB: string;
  stop(): Promise<void>;
}

const PORT = 51820;

/** One side of a wireguard-go pair. */
export interface WgSide {
  node: 'a' | 'b';
  dev: string;
  /** Address inside the tunnel (a /24). */
  addr: string;
  listenPort: number;
  /** Where this side sends to; null: none, it learns the other's from its first handshake. */
  endpoint: string | null;
  /** Interface MTU (wireguard-go's default 1420 when absent). */
  mtu?: number;
}

/** The reference pair: both sides on 51820, each naming the other's public address. */
function directSpec(lab: Lab): [WgSide, WgSide] {
  return [
    { node: 'a', dev: 'wga', addr: '10.99.0.1', listenPort: PORT, endpoint: `${lab.publicAddr('b')}:${PORT}` },
    { node: 'b', dev: 'wgb', addr: '10.99.0.2', listenPort: PORT, endpoint: `${lab.publicAddr('a')}:${PORT}` },
  ];
}

async function genKeys(): Promise<{ priv: string; pub: string }> {
  const priv = (await run('wg', ['genkey'], { check: true })).stdout.trim();
  const pub = (await run('wg', ['pubkey'], { input: priv + '\n', check: true })).stdout.trim();
  return { priv, pub };
}

export async function startWireguard(
  lab: Lab,
  tmp: string,
  spec: [WgSide, WgSide] = directSpec(lab),
): Promise<WgTunnel> {
  const hosts = [
    { ...spec[0], keys: await genKeys() },
    { ...spec[1], keys: await genKeys() },
  ];
  const procs = hosts.map((h) =>
    lab.spawn(h.node, ['wireguard-go', '-f', h.dev], {
      env: { ...process.env, WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error' },
    }),
  );
  const stop = async () => {
    for (const h of hosts) await lab.exec(h.node, ['ip', 'link', 'del', h.dev]);
    for (const p of procs) p.kill('SIGTERM');
  };
  try {
    for (const h of hosts) {
      for (let i = 0; ; i++) {
        if ((await lab.exec(h.node, ['ip', 'link', 'show', h.dev])).code === 0) break;
        if (i > 50) throw new Error(`wireguard-go did not create ${h.dev} in ${h.node} (is /dev/net/tun usable?)`);
        await sleep(100);
      }
    }
    for (const [i, h] of hosts.entries()) {
      const other = hosts[1 - i];
      const keyFile = `${tmp}/wg-${h.dev}.key`;
      await run('sh', ['-c', `umask 077; cat > ${keyFile}`], { input: h.keys.priv + '\n', check: true });
      await lab.exec(
        h.node,
        [
          'wg',
          'set',
          h.dev,
          'listen-port',
          String(h.listenPort),
          'private-key',
          keyFile,
          'peer',
          other.keys.pub,
          'allowed-ips',
          `${other.addr}/32`,
          ...(h.endpoint ? ['endpoint', h.endpoint, 'persistent-keepalive', '1'] : []),
        ],
        { check: true },
      );
      await lab.exec(h.node, ['ip', 'addr', 'add', `${h.addr}/24`, 'dev', h.dev], { check: true });
      if (h.mtu) await lab.exec(h.node, ['ip', 'link', 'set', h.dev, 'mtu', String(h.mtu)], { check: true });
      await lab.exec(h.node, ['ip', 'link', 'set', h.dev, 'up'], { check: true });
    }
    // A completed handshake on both sides proves the punched path (no ping binary needed).
    for (let i = 0; ; i++) {
      const hs = await Promise.all(hosts.map((h) => lab.exec(h.node, ['wg', 'show', h.dev, 'latest-handshakes'])));
      if (hs.every((r) => Number(r.stdout.trim().split(/\s+/)[1] ?? 0) > 0)) break;
      if (i > 50)
        throw new Error(`no handshake across the NATs: ${(await lab.exec('a', ['wg', 'show', hosts[0].dev])).stdout}`);
      await sleep(200);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { addrB: hosts[1].addr, stop };
}
