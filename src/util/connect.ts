import type net from 'node:net';

/**
 * Happy Eyeballs (RFC 8305) for every outgoing TCP connection of the
 * project (control channel, relay legs): a name with A and AAAA records is
 * tried on both families, interleaved, the next attempt starting when the
 * previous one has not connected within this delay, and the first to connect
 * wins. One family that is unreachable (no route, or a firewall that drops
 * it silently) costs this delay, not a connect timeout. RFC 8305 section 5
 * recommends 250 ms, which is also Node's default (`autoSelectFamily`);
 * it is set here explicitly so that neither a Node default nor
 * `--no-network-family-autoselection` changes it.
 */
export const CONNECTION_ATTEMPT_DELAY_MS = 250;

/** Options for net.connect() to `host`:`port` with Happy Eyeballs on. */
export function happyEyeballs(to: { host: string; port: number }): net.TcpNetConnectOpts {
  return {
    host: to.host,
    port: to.port,
    autoSelectFamily: true,
    autoSelectFamilyAttemptTimeout: CONNECTION_ATTEMPT_DELAY_MS,
  };
}
