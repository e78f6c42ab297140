/** A description of the machine a run happened on (results are only comparable on the same one). */
import os from 'node:os';
import { loadAverage } from './procstat.js';

export interface Machine {
  cpus: number;
  cpu_model: string;
  mem_total_mb: number;
  node: string;
  kernel: string;
  date: string;
  load_average_start: number[];
  load_average_end?: number[];
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpu_model: cpus[0]?.model.trim() ?? 'unknown',
    mem_total_mb: Math.round(os.totalmem() / 1024 / 1024),
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    date: new Date().toISOString(),
    load_average_start: loadAverage(),
  };
}
