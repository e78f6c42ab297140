/**
 * The ssh ProxyCommand path with a real OpenSSH server and client (Debian
 * packages openssh-server and openssh-client; .ci/run installs them): a
 * throwaway sshd on 127.0.0.1 with its own host key and config, served by
 * `peer serve`, reached by `ssh -o ProxyCommand='peer visit %h --stdio'`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Procs, SECRET, stopProcess } from './helpers/tunnel.js';
import { CLI, captureOutput, outputOf, waitExit } from '../scripts/proc.js';

const SSHD = '/usr/sbin/sshd';
const tools = ['/usr/bin/ssh', '/usr/bin/scp', '/usr/bin/ssh-keygen', SSHD];
const missing = tools.filter((t) => !fs.existsSync(t));
const skip =
  missing.length > 0
    ? `OpenSSH not installed (missing ${missing.join(', ')}): apt-get install openssh-server openssh-client`
    : process.getuid?.() !== 0
      ? 'needs root to run a throwaway sshd'
      : false;

function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  timeoutMs = 30_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  captureOutput(child);
  return waitExit(child, timeoutMs).then(async (code) => {
    if (code === null && child.exitCode === null) await stopProcess(child, 1000);
    return { code, ...outputOf(child) };
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve();
      });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listening on ${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

test(
  'ssh with ProxyCommand=peer visit %h --stdio runs a command; scp copies both ways, sha256 equal',
  { skip },
  async (t) => {
    const p = new Procs();
    t.after(() => p.cleanup());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-ssh-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));

    // Keys and a config of its own: nothing of the host's sshd set-up is used or touched.
    for (const [file, type] of [
      ['host_key', 'ed25519'],
      ['id', 'ed25519'],
    ]) {
      const r = await run('/usr/bin/ssh-keygen', [
        '-q',
        '-t',
        type,
        '-N',
        '',
        '-C',
        'holepunch-test',
        '-f',
        path.join(dir, file),
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    fs.copyFileSync(path.join(dir, 'id.pub'), path.join(dir, 'authorized_keys'));
    fs.chmodSync(path.join(dir, 'authorized_keys'), 0o600);
    const port = await freePort();
    const cfg = path.join(dir, 'sshd_config');
    fs.writeFileSync(
      cfg,
      [
        'ListenAddress 127.0.0.1',
        `HostKey ${path.join(dir, 'host_key')}`,
        'PidFile none',
        'UsePAM no',
        `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password',
        'StrictModes no',
        'Subsystem sftp internal-sftp',
        'LogLevel ERROR',
        '',
      ].join('\n'),
    );
    // sshd insists on its privilege-separation directory (systemd normally creates it).
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const sshd = spawn(SSHD, ['-D', '-e', '-f', cfg, '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    captureOutput(sshd);
    t.after(() => stopProcess(sshd, 2000));
    await waitForPort(port, 10_000).catch((e: Error) => {
      throw new Error(`${e.message}; sshd said: ${outputOf(sshd).stderr}`);
    });

    const rdv = await p.rendezvous();
    const serveSock = path.join(dir, 'serve.sock');
    await p.serve('ssh-home', `127.0.0.1:${port}`, rdv.addr, SECRET, ['--admin', serveSock]);

    const env = { ...process.env, PEER_SERVER: rdv.addr, PEER_SECRET: SECRET, PEER_TOKEN: '' };
    const proxy = `ProxyCommand=${process.execPath} ${CLI.peer} visit %h --stdio --quiet`;
    const sshOpts = [
      '-F',
      '/dev/null',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'BatchMode=yes',
      '-o',
      'LogLevel=ERROR',
      '-i',
      path.join(dir, 'id'),
      '-o',
      proxy,
    ];

    const hello = await run('/usr/bin/ssh', [...sshOpts, 'root@ssh-home', 'echo hello from $(hostname)'], env);
    assert.equal(hello.code, 0, `ssh failed: ${hello.stderr}`);
    assert.equal(hello.stdout.trim(), `hello from ${os.hostname()}`);

    // Without --quiet: on success, nothing of ours reaches the ssh client's stderr (the user's terminal).
    const plain = await run(
      '/usr/bin/ssh',
      [
        ...sshOpts.slice(0, -1),
        `ProxyCommand=${process.execPath} ${CLI.peer} visit %h --stdio`,
        'root@ssh-home',
        'echo plain',
      ],
      env,
    );
    assert.equal(plain.code, 0, `ssh failed: ${plain.stderr}`);
    assert.equal(plain.stdout.trim(), 'plain');
    assert.equal(plain.stderr, '', "visit --stdio printed on the ssh client's stderr");

    // The README's ~/.ssh/config form: server and secret from a config file shared with a
    // long-running peer, whose admin socket and metrics port are taken: the ProxyCommand must not care.
    const cfg2 = path.join(dir, 'peer.toml');
    fs.writeFileSync(
      cfg2,
      `server = "${rdv.addr}"\nsecret = "${SECRET}"\nadmin = "${serveSock}"\nmetrics = "${rdv.addr}"\n`,
    );
    const viaFile = await run(
      '/usr/bin/ssh',
      [
        ...sshOpts.slice(0, -1),
        `ProxyCommand=${process.execPath} ${CLI.peer} visit %h --stdio --quiet --config ${cfg2}`,
        'root@ssh-home',
        'echo via config',
      ],
      { ...process.env, PEER_SERVER: '', PEER_SECRET: '', PEER_TOKEN: '' },
    );
    assert.equal(viaFile.code, 0, `ssh with --config failed: ${viaFile.stderr}`);
    assert.equal(viaFile.stdout.trim(), 'via config');

    // scp up and down: 3 MB of random bytes each way.
    const up = path.join(dir, 'up.bin');
    fs.writeFileSync(up, crypto.randomBytes(3 * 1024 * 1024));
    const remoteCopy = path.join(dir, 'remote.bin');
    const r1 = await run('/usr/bin/scp', [...sshOpts, up, `root@ssh-home:${remoteCopy}`], env, 60_000);
    assert.equal(r1.code, 0, `scp up failed: ${r1.stderr}`);
    assert.equal(sha256(remoteCopy), sha256(up));
    const down = path.join(dir, 'down.bin');
    const r2 = await run('/usr/bin/scp', [...sshOpts, `root@ssh-home:${remoteCopy}`, down], env, 60_000);
    assert.equal(r2.code, 0, `scp down failed: ${r2.stderr}`);
    assert.equal(sha256(down), sha256(up));
  },
);
