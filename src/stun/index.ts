/** STUN (RFC 5389/5780): codec, server, client on a given socket, NAT classification. */
export * from './address.js';
export * from './message.js';
export * from './server.js';
export * from './client.js';
export * from './nat.js';
export * from './allocation.js';
