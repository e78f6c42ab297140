/**
 * Protocol constants. The values are the ones ikcp.c uses, because a peer
 * running the C implementation derives its behaviour from the same numbers
 * (e.g. the receive window floor must cover the largest fragment count).
 */

/** Bytes in one segment header on the wire. */
export const KCP_OVERHEAD = 24;

/** Segment commands (the `cmd` byte). */
export const enum KcpCmd {
  /** Data segment. */
  Push = 81,
  /** Acknowledges one `sn`; `ts` echoes the acked segment's send time. */
  Ack = 82,
  /** Window probe: "tell me your window" (sent while the remote window is 0). */
  WindowAsk = 83,
  /** Window tell: reply to a probe, or unsolicited when our queue drains. */
  WindowTell = 84,
}

export const CMD_PUSH = 81;
export const CMD_ACK = 82;
export const CMD_WASK = 83;
export const CMD_WINS = 84;

/** Minimum RTO in nodelay mode. */
export const RTO_NODELAY_MIN = 30;
/** Minimum RTO in normal mode. */
export const RTO_NORMAL_MIN = 100;
export const RTO_DEFAULT = 200;
export const RTO_MAX = 60000;

/** Probe flags. */
export const ASK_SEND = 1;
export const ASK_TELL = 2;

export const WND_SND_DEFAULT = 32;
/** Receive window default and floor: a message may have up to this many fragments minus one. */
export const WND_RCV_DEFAULT = 128;
export const MTU_DEFAULT = 1400;
export const MTU_MIN = 50;
export const INTERVAL_DEFAULT = 100;
export const INTERVAL_MIN = 10;
export const INTERVAL_MAX = 5000;
export const DEAD_LINK_DEFAULT = 20;
export const THRESH_INIT = 2;
export const THRESH_MIN = 2;
/** First window probe 7 s after the remote window hits zero, backing off by 1.5x. */
export const PROBE_INIT = 7000;
export const PROBE_LIMIT = 120000;
/** Fast retransmissions allowed per segment before only the RTO timer may resend it. */
export const FASTACK_LIMIT = 5;
