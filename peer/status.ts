import type { PeerStatus, TunnelStatus } from './app.js';

/** `peer status` as text: one line per entry, then a table of live tunnels. */
export function formatStatus(s: PeerStatus): string {
  const out: string[] = [`peer pid ${s.pid}, up ${duration(s.uptimeS)}, AEAD ${s.aead}`];
  for (const e of s.entries) {
    const what = e.kind === 'serve' ? `serve ${e.name} -> ${e.local}` : `visit ${e.name} on ${e.bind}`;
    const state =
      e.kind === 'serve'
        ? e.up
          ? 'registered'
          : 'not registered (reconnecting)'
        : e.up
          ? 'tunnel open'
          : 'no tunnel (opens on the next connection)';
    if (e.udp) {
      const u = e.udp;
      const drops = Object.entries(u.drops)
        .filter(([, n]) => n > 0)
        .map(([r, n]) => `${r} ${n}`);
      out.push(
        `  ${what} (udp) via ${e.server}: ${state}, ${u.flows} flow(s); ` +
          `datagrams out ${u.datagramsSent} (${bytes(u.bytesSent)}), ` +
          `in ${u.datagramsReceived} (${bytes(u.bytesReceived)}); ` +
          `drops: ${drops.length ? drops.join(', ') : 'none'}`,
      );
    } else out.push(`  ${what} via ${e.server}: ${state}, ${e.streams} connection(s)`);
  }
  if (!s.tunnels.length) {
    out.push('no live tunnels');
    return out.join('\n') + '\n';
  }
  const head = [
    'NAME',
    'KIND',
    'PATH',
    'REMOTE',
    'RTT',
    'MTU',
    'SENT',
    'RECEIVED',
    'STREAMS',
    'UPTIME',
    'NAT (local/peer)',
    'IPv6 (local)',
    'RESUMES',
  ];
  const rows = s.tunnels.map((t) => [
    t.name,
    t.kind,
    t.path ?? '-',
    t.remote ?? '-',
    t.rttMs === null ? '-' : `${t.rttMs} ms`,
    t.pathMtu ? `${t.pathMtu.mtu} (${t.pathMtu.state})` : '-',
    bytes(t.bytesSent),
    bytes(t.bytesReceived),
    String(t.streams),
    duration(t.uptimeS),
    `${natName(t.nat.local)}/${natName(t.nat.peer)}`,
    v6Name(t.nat.ipv6),
    String(t.resumes ?? 0),
  ]);
  out.push('', ...table([head, ...rows]));
  for (const t of s.tunnels) if (t.mapped) out.push(`  ${t.name} ${t.sid}: mapped candidate ${t.mapped}`);
  return out.join('\n') + '\n';
}

function natName(n: TunnelStatus['nat']['local']): string {
  return n ? n.type : '?';
}

/** Our IPv6 in a word: no NAT (the usual: a global address behind a stateful firewall), NAT66, or none. */
function v6Name(n: TunnelStatus['nat']['ipv6'] | undefined): string {
  if (!n) return '-';
  return n.nat === 'none' ? 'no NAT' : n.nat === 'translated' ? 'NAT66' : '?';
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd(),
  );
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

export function duration(s: number): string {
  const t = Math.floor(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${t % 60}s`;
  if (t < 86400) return `${Math.floor(t / 3600)}h${Math.floor((t % 3600) / 60)}m`;
  return `${Math.floor(t / 86400)}d${Math.floor((t % 86400) / 3600)}h`;
}
