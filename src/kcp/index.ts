/**
 * Our KCP, wire-compatible with skywind3000's ikcp.c. See docs/KCP.md.
 */
export { Kcp, MTU_MAX } from './kcp.js';
export type { KcpOptions, KcpSnapshot } from './kcp.js';
export { KcpError, kcpErrorName } from './errors.js';
export { Slab } from './slab.js';
export { readConv, decodeSegmentHeader, encodeSegmentHeader, read32, write32, writeHeader } from './codec.js';
export type { SegmentHeader } from './codec.js';
export {
  KCP_OVERHEAD,
  KcpCmd,
  CMD_PUSH,
  CMD_ACK,
  CMD_WASK,
  CMD_WINS,
  MTU_DEFAULT,
  WND_RCV_DEFAULT,
  WND_SND_DEFAULT,
  RTO_NODELAY_MIN,
} from './constants.js';
