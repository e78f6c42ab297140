/**
 * Port prediction for NATs that allocate ports in sequence (issue 21). Pure:
 * what to send at each tick of a 'predict' round; DirectPathManager only
 * carries it out (direct.ts `predictLoop`). See docs/PROTOCOL.md "Port prediction".
 *
 * Ports are counted in *slots* of the NAT's step: slot n of a side is port
 * `first + n * step`, where `first` is its predicted next port (last observed
 * port + step, plus what other hosts are expected to have taken since).
 *
 * Sequential x sequential ("sweep" and "fan", the visitor sweeps): each side
 * pays exactly W new mappings per sub-round, so both know where the other's
 * counter stands, up to the ports other hosts took (the drift, dV and dS >= 0):
 *  - the visitor, from its main socket, probes the server's slots 0..W-1 in
 *    order: its k-th probe leaves from its own slot dV + k;
 *  - the server opens W extra sockets and, in order, sends one probe from each
 *    to the visitor's slot W-1: its j-th socket leaves from its slot dS + j.
 * The visitor's probe k = W-1-dV and the server's socket j = k - dS form one
 * flow seen from both NATs (each is the other's reverse), so the hole opens
 * whenever dV <= W-1 and dV + dS <= W-1, for every value in that range (no
 * parity condition, unlike two opposite sweeps). Each later sub-round starts
 * W slots further on, for both.
 *
 * Sequential x easy (cone, full cone, public: one mapping for every
 * destination): the easy side probes a window of slots around the prediction
 * from its one mapping ("window"); the sequential side probes the easy side's
 * candidates as in a plain round ("candidates"): its one new mapping toward
 * the easy side lands in the window.
 */

// Budgets (issue 21: bounded cost). A predict round costs less than a birthday round
// (PUNCH_BUDGET in strategy.ts: 256 sockets, 1000 probes/s for 15 s).
/** Slots per sweep and sockets per fan: the drift (ports other hosts take) a sub-round tolerates. */
export const PREDICT_WINDOW = 64;
/** Easy side facing a sequential NAT: slots probed below and above the prediction. */
export const PREDICT_EASY_BELOW = 4;
export const PREDICT_EASY_ABOVE = 160;
/** A sub-round (a new sweep and fan, W slots further on) starts this often. */
export const PREDICT_SUBROUND_MS = 3000;
/** Sub-rounds per round: the drift grows with every one, so few are worth it. */
export const PREDICT_MAX_SUBROUNDS = 4;
/** Probes of the current sub-round are sent again this often (the same flows: no new ports). */
export const PREDICT_RESEND_MS = 250;
/** Probes per second, all of a round's sockets together; a sub-round's first burst may spend PREDICT_BURST at once. */
export const PREDICT_RATE = 1000;
export const PREDICT_BURST = 2 * PREDICT_EASY_ABOVE;
/** Probes per round, at most (a birthday round sends up to 15 000 sprayed probes). */
export const PREDICT_MAX_PROBES = 6000;
/** How long a predict round runs: punching gives up within 15 s, the relay carries the session meanwhile. */
export const PREDICT_ROUND_MS = 15_000;

/** This side's part in a predict round. */
export type PredictRole = 'sweep' | 'fan' | 'window' | 'candidates';

/** The 'predict' punch plan (strategy.ts PunchPlan). */
export interface PredictPlan {
  kind: 'predict';
  role: PredictRole;
  /** The peer's public IP, where the predicted ports are. */
  address: string;
  /** The peer's predicted next port (slot 0) and its NAT's step; 0 for 'candidates' (not used). */
  first: number;
  step: number;
  /** One line for the punch_start log: what is predicted, and why this role. */
  why: string;
}

/**
 * The peer's next port as predicted now (pure): last observed port plus one
 * step, plus `rate` (ports per second other hosts take, when the peer could
 * measure it) times the age of the observation, in whole steps.
 */
export function predictNextPort(
  nat: { lastPort?: number; step?: number; rate?: number },
  ageMs: number,
): number | null {
  if (nat.lastPort === undefined || nat.step === undefined) return null;
  const drift = Math.round(((nat.rate ?? 0) * Math.max(0, ageMs)) / 1000);
  return nat.lastPort + nat.step * (1 + drift);
}

/** Progress of one predict round (pure data, advanced by predictTick). */
export interface PredictRun {
  started: number;
  /** Sub-round whose first burst was sent (-1: none yet). */
  subRound: number;
  lastSend: number;
  /** Probes sent this round. */
  sent: number;
  /** Token bucket for PREDICT_RATE. */
  tokens: number;
  tokensAt: number;
}

