/**
 * The cluster at scale and under contention: three rendezvous nodes (real
 * processes) on one redis-server, a thousand simulated serve registrations
 * (in-process peers speaking the control protocol with real Ed25519
 * signatures), every name reached from the other nodes; racing claims; junk
 * on the bus. Skipped, with a message, without redis-server.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Redis } from 'ioredis';
import { Procs } from './helpers/tunnel.js';
import { identityReady } from '../src/crypto/identity.js';
import { freePort, percentile, pool, RedisProc, redisMissing, servedBy, SimPeer, until } from './cluster-helpers.js';

const missing = redisMissing();
if (missing) process.stderr.write(`# ${missing}\n`);

const NAMES = 1000;
/** Source addresses for the simulated peers, so no node sees more than its per-IP limit from one of them. */
const SOURCES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 2}`);

function getJson(port: number, path: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as Record<string, unknown>);
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('status request timed out')));
  });
}

describe('rendezvous cluster at scale', { skip: missing ?? false }, () => {
  let redis: RedisProc;
  let procs: Procs;
  let nodes: { port: number; id: string; statusPort: number }[] = [];
  let client: Redis;
  const sims: SimPeer[] = [];

  before(async () => {
    await identityReady();
    redis = await RedisProc.start();
    client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await client.connect();
    procs = new Procs();
    const ids = ['s-a', 's-b', 's-c'];
    nodes = await Promise.all(
      ids.map(async (id) => {
        const statusPort = await freePort();
        const n = await procs.rendezvous([
          '--registry',
          redis.url,
          '--node-id',
          id,
          '--registry-ttl',
          '6',
          '--status',
          `127.0.0.1:${statusPort}`,
        ]);
        return { port: n.port, id, statusPort };
      }),
    );
  });
  after(async () => {
    for (const s of sims) s.close();
    client?.disconnect();
    await procs?.cleanup();
    await redis?.stop();
  });

  test(`${NAMES} simulated serve registrations over 3 nodes, each reachable by name from every node`, async () => {
    const names = Array.from({ length: NAMES }, (_, i) => `sim-${i}`);
    const owner = (i: number) => i % nodes.length;
    const t0 = performance.now();
    const serves = await pool(names, 64, async (_name, i) => {
      const s = await SimPeer.connect(nodes[owner(i)].port, { localAddress: SOURCES[i % SOURCES.length] });
      sims.push(s);
      return s;
    });
    const regReplies = await pool(names, 64, (name, i) => serves[i].register(name));
    const regMs = performance.now() - t0;
    const refused = regReplies.filter((r) => r.type !== 'registered');
    assert.equal(refused.length, 0, `every registration accepted; first refusal: ${JSON.stringify(refused[0])}`);

    // What lives in Redis: one record per name, pointing at the node holding its connection.
    for (let i = 0; i < NAMES; i += 97) {
      const rec = JSON.parse((await client.get(`holepunch:name:${names[i]}`)) ?? 'null') as { node: string } | null;
      assert.equal(rec?.node, nodes[owner(i)].id, `${names[i]} is recorded on its node`);
    }
    let keys = 0;
    let cursor = '0';
    for (let guard = 0; guard < 10_000; guard++) {
      const [next, batch] = await client.scan(cursor, 'MATCH', 'holepunch:name:sim-*', 'COUNT', 500);
      keys += batch.length;
      cursor = next;
      if (cursor === '0') break;
    }
    assert.equal(keys, NAMES);

    // Two visitor connections per node; each name is asked for from both nodes that do not hold it.
    const visitors = await Promise.all(
      nodes.flatMap((n, k) =>
        [0, 1].map((j) => SimPeer.connect(n.port, { localAddress: SOURCES[(k * 2 + j) % SOURCES.length] })),
      ),
    );
    sims.push(...visitors);
    const jobs = names.flatMap((name, i) =>
      [1, 2].map((d) => ({ name, i, from: (owner(i) + d) % nodes.length, pick: i % 2 })),
    );
    const lat: number[] = [];
    const t1 = performance.now();
    const answers = await pool(jobs, 64, async (job) => {
      const v = visitors[job.from * 2 + job.pick];
      const s0 = performance.now();
      const m = await v.connectTo(job.name);
      lat.push(performance.now() - s0);
      // End the session as a peer would, through the visitor's node: it is forwarded to the owning node.
      if (m.type === 'connected') v.fs.send({ type: 'path_report', sid: m.sid, path: 'closed' });
      return m;
    });
    const connectMs = performance.now() - t1;
    const wrong = answers.map((m, k) => ({ m, job: jobs[k] })).filter(({ m, job }) => servedBy(m) !== job.name);
    assert.equal(
      wrong.length,
      0,
      `every connect answered by the right server; first miss: ${JSON.stringify(wrong[0])}`,
    );
    for (let i = 0; i < NAMES; i++)
      assert.equal(serves[i].incoming.length, 2, `${names[i]} got one incoming per visit`);

    // From the owning node itself too (local brokering in a cluster).
    const local = await visitors[owner(7) * 2].connectTo(names[7]);
    assert.equal(servedBy(local), names[7]);
    if (local.type === 'connected')
      visitors[owner(7) * 2].fs.send({ type: 'path_report', sid: local.sid, path: 'closed' });

    // Each node holds its share; the forwarded path_report ended every session on the owning node.
    const ended = await until(
      async () => {
        const st = await Promise.all(nodes.map((n) => getJson(n.statusPort, '/status')));
        return st.every((s) => (s.sessions as unknown[]).length === 0);
      },
      10_000,
      200,
    );
    assert.ok(ended, 'sessions ended through forwarded path_report');
    const st = await Promise.all(nodes.map((n) => getJson(n.statusPort, '/status')));
    const held = st.map((s) => (s.cluster as { names: number }).names);
    assert.deepEqual(held, [334, 333, 333]);

    // One at a time, the brokering round trip itself: through the bus (other node) against local (owning node).
    const seq = async (fromOther: boolean) => {
      const out: number[] = [];
      for (let i = 0; i < 60; i++) {
        const v = visitors[((owner(i) + (fromOther ? 1 : 0)) % nodes.length) * 2 + 1];
        const s0 = performance.now();
        const m = await v.connectTo(names[i]);
        out.push(performance.now() - s0);
        if (m.type === 'connected') v.fs.send({ type: 'path_report', sid: m.sid, path: 'closed' });
      }
      return out.sort((a, b) => a - b);
    };
    const cross = await seq(true);
    const same = await seq(false);
    process.stderr.write(
      `# sequential connect round trip: cross-node p50 ${percentile(cross, 50).toFixed(2)} ` +
        `ms, same node p50 ${percentile(same, 50).toFixed(2)} ms (ratio ` +
        `${(percentile(cross, 50) / percentile(same, 50)).toFixed(2)})\n`,
    );

    lat.sort((a, b) => a - b);
    process.stderr.write(
      `# ${NAMES} registrations over 3 nodes in ${Math.round(regMs)} ms ` +
        `(${Math.round(NAMES / (regMs / 1000))}/s incl. connect); ` +
        `${jobs.length} cross-node connects in ${Math.round(connectMs)} ms, ` +
        `round trip p50 ${percentile(lat, 50).toFixed(1)} ms, ` +
        `p99 ${percentile(lat, 99).toFixed(1)} ms (64 in flight)\n`,
    );
  });

  test('racing claims for one name on three nodes: exactly one key wins, every time', async () => {
    for (let round = 0; round < 5; round++) {
      const name = `contested-${round}`;
      const racers = await Promise.all(
        Array.from({ length: 24 }, (_, i) =>
          SimPeer.connect(nodes[i % nodes.length].port, { localAddress: SOURCES[i % SOURCES.length] }),
        ),
      );
      sims.push(...racers);
      const replies = await Promise.all(racers.map((r) => r.register(name)));
      const winners = replies.filter((r) => r.type === 'registered').length;
      const taken = replies.filter((r) => r.type === 'error' && r.code === 'name_taken').length;
      assert.equal(winners, 1, `round ${round}: one winner`);
      assert.equal(taken, 23, `round ${round}: everyone else refused`);
      const rec = JSON.parse((await client.get(`holepunch:name:${name}`)) ?? 'null') as { key: string } | null;
      const winner = racers[replies.findIndex((r) => r.type === 'registered')];
      assert.equal(
        rec?.key,
        Buffer.from(winner.identity.publicKey).toString('base64'),
        "Redis records the winner's key",
      );
    }
  });

  test('junk and forged messages on the bus are ignored; nodes keep brokering', async () => {
    const junk = [
      '',
      'not json',
      '{}',
      '[1,2]',
      JSON.stringify({ t: 'connect', from: 'x' }),
      JSON.stringify({
        t: 'deliver',
        from: 's-a',
        v: 999_999,
        m: { type: 'punch', sid: 'ab', delayMs: 0, candidates: [] },
      }),
      JSON.stringify({ t: 'gone', from: 'nobody', v: -1 }),
      JSON.stringify({ t: 'moved', from: 'x', name: 'sim-1', reg: 'not-the-reg' }),
      'x'.repeat(100_000),
    ];
    for (const n of nodes) for (const j of junk) await client.publish(`holepunch:bus:${n.id}`, j);
    const v = await SimPeer.connect(nodes[2].port);
    sims.push(v);
    // sim-1 lives on node s-b: the forged "moved" did not make it let go.
    const m = await v.connectTo('sim-1');
    assert.equal(servedBy(m), 'sim-1');
  });
});
