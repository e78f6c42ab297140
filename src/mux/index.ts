export { Mux, MUX_BASE_WINDOW, type MuxOptions, type MuxProtocolError } from './mux.js';
export { MuxStream } from './stream.js';
export { type MuxStreamError, resetReasonName } from './errors.js';
export { MuxResetReason } from '../wire/mux-frame.js';
