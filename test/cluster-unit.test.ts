/**
 * The pure parts of the cluster: Redis records and bus messages parsed without
 * ever throwing, ticket routing, URL checks; the peer's server list and
 * failover order. No Redis needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  checkRegistryUrl,
  encodeRecord,
  newNameRecord,
  parseNameRecord,
  parseNodeRecord,
  redactUrl,
  ticketRoute,
} from '../rendezvous/cluster/records.js';
import { parseBus } from '../rendezvous/cluster/bus.js';
import { issueTicket, newSessionId } from '../src/wire/ticket.js';
import { FatalError, ServerList, withFailover } from '../peer/control-client.js';
import type { HostPort } from '../src/util/addr.js';

test('name records round-trip; anything else reads as absent', () => {
  const r = newNameRecord('node-a', 'a2V5');
  assert.deepEqual(parseNameRecord(encodeRecord(r)), r);
  assert.notEqual(newNameRecord('node-a', 'a2V5').reg, r.reg, 'each registration gets its own reg');
  for (const bad of [null, undefined, '', 'null', '[]', '{"node":1}', '{"node":"a","key":"k"}', '{', '"str"'])
    assert.equal(parseNameRecord(bad), null, String(bad));
  assert.equal(parseNodeRecord('{"node":"a","advertise":"h:1"}'), null, 'a node record needs its instance');
});

test('bus messages: valid ones parse, junk (including random bytes) gives null and never throws', () => {
  const ok = parseBus(JSON.stringify({ t: 'gone', from: 'a', v: 3 }));
  assert.deepEqual(ok, { t: 'gone', from: 'a', v: 3 });
  const connect = {
    t: 'connect',
    from: 'a',
    v: 1,
    addr: '127.0.0.1:5',
    rtt: null,
    m: { type: 'connect', reqId: 'r', name: 'svc', hs: 'aGk=', mode: 'relay' },
  };
  assert.equal(parseBus(JSON.stringify(connect))?.t, 'connect');
  assert.equal(
    parseBus(JSON.stringify({ ...connect, m: { ...connect.m, name: 'bad name!' } })),
    null,
    'inner control message validated too',
  );
  assert.equal(parseBus(JSON.stringify({ t: 'gone', from: 'a', v: -1 })), null);
  assert.equal(parseBus(JSON.stringify({ t: 'unknown', from: 'a' })), null);
  let seed = 1;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(rnd() * 200);
    const text = Buffer.from(Array.from({ length: len }, () => Math.floor(rnd() * 256))).toString('latin1');
    assert.doesNotThrow(() => parseBus(text));
  }
});

test('ticket routing reads the session id and role without the key; malformed tickets route nowhere', () => {
  const key = crypto.randomBytes(32);
  const sid = newSessionId();
  assert.deepEqual(ticketRoute(issueTicket(key, sid, 'visitor')), { sid, role: 'visitor' });
  assert.deepEqual(ticketRoute(issueTicket(key, sid, 'server')), { sid, role: 'server' });
  for (const bad of ['', 'AAAA', Buffer.alloc(29, 7).toString('base64url'), Buffer.alloc(30).toString('base64url')])
    assert.equal(ticketRoute(bad), null);
});

test('registry URLs: redis:// with an optional numeric database; passwords never shown', () => {
  assert.equal(checkRegistryUrl('redis://127.0.0.1:6379/0'), null);
  assert.equal(checkRegistryUrl('rediss://user:pw@r.example:6380/2'), null);
  assert.match(checkRegistryUrl('http://x:1/0') ?? '', /only redis/);
  assert.match(checkRegistryUrl('redis://x:1/db') ?? '', /database number/);
  assert.match(checkRegistryUrl('not a url') ?? '', /expected redis/);
  assert.doesNotMatch(redactUrl('redis://user:s3cret@h:1/0'), /s3cret/);
  assert.doesNotMatch(checkRegistryUrl('http://user:s3cret@h:1/0') ?? '', /s3cret/);
});

const hp = (port: number): HostPort => ({ host: '127.0.0.1', port });

test('server list: preferred first, moves past a lost node, stays on one that works', () => {
  const [a, b, c] = [hp(1), hp(2), hp(3)];
  const l = new ServerList([a, b, c]);
  assert.deepEqual(l.order(), [a, b, c]);
  l.lost(a);
  assert.deepEqual(l.order(), [b, c, a]);
  l.worked(c);
  assert.deepEqual(l.order(), [c, a, b]);
  l.lost(a); // not the one in use: no change
  assert.deepEqual(l.order(), [c, a, b]);
  // A node that brokered live sessions is the only one that can resume them: it stays first.
  l.lost(c, true);
  assert.deepEqual(l.order(), [c, a, b]);
  const one = new ServerList([a]);
  one.lost(a);
  assert.deepEqual(one.order(), [a], 'a single address stays that address');
  assert.throws(() => new ServerList([]));
});

test('failover: next node on connection errors and service_unavailable, not on a final answer', async () => {
  const [a, b, c] = [hp(1), hp(2), hp(3)];
  const tried: number[] = [];
  const got = await withFailover(new ServerList([a, b, c]), (s) => {
    tried.push(s.port);
    if (s.port === 1) return Promise.reject(new Error('connection refused'));
    if (s.port === 2) return Promise.reject(new FatalError('registry unreachable', 'service_unavailable'));
    return Promise.resolve(s.port);
  });
  assert.equal(got, 3);
  assert.deepEqual(tried, [1, 2, 3]);

  tried.length = 0;
  await assert.rejects(
    withFailover(new ServerList([a, b]), (s) => {
      tried.push(s.port);
      return Promise.reject(new FatalError('the name is taken', 'name_taken'));
    }),
    (e: unknown) => e instanceof FatalError && e.code === 'name_taken',
  );
  assert.deepEqual(tried, [1], 'name_taken is final');

  const single = new Error('cannot reach the rendezvous at 127.0.0.1:1: connection refused');
  await assert.rejects(
    withFailover(new ServerList([a]), async () => Promise.reject(single)),
    (e) => e === single,
    'one address: its error, unchanged',
  );
  await assert.rejects(
    withFailover(new ServerList([a, b]), async (s) => Promise.reject(new Error(`down ${s.port}`))),
    /no rendezvous could take us: down 1; down 2/,
  );
});
