/**
 * Interoperability with a standard client: coturn's turnutils_stunclient
 * (Debian/Ubuntu package `coturn`), and our client against coturn's
 * turnserver. Skips, saying why, when they are not installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile as execFileCb, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import dgram from 'node:dgram';
import { StunServer } from '../src/stun/server.js';
import { stunBinding } from '../src/stun/client.js';
import { detectNat } from '../src/stun/nat.js';

const BIN = 'turnutils_stunclient';

function findBinary(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return null;
}

const bin = findBinary(BIN);
const skip =
  bin === null
    ? `${BIN} not found on PATH: install the Debian/Ubuntu package "coturn" to run this interop test`
    : false;

/** Runs the client with a hard time limit: on a protocol mismatch it can block forever. */
function runClient(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFileCb(bin!, args, { timeout: 5000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${BIN} ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout + stderr);
    });
  });
}

/** Source ports of the requests the server socket received. */
function sourcePorts(s: dgram.Socket): number[] {
  const ports: number[] = [];
  s.on('message', (_m, rinfo) => ports.push(rinfo.port));
  return ports;
}

test('turnutils_stunclient against the single-address server prints the mapped address we saw', { skip }, async (t) => {
  const srv = new StunServer({ primary: { address: '127.0.0.1', port: 0 } });
  await srv.listen();
  t.after(() => srv.close());
  const seen = sourcePorts(srv.sockets[0]);
  const out = await runClient(['-p', String(srv.address().port), '127.0.0.1']);
  assert.ok(seen.length >= 1, 'the server received nothing');
  assert.match(out, new RegExp(`UDP reflexive addr: 127\\.0\\.0\\.1:${seen[0]}\\b`), out);
});

test(
  'turnutils_stunclient RFC 5780 run against 127.0.0.1 + .2: OTHER-ADDRESS, RESPONSE-ORIGIN from the other one',
  { skip },
  async (t) => {
    const srv = new StunServer({
      primary: { address: '127.0.0.1', port: 0 },
      alternate: { address: '127.0.0.2', port: 0 },
    });
    await srv.listen();
    t.after(() => srv.close());
    const [pp, , , aa] = srv.endpoints;
    const seen = sourcePorts(srv.sockets[0]);
    const out = await runClient(['-f', '-p', String(pp.port), '127.0.0.1']);
    assert.match(out, new RegExp(`UDP reflexive addr: 127\\.0\\.0\\.1:${seen[0]}\\b`), out);
    assert.match(out, new RegExp(`Other addr: : 127\\.0\\.0\\.2:${aa.port}\\b`), out);
    assert.match(out, new RegExp(`Response origin: : 127\\.0\\.0\\.1:${pp.port}\\b`), out);
    // Its CHANGE-REQUEST (IP and port) was answered from the alternate socket.
    assert.match(out, new RegExp(`Response origin: : 127\\.0\\.0\\.2:${aa.port}\\b`), out);
    assert.doesNotMatch(out, /error/i, out);
  },
);

const turnserver = findBinary('turnserver');
const skipServer =
  turnserver === null
    ? 'turnserver not found on PATH: install the Debian/Ubuntu package "coturn" to run this interop test'
    : false;

test(
  'our client and detectNat against coturn turnserver (RFC 5780 on 127.0.0.1 + 127.0.0.2)',
  { skip: skipServer, timeout: 20_000 },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'stun-interop-'));
    // turnserver listens on PORT and PORT+1 on both IPs; pick a random pair in a quiet range.
    const port = 40000 + 2 * Math.floor(Math.random() * 5000);
    const child = spawn(
      turnserver!,
      [
        '-n',
        '--stun-only',
        '--no-cli',
        '--no-tls',
        '--no-dtls',
        '--listening-ip=127.0.0.1',
        '--listening-ip=127.0.0.2',
        `--listening-port=${port}`,
        `--pidfile=${join(dir, 'pid')}`,
        `--userdb=${join(dir, 'db')}`,
        '--log-file=stdout',
        '--simple-log',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    t.after(async () => {
      if (child.exitCode === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await gone;
      }
      rmSync(dir, { recursive: true, force: true });
    });
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    t.after(() => new Promise<void>((r) => s.close(() => r())));

    // Wait for it to come up: the client retransmits, so a few tries cover startup.
    const server = { address: '127.0.0.1', port };
    let first = null;
    for (let i = 0; i < 10 && first === null && child.exitCode === null; i++) {
      first = await stunBinding(s, server, { timeoutMs: 500, rtoMs: 100 }).catch(() => null);
    }
    assert.ok(first, `turnserver did not answer:\n${log}`);
    assert.deepEqual(first.mapped, { address: '127.0.0.1', port: s.address().port, family: 'IPv4' });
    assert.match(first.software ?? '', /coturn/i);
    assert.equal(first.otherAddress?.address, '127.0.0.2');
    const changed = await stunBinding(s, server, { changeIp: true, changePort: true });
    assert.deepEqual(changed.source, first.otherAddress);

    const report = await detectNat(server, { probeTimeoutMs: 1000 });
    assert.equal(report.mapping, 'endpoint-independent');
    assert.equal(report.filtering, 'endpoint-independent');
    assert.equal(report.isPublic, true);
    assert.equal(report.natType, 'open');
  },
);
