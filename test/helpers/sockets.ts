/** Loopback servers and connected socket pairs for tests, closed when the test ends. */
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

export type TestContext = { after: (fn: () => void) => void };

/** A server on 127.0.0.1 with a free port. */
export async function listen(t: TestContext, opts: net.ServerOpts = {}): Promise<net.Server> {
  const server = net.createServer(opts);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return server;
}

/** A client connected to `server` and the server's accepted socket for it (no 'data' listener on either). */
export async function connectPair(
  t: TestContext,
  server: net.Server,
  clientOpts: Partial<net.NetConnectOpts> = {},
): Promise<{ client: net.Socket; accepted: net.Socket }> {
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect({
    ...clientOpts,
    port: (server.address() as AddressInfo).port,
    host: '127.0.0.1',
  } as net.NetConnectOpts);
  client.on('error', () => {});
  t.after(() => client.destroy());
  await once(client, 'connect');
  const [sock] = await accepted;
  sock.on('error', () => {});
  t.after(() => sock.destroy());
  return { client, accepted: sock };
}
