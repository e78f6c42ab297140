/**
 * The reference programs come from Debian packages. When one is missing the
 * bench installs it (as root, with apt-get) or says exactly how to.
 */
import { run } from '../netns-lab.js';

const NEEDS: { bin: string; pkg: string; for: string }[] = [
  { bin: 'iperf3', pkg: 'iperf3', for: 'every throughput figure' },
  { bin: 'wireguard-go', pkg: 'wireguard-go', for: 'the direct-path reference' },
  { bin: 'wg', pkg: 'wireguard-tools', for: 'the direct-path reference' },
  { bin: 'sshd', pkg: 'openssh-server', for: 'the relay-path reference' },
  { bin: 'ssh', pkg: 'openssh-client', for: 'the relay-path reference' },
  { bin: 'ssh-keygen', pkg: 'openssh-client', for: 'the relay-path reference' },
];

async function have(bin: string): Promise<boolean> {
  const r = await run('sh', ['-c', `command -v ${bin} || test -x /usr/sbin/${bin}`], { timeoutMs: 5000 });
  return r.code === 0;
}

/** Installs what is missing when allowed and possible; returns the programs still missing. */
export async function ensureReferences(install: boolean, say: (s: string) => void): Promise<Set<string>> {
  const missing = [];
  for (const n of NEEDS) if (!(await have(n.bin))) missing.push(n);
  if (missing.length === 0) return new Set();
  const pkgs = [...new Set(missing.map((m) => m.pkg))];
  const isRoot = process.getuid?.() === 0;
  if (install && isRoot) {
    say(`installing ${pkgs.join(' ')} (apt-get, --no-install-recommends) ...`);
    // --no-install-recommends: wireguard-tools otherwise recommends a kernel module package and a kernel image.
    const r = await run('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], {
      timeoutMs: 300_000,
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
    if (r.code !== 0)
      say(
        `apt-get failed (exit ${r.code}); try: apt-get update && apt-get install -y ` +
          `--no-install-recommends ${pkgs.join(' ')}\n${r.stderr.trim().slice(-500)}`,
      );
  } else {
    say(`missing ${pkgs.join(' ')}: install with  sudo apt-get install -y --no-install-recommends ${pkgs.join(' ')}`);
  }
  const still = new Set<string>();
  for (const n of missing) {
    if (!(await have(n.bin))) {
      still.add(n.bin);
      say(`  ${n.bin} (${n.pkg}) is missing: ${n.for} will be skipped`);
    }
  }
  return still;
}
