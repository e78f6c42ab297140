'use strict';
// The compiled addon, or an error if it did not build (the caller falls back to node:dgram).
module.exports = require('./build/Release/udp_batch.node');
