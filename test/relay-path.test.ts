/** RelayPath against a relay on loopback that answers in one TCP write. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { RelayPath } from '../src/session/relay-path.js';
import { encodeFrame, FrameKind } from '../src/wire/frame.js';
import { encodeControl } from '../src/wire/control.js';

test('a datagram that shares a TCP read with relay_ready reaches the receiver set after open() resolves', async (t) => {
  const first = Buffer.from('first datagram after pairing');
  const second = Buffer.from('second');
  const server = net.createServer((sock) => {
    sock.once('data', () => {
      // relay_ready and the peer's first datagrams in one write, so one read on the other end.
      sock.write(
        Buffer.concat([
          encodeControl({ type: 'relay_ready' }),
          encodeFrame(FrameKind.Datagram, first),
          encodeFrame(FrameKind.Datagram, second),
        ]),
      );
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const path = await RelayPath.open('127.0.0.1', port, 'ticket', 5000);
  t.after(() => path.close());
  const got: string[] = [];
  path.deliverTo((d, from) => {
    assert.equal(from, path);
    got.push(Buffer.from(d).toString());
    return true;
  });
  assert.deepEqual(got, [first.toString(), second.toString()]);
  assert.equal(path.dropped, 0);
});
