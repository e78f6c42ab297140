import type { BenchArgs } from './args.js';
import type { BenchEnv } from './env.js';

/** What every section gets: the running lab, the options, and a place to say what it is doing. */
export interface Ctx {
  env: BenchEnv;
  args: BenchArgs;
  /** reference programs that could not be found or installed */
  missing: Set<string>;
  /** scratch directory for keys, configs and profiles (removed at the end) */
  tmp: string;
  say: (s: string) => void;
}

/** Figures of one section, as written under its key in bench/results.json. */
export type SectionResult = Record<string, unknown>;
