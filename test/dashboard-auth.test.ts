import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { checkAccess, isLoopbackAddress, startObserveServer, TOKEN_COOKIE } from '../src/metrics/http.js';

test('loopback is 127.0.0.0/8, ::1 and mapped 127.x; anything else is not', () => {
  for (const a of ['127.0.0.1', '127.0.0.2', '127.255.0.9', '::1', '::ffff:127.0.0.1', 'localhost'])
    assert.equal(isLoopbackAddress(a), true, a);
  for (const a of ['0.0.0.0', '::', '10.0.0.5', '192.0.2.2', '::ffff:10.0.0.1', '128.0.0.1', 'fe80::1'])
    assert.equal(isLoopbackAddress(a), false, a);
});

test('the access rule: token on every path when set; without one, the dashboard only on loopback', () => {
  const req = (url: string, headers: Record<string, string> = {}) => ({ url, headers });
  // No token: as before for /metrics and /status anywhere; pages on loopback only.
  assert.deepEqual(checkAccess(req('/status'), { loopback: false, isPage: false }), { ok: true });
  assert.deepEqual(checkAccess(req('/'), { loopback: true, isPage: true }), { ok: true });
  const off = checkAccess(req('/'), { loopback: false, isPage: true });
  assert.equal(off.ok, false);
  // A token: required everywhere, loopback or not.
  const token = 's3cr3t-token';
  for (const loopback of [true, false]) {
    for (const isPage of [true, false]) {
      assert.equal(checkAccess(req('/'), { token, loopback, isPage }).ok, false);
      assert.equal(checkAccess(req('/?token=nope'), { token, loopback, isPage }).ok, false);
      assert.deepEqual(checkAccess(req('/', { authorization: `Bearer ${token}` }), { token, loopback, isPage }), {
        ok: true,
      });
    }
  }
  // ?token= once: a cookie that is not the token, and a redirect without it.
  const once = checkAccess(req(`/?every=1000&token=${token}`), { token, loopback: false, isPage: true });
  assert.ok(once.ok && 'setCookie' in once);
  assert.equal(once.redirect, '/?every=1000');
  assert.ok(!once.setCookie.includes(token));
  assert.match(once.setCookie, /HttpOnly/);
  const cookie = once.setCookie.split(';')[0];
  assert.ok(cookie.startsWith(`${TOKEN_COOKIE}=`));
  assert.deepEqual(
    checkAccess(req('/status', { cookie: `a=b; ${cookie}` }), { token, loopback: false, isPage: false }),
    {
      ok: true,
    },
  );
  assert.equal(
    checkAccess(req('/status', { cookie: `${TOKEN_COOKIE}=${token}` }), { token, loopback: false, isPage: false }).ok,
    false,
  );
});

test('a request target that is no URL (`//`) gets an answer, and the server keeps serving', async () => {
  // Before, `new URL('//')` threw outside any catch and the rejection ended the process.
  const srv = await startObserveServer({ listen: { host: '127.0.0.1', port: 0 }, token: 't0ken', status: () => ({}) });
  try {
    const raw = (target: string) =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect(srv.port, '127.0.0.1', () => s.end(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`));
        let got = '';
        s.on('data', (d: Buffer) => (got += d.toString()));
        s.on('close', () => resolve(got));
        s.on('error', reject);
      });
    for (const target of ['//', '///', '//[']) assert.match(await raw(target), /^HTTP\/1\.1 401 /, target);
    assert.match(await raw('/status?token=t0ken'), /^HTTP\/1\.1 303 /, 'still serving');
  } finally {
    await srv.close();
  }
});
