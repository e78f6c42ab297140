/**
 * The relay bench's floor (scripts/bench/tools/relay-floor.ts) must move the
 * bytes it is timed on: its three real programs on loopback, two connections
 * at once (as iperf3 opens), every byte echoed back intact through
 * visit end -> relay -> serve end -> echo service and back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import { captureOutput, distPath, stopProcess, waitForEvent } from '../scripts/proc.js';
import { Procs } from './helpers/tunnel.js';

const TOOL = distPath('scripts/bench/tools/relay-floor.js');

/** Sends `size` random bytes, reads until as many came back, and compares them. */
function roundTrip(port: number, size: number, timeoutMs = 30_000): Promise<{ same: boolean; got: number }> {
  return new Promise((resolve, reject) => {
    const sent = crypto.randomBytes(size);
    const got: Buffer[] = [];
    let n = 0;
    const s = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`only ${n} of ${size} bytes came back in ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n < size) return;
      clearTimeout(timer);
      s.destroy();
      resolve({ same: Buffer.concat(got).equals(sent), got: n });
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('connect', () => s.write(sent));
  });
}

test('relay-floor carries bytes intact through its sealed relay, two connections at once', async (t) => {
  const procs = new Procs();
  const children: ChildProcess[] = [];
  t.after(async () => {
    await Promise.all(children.map((c) => stopProcess(c, 2000)));
    await procs.cleanup();
  });
  const start = async (args: string[]) => {
    const child = spawn(process.execPath, [TOOL, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    captureOutput(child);
    children.push(child);
    return waitForEvent(child, 'ready', 10_000);
  };
  const echo = await procs.echoServer();
  const relay = await start(['relay', '--a', '127.0.0.1:0', '--b', '127.0.0.1:0']);
  await start(['serve', '--relay', `127.0.0.1:${String(relay.b)}`, '--local', `127.0.0.1:${echo.port}`]);
  const visit = await start(['visit', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${String(relay.a)}`]);

  const size = 3 * 1024 * 1024 + 12_345; // several 64 KiB records and a ragged end
  const [x, y] = await Promise.all([roundTrip(Number(visit.port), size), roundTrip(Number(visit.port), size)]);
  assert.deepEqual(x, { same: true, got: size });
  assert.deepEqual(y, { same: true, got: size });
  assert.equal(echo.connections(), 2, 'each connection reached the service through its own sealed leg');
});

test('relay-floor refuses to start without its addresses', async (t) => {
  const child = spawn(process.execPath, [TOOL, 'visit', '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  captureOutput(child);
  t.after(() => stopProcess(child, 1000));
  const e = await waitForEvent(child, 'error', 10_000);
  assert.match(String(e.message), /--relay HOST:PORT is required/);
});
