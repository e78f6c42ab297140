/**
 * The relay-path reference: what people do without this tool. An sshd on the
 * rendezvous host (its own temporary config and host key, port 2222), and host b
 * keeping `ssh -N -R 0.0.0.0:5301:127.0.0.1:5201` open to it, so host a reaches
 * b's iperf3 server at rdv:5301. Default ciphers (chacha20-poly1305 first in
 * OpenSSH 9.x).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import type { Lab } from '../netns-lab.js';
import { run, stopProcess } from '../netns-lab.js';
import { sleep } from '../../src/util/backoff.js';

export interface SshForward {
  host: string;
  port: number;
  stop(): Promise<void>;
}

export async function startSshR(lab: Lab, tmp: string, targetPort: number): Promise<SshForward> {
  const dir = `${tmp}/ssh`;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await mkdir('/run/sshd', { recursive: true }); // privilege separation directory sshd insists on
  for (const k of ['host_key', 'id']) {
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', `${dir}/${k}`], { check: true });
  }
  await run('cp', [`${dir}/id.pub`, `${dir}/authorized_keys`], { check: true });
  const host = lab.addr('rdv');
  const sshPort = 2222;
  const fwdPort = 5301;
  await writeFile(
    `${dir}/sshd_config`,
    [
      `Port ${sshPort}`,
      `ListenAddress ${host}`,
      `HostKey ${dir}/host_key`,
      `PidFile ${dir}/sshd.pid`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'GatewayPorts clientspecified',
      'AllowTcpForwarding yes',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  const sshd = lab.spawn('rdv', ['/usr/sbin/sshd', '-D', '-e', '-f', `${dir}/sshd_config`]);
  await sleep(300);
  const client = lab.spawn('b', [
    'ssh',
    '-N',
    '-i',
    `${dir}/id`,
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'ExitOnForwardFailure=yes',
    '-o',
    'ServerAliveInterval=5',
    '-o',
    'LogLevel=ERROR',
    '-p',
    String(sshPort),
    '-R',
    `0.0.0.0:${fwdPort}:127.0.0.1:${targetPort}`,
    `root@${host}`,
  ]);
  const stop = async () => {
    await stopProcess(client, 1000);
    await stopProcess(sshd, 1000);
  };
  for (let i = 0; ; i++) {
    const r = await lab.exec('rdv', ['ss', '-Hltn', `sport = :${fwdPort}`]);
    if (r.stdout.trim()) break;
    if (i > 50 || client.exitCode !== null) {
      await stop();
      throw new Error(`ssh -R did not open port ${fwdPort} on rdv`);
    }
    await sleep(200);
  }
  return { host, port: fwdPort, stop };
}
