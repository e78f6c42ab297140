import { test } from 'node:test';
import assert from 'node:assert/strict';
import { goalRows, type GoalKey } from '../scripts/bench/report.js';

const cpuRuns = (role: string, values: number[]) => ({
  runs: values.map((v) => ({ per_gbps: { by_role: { [role]: v } } })),
});

function row(results: Record<string, unknown>, key: GoalKey) {
  const r = goalRows(results).find((x) => x.key === key);
  assert.ok(r, key);
  return r;
}

test('goal rows: direct path against the Node dgram ceiling takes the worse direction', () => {
  const r = row(
    { direct: { ours_mbps: { up: 900, down: 700 }, node_dgram_ceiling_mbps: { received: 1000 } } },
    'direct_vs_dgram_ceiling',
  );
  assert.equal(r.value, 0.7);
  assert.equal(r.holds, false);
  assert.equal(
    row(
      { direct: { ours_mbps: { up: 900, down: 850 }, node_dgram_ceiling_mbps: { received: 1000 } } },
      'direct_vs_dgram_ceiling',
    ).holds,
    true,
  );
});

test('goal rows: the rendezvous CPU per Gbit/s against sshd, median of runs, worse direction', () => {
  const relay = {
    cpu: {
      ours: { up: cpuRuns('rendezvous', [0.1, 0.3, 0.12]), down: cpuRuns('rendezvous', [0.2, 0.2, 0.25]) },
      ssh_r: { up: cpuRuns('sshd', [0.3, 0.3, 0.3]), down: cpuRuns('sshd', [0.16, 0.1, 0.2]) },
    },
  };
  const r = row({ relay }, 'relay_server_cpu_vs_sshd');
  assert.equal(r.value, 0.2 / 0.16); // up: 0.12 / 0.3; down: 0.2 / 0.16, the worse
  assert.equal(r.holds, false);
});

test('goal rows: a section that did not run is "not run", never a number', () => {
  for (const key of ['direct_vs_dgram_ceiling', 'relay_server_cpu_vs_sshd'] as const) {
    const r = row({}, key);
    assert.equal(r.value, null);
    assert.equal(r.holds, null);
  }
});
