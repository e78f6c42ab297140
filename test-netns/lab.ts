// Thin helpers for netns tests on top of scripts/netns-lab.ts: start a lab that
// is torn down when the test ends (also on failure), skip cleanly where
// namespaces are impossible, and drive the UDP probe.

import type { ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';
import { CLI, Lab, missingPrerequisites, waitForEvent, type Topology } from '../scripts/netns-lab.js';
import type { ProbeReport } from '../scripts/lab-probe.js';

export * from '../scripts/netns-lab.js';
export type { ProbeReport, ProbeResult } from '../scripts/lab-probe.js';

/** Ports the reflector listens on, on both rdv addresses. */
export const REFLECT_PORTS = [3478, 3479] as const;

/**
 * Build a lab for this test and register its teardown with t.after. Returns
 * null (and marks the test skipped, saying why) when the machine cannot run
 * namespaces: the caller just returns.
 */
export async function startLab(t: TestContext, topology: Topology, prefix?: string): Promise<Lab | null> {
  const why = await missingPrerequisites();
  if (why) {
    t.skip(why);
    return null;
  }
  const lab = await Lab.up({ topology, prefix });
  t.after(() => lab.down());
  return lab;
}

/** Run a command in a node and parse its stdout as one JSON value; throws with stderr on failure. */
export async function execJson<T>(lab: Lab, node: string, cmd: string[], timeoutMs = 20_000): Promise<T> {
  const r = await lab.exec(node, cmd, { timeoutMs });
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} in ${node} -> exit ${r.code}: ${r.stderr.trim()}`);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`${cmd.join(' ')} in ${node}: not JSON: ${r.stdout.slice(0, 500)}`);
  }
}

/** Run the lab probe (scripts/lab-probe.ts) in a node and return its JSON report. */
export function probe<T = ProbeReport>(lab: Lab, node: string, args: string[]): Promise<T> {
  return execJson<T>(lab, node, [process.execPath, CLI.probe, ...args]);
}

/** Start the UDP reflector on rdv (both addresses x REFLECT_PORTS); resolves once it is bound. */
export async function startReflector(lab: Lab): Promise<ChildProcess> {
  const args = [
    'reflect',
    ...lab.addrs('rdv').flatMap((a) => ['--ip', a]),
    ...REFLECT_PORTS.flatMap((p) => ['--port', String(p)]),
  ];
  const child = lab.spawnCli('rdv', 'probe', args);
  await waitForEvent(child, 'ready', 10_000);
  return child;
}