export function newPredictRun(started: number): PredictRun {
  return { started, subRound: -1, lastSend: -Infinity, sent: 0, tokens: PREDICT_BURST, tokensAt: started };
}

/** What to send at one tick. */
export interface PredictActions {
  /** Ports on plan.address to probe from the main socket, in this order. */
  ports: number[];
  /** Probe plan.address:port from `sockets` extra sockets, in order (the fan); null: none. */
  fan: { port: number; sockets: number } | null;
  /** Probe the peer's candidates from the main socket, as a plain round does. */
  candidates: boolean;
  /** Which sub-round these belong to, and whether it is its first burst (new mappings). */
  subRound: number;
  burst: boolean;
}

const validPort = (p: number) => Number.isInteger(p) && p >= 1 && p <= 65535;

/** Slot n of the peer for sub-round r (pure). */
function slot(plan: PredictPlan, r: number, n: number): number {
  return plan.first + plan.step * (r * PREDICT_WINDOW + n);
}

/** The probes of sub-round `r` in the order they must leave (pure). */
export function subRoundProbes(plan: PredictPlan, r: number): Pick<PredictActions, 'ports' | 'fan' | 'candidates'> {
  switch (plan.role) {
    case 'sweep': {
      const ports: number[] = [];
      for (let k = 0; k < PREDICT_WINDOW; k++) ports.push(slot(plan, r, k));
      return { ports: ports.filter(validPort), fan: null, candidates: false };
    }
    case 'fan': {
      const port = slot(plan, r, PREDICT_WINDOW - 1);
      return { ports: [], fan: validPort(port) ? { port, sockets: PREDICT_WINDOW } : null, candidates: false };
    }
    case 'window': {
      const ports: number[] = [];
      // Nearest the prediction first: the likely slots go out before the rate cap bites.
      for (let n = 0; n < PREDICT_EASY_ABOVE; n++) ports.push(slot(plan, 0, n));
      for (let n = 1; n <= PREDICT_EASY_BELOW; n++) ports.push(slot(plan, 0, -n));
      return { ports: ports.filter(validPort), fan: null, candidates: true };
    }
    case 'candidates':
      return { ports: [], fan: null, candidates: true };
  }
}

/**
 * One tick of a predict round (pure): the sub-round the clock is in, its first
 * burst when it starts (all of it: its order is what makes the flows meet),
 * then resends every PREDICT_RESEND_MS, within the probe rate and the round's
 * probe budget. Sub-rounds go by time from the round's start, so both peers,
 * started together by the rendezvous, move on together.
 */
export function predictTick(plan: PredictPlan, run: PredictRun, now: number): { run: PredictRun; act: PredictActions } {
  const r = Math.min(PREDICT_MAX_SUBROUNDS - 1, Math.floor(Math.max(0, now - run.started) / PREDICT_SUBROUND_MS));
  const tokens = Math.min(PREDICT_BURST, run.tokens + ((now - run.tokensAt) * PREDICT_RATE) / 1000);
  const burst = r !== run.subRound;
  const due = burst || now - run.lastSend >= PREDICT_RESEND_MS;
  const none: PredictActions = { ports: [], fan: null, candidates: false, subRound: r, burst: false };
  if (!due) return { run: { ...run, tokens, tokensAt: now }, act: none };
  const p = subRoundProbes(plan, r);
  const want = p.ports.length + (p.fan?.sockets ?? 0);
  const left = PREDICT_MAX_PROBES - run.sent;
  let ports = p.ports;
  let fan = p.fan;
  if (burst) {
    // A first burst goes whole or not at all: its order is what makes the flows meet. It may
    // overdraw the bucket (it is at most PREDICT_BURST); the resends then wait for tokens.
    if (want > left) return { run: { ...run, tokens, tokensAt: now }, act: { ...none, candidates: p.candidates } };
  } else {
    const allowed = Math.max(0, Math.min(left, Math.floor(tokens)));
    ports = ports.slice(0, allowed);
    const rest = allowed - ports.length;
    fan = fan && rest > 0 ? { ...fan, sockets: Math.min(fan.sockets, rest) } : null;
  }
  const spent = ports.length + (fan?.sockets ?? 0);
  return {
    run: {
      ...run,
      subRound: r,
      lastSend: now,
      sent: run.sent + spent,
      tokens: tokens - spent,
      tokensAt: now,
    },
    act: { ports, fan, candidates: p.candidates, subRound: r, burst },
  };
}
