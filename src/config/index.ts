export { loadConfigFile, parseConfig, ConfigError, displayKey } from './load.js';
export { PeerConfig, ServeEntry, VisitEntry, RendezvousConfig, RelayConfig } from './schema.js';
export { keyLines, lineOf } from './lines.js';
export { layered, fromCommandLine } from './layers.js';
