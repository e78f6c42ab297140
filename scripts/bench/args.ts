/** Command-line options of `npm run bench` (pure parsing). */

export const SECTIONS = [
  'direct',
  'relay',
  'connect',
  'latency',
  'streams',
  'idle',
  'rendezvous',
  'loss',
  'pmtu',
  'udp',
  'profile',
  'punch',
] as const;
export type Section = (typeof SECTIONS)[number];

export interface BenchArgs {
  /** runs per figure (median is reported) */
  runs: number;
  /** sections to run; all but 'profile' and 'punch' (about 15 minutes alone) by default */
  only: Section[];
  /** iperf3 duration per run, seconds */
  seconds: number;
  /** write bench/results.json (off with --no-write) */
  write: boolean;
  /** install missing reference tools with apt-get (off with --no-install) */
  install: boolean;
  /** punch section: trials per NAT pair (default PUNCH_TRIALS, 20) */
  trials?: number;
}

export const USAGE =
  'usage: npm run bench -- [--quick] [--runs N] [--only SECTION[,SECTION]] [--seconds S] ' +
  '[--no-write] [--no-install] [--trials N]\n' +
  `  sections: ${SECTIONS.join(', ')} (profile and punch run only when named)
  --quick      one run per figure, shorter transfers
  --trials N   punch section: trials per NAT pair (default 20)
  --only       run these sections; results.json keeps the other sections' figures from earlier runs`;

export function parseBenchArgs(argv: readonly string[]): BenchArgs {
  const a: BenchArgs = {
    runs: 3,
    only: SECTIONS.filter((s) => s !== 'profile' && s !== 'punch'),
    seconds: 5,
    write: true,
    install: true,
  };
  let quick = false;
  let runsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${f} needs a value`);
      return v;
    };
    if (f === '--quick') quick = true;
    else if (f === '--no-write') a.write = false;
    else if (f === '--no-install') a.install = false;
    else if (f === '--runs') {
      a.runs = positiveInt(value(), f);
      runsGiven = true;
    } else if (f === '--seconds') a.seconds = positiveInt(value(), f);
    else if (f === '--trials') a.trials = positiveInt(value(), f);
    else if (f === '--only')
      a.only = value()
        .split(',')
        .map((s) => checkSection(s.trim()));
    else if (f.startsWith('--only='))
      a.only = f
        .slice(7)
        .split(',')
        .map((s) => checkSection(s.trim()));
    else throw new Error(`unknown option ${f}\n${USAGE}`);
  }
  if (quick) {
    if (!runsGiven) a.runs = 1;
    a.seconds = Math.min(a.seconds, 3);
  }
  return a;
}

function positiveInt(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} expects a positive integer, got "${v}"`);
  return n;
}

function checkSection(s: string): Section {
  if (!(SECTIONS as readonly string[]).includes(s))
    throw new Error(`unknown section "${s}" (one of ${SECTIONS.join(', ')})`);
  return s as Section;
}
