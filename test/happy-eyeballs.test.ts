/**
 * Happy Eyeballs (RFC 8305) on the project's TCP connections
 * (src/util/connect.ts): a name with both families connects over whichever
 * answers, one family unreachable or not. Node's own default is switched off
 * here, so what is tested is the options the project passes, not Node's
 * default (a later Node, or --no-network-family-autoselection, may differ).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type dns from 'node:dns';
import { CONNECTION_ATTEMPT_DELAY_MS, happyEyeballs } from '../src/util/connect.js';

net.setDefaultAutoSelectFamily(false);

/** A resolver that answers `records` for every name, like a name with A and AAAA records. */
function resolver(records: { address: string; family: 4 | 6 }[]): net.LookupFunction {
  return (_host: string, opts: dns.LookupOptions, cb: (...args: never[]) => void) => {
    const done = cb as unknown as (e: null, a: dns.LookupAddress[] | string, f?: number) => void;
    if (opts.all) done(null, records);
    else done(null, records[0].address, records[0].family);
  };
}

async function listen(host: string): Promise<net.Server> {
  const srv = net.createServer((s) => s.end());
  await new Promise<void>((resolve) => srv.listen(0, host, resolve));
  return srv;
}

/** A port with nothing listening on either loopback address (a refused connection: one family unreachable). */
async function closedPort(): Promise<number> {
  const srv = await listen('127.0.0.1');
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

function connect(opts: net.TcpNetConnectOpts): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(opts);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

test('the options turn Happy Eyeballs on with the RFC 8305 attempt delay', () => {
  const o = happyEyeballs({ host: 'rdv.example', port: 7000 });
  assert.equal(o.autoSelectFamily, true);
  assert.equal(o.autoSelectFamilyAttemptTimeout, CONNECTION_ATTEMPT_DELAY_MS);
  assert.equal(CONNECTION_ATTEMPT_DELAY_MS, 250);
});

for (const [up, down] of [
  ['127.0.0.1', '::1'],
  ['::1', '127.0.0.1'],
] as const) {
  test(`a name with both families: ${down} unreachable, connects over ${up}`, async (t) => {
    const srv = await listen(up);
    t.after(() => srv.close());
    const { port } = srv.address() as net.AddressInfo;
    // The unreachable family first, as a resolver that prefers it would sort it.
    const records = [down, up].map((address) => ({ address, family: address.includes(':') ? 6 : 4 }) as const);
    const s = await connect({ ...happyEyeballs({ host: 'dual.test', port }), lookup: resolver(records) });
    t.after(() => s.destroy());
    assert.equal(s.remoteAddress, up);
    const tried = (s as net.Socket & { autoSelectFamilyAttemptedAddresses?: string[] })
      .autoSelectFamilyAttemptedAddresses;
    assert.ok(
      tried?.some((a) => a.startsWith(down === '::1' ? '::1' : down)),
      `tried ${String(tried)}`,
    );
  });
}

test('both families unreachable: the connect fails (no hang)', async () => {
  const port = await closedPort();
  const records = [
    { address: '::1', family: 6 },
    { address: '127.0.0.1', family: 4 },
  ] as const;
  await assert.rejects(connect({ ...happyEyeballs({ host: 'dual.test', port }), lookup: resolver([...records]) }));
});

test('without the options (the default off), the first family alone is tried', async (t) => {
  const srv = await listen('127.0.0.1');
  t.after(() => srv.close());
  const { port } = srv.address() as net.AddressInfo;
  const records = [
    { address: '::1', family: 6 },
    { address: '127.0.0.1', family: 4 },
  ] as const;
  await assert.rejects(connect({ host: 'dual.test', port, lookup: resolver([...records]) }), /ECONNREFUSED/);
});
