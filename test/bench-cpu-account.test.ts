import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  breakdown,
  classify,
  parseMachineTicks,
  perGbps,
  snapshot,
  type CpuSnapshot,
} from '../scripts/bench/cpu-account.js';
import { parsePidStat } from '../scripts/bench/procstat.js';

test('classify tells the lab programs apart by comm and command line', () => {
  assert.equal(classify('node', '/usr/bin/node /w/dist/peer/cli.js visit iperf --bind 127.0.0.1:0 '), 'visit');
  assert.equal(classify('node', '/usr/bin/node /w/dist/peer/cli.js serve --name iperf '), 'serve');
  assert.equal(classify('node', '/usr/bin/node /w/dist/rendezvous/cli.js --bind 0.0.0.0:7000 '), 'rendezvous');
  assert.equal(classify('sshd', '/usr/sbin/sshd -D -e -f x '), 'sshd');
  assert.equal(classify('ssh', 'ssh -N -R 0.0.0.0:5301:127.0.0.1:5201 '), 'ssh');
  assert.equal(classify('iperf3', 'iperf3 -s -p 5201 '), 'iperf3');
  assert.equal(
    classify('node', '/usr/bin/node /w/dist/scripts/bench/tools/relay-floor.js relay --a 203.0.113.10:7101 '),
    'floor',
  );
  assert.equal(classify('node', '/usr/bin/node /w/dist/peer/cli.js nat '), null);
  assert.equal(classify('bash', 'bash '), null);
});

test('parsePidStat reads utime + stime past a comm with spaces and parentheses', () => {
  const stat = '4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 40 0 0 20 0 1 0 100 1000 10';
  assert.deepEqual(parsePidStat(stat), { comm: 'we ird) (x)', ticks: 290 });
});

test('breakdown turns two snapshots into cores per program and machine-wide', () => {
  const machine = (busyUser: number, softirq: number, idle: number) =>
    parseMachineTicks(`cpu  ${busyUser} 0 0 ${idle} 0 0 ${softirq} 0 0 0\ncpu0 ...\ncpu1 ...\n`);
  const a: CpuSnapshot = {
    machine: machine(0, 0, 0),
    cores: 2,
    procs: new Map([
      [10, { role: 'visit', ticks: 100 }],
      [11, { role: 'iperf3', ticks: 5 }],
    ]),
  };
  // 2 s on 2 cores at 100 Hz = 400 jiffies: 250 user, 50 softirq, 100 idle.
  const b: CpuSnapshot = {
    machine: machine(250, 50, 100),
    cores: 2,
    procs: new Map([
      [10, { role: 'visit', ticks: 200 }],
      [11, { role: 'iperf3', ticks: 25 }],
      [12, { role: 'serve', ticks: 999 }],
    ]),
  };
  const c = breakdown(a, b, 2, 100);
  assert.equal(c.by_role.visit, 0.5); // 100 jiffies over 2 s
  assert.equal(c.by_role.iperf3, 0.1);
  assert.equal(c.by_role.serve, undefined, 'a process without a baseline does not count');
  assert.deepEqual(c.machine, { busy: 1.5, user: 1.25, system: 0, softirq: 0.25, idle: 0.5 });
  const g = perGbps(c, 500);
  assert.equal(g.busy, 3);
  assert.equal(g.by_role.visit, 1);
  assert.ok(Number.isNaN(perGbps(c, 0).busy));
});

test(
  'snapshot finds this test process and the machine',
  { skip: process.platform !== 'linux' && 'reads /proc' },
  () => {
    const s = snapshot();
    assert.ok(s.cores >= 1);
    assert.ok(s.machine.total > 0 && s.machine.idle <= s.machine.total);
  },
);
