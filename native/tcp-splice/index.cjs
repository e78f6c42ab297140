'use strict';
// The compiled addon, or an error if it did not build (the relay then forwards in JavaScript).
module.exports = require('./build/Release/tcp_splice.node');
