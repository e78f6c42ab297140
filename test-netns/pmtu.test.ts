// Path MTU (issue 17) with the real binaries across real NATs: a small MTU
// on the server's uplink that drops bigger frames silently (a black hole,
// no ICMP), one with ICMP (PPPoE 1492), the bottleneck going away mid-session
// and coming mid-transfer. Every transfer is an echo through the tunnel
// (visitor -> server -> visitor), checked byte for byte with sha256, so both
// directions cross the small link; each side searches its own sending
// direction and logs `pmtu` events. Cases that share a topology share one
// lab, in order (the raise timer is set short with --pmtu-raise-interval).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { distPath, eventsOf, execJson, startLab, waitForEvent } from './lab.js';
import { startTunnelLab, uniquePrefix, type LogEvent, type TunnelLab } from './helpers.js';

const MB = 1024 * 1024;
/** The largest UDP payload a 1280-byte IPv4 link carries. */
const FITS_1280 = 1280 - 28;
/** Raise timer for these tests, seconds: a grown-back path is seen well within a test's patience. */
const RAISE_S = 3;
const PMTU_ARGS = ['--pmtu-raise-interval', String(RAISE_S)];

const sizeOf = (e: LogEvent | undefined) => (e ? Number(e.new) : NaN);
const lastPmtu = (tl: TunnelLab, who: 'visit' | 'serve') => tl.events('pmtu', who).at(-1);

/** The session went direct once and never left it. */
function assertStayedDirect(tl: TunnelLab, why: string): void {
  const seq = tl.pathSequence();
  const first = seq.indexOf('direct');
  assert.ok(first >= 0, `${why}: never direct (${seq.join(' -> ')})\n${tl.dump()}`);
  assert.deepEqual(seq.slice(first), ['direct'], `${why}: left the direct path (${seq.join(' -> ')})\n${tl.dump()}`);
  assert.equal(tl.events('direct_stalled').length + tl.events('direct_stalled', 'serve').length, 0, 'stalled');
}

async function exact(tl: TunnelLab, bytes: number, what: string): Promise<void> {
  const r = await tl.transfer(bytes, { timeoutMs: 240_000 });
  assert.ok(r.ok, `${what}: transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
  assert.equal(r.gotBytes, bytes, what);
  assert.equal(r.got, r.sent, `${what}: sha256 differs`);
}

/** Waits until `who`'s latest `pmtu` event says `ok` (its size in use), polling its log; bounded by `ms`. */
async function waitSize(
  tl: TunnelLab,
  who: 'visit' | 'serve',
  ok: (n: number) => boolean,
  ms: number,
): Promise<number> {
  await waitForEvent(tl[who], (o) => o.event === 'pmtu' && ok(Number(o.new)), ms).catch(() => undefined);
  return sizeOf(lastPmtu(tl, who));
}

// Exact and direct; grows back when the bottleneck goes; survives a drop mid-transfer.
test('path MTU 1280 black hole on the server side', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: 'cone', b: { type: 'cone', mtu: 1280, mtuMode: 'blackhole' } },
    { prefix: uniquePrefix('pmtu'), serveArgs: PMTU_ARGS, visitArgs: PMTU_ARGS },
  );
  if (!tl) return;
  await tl.waitPath('direct', 25_000).catch((e: Error) => assert.fail(`no direct path: ${e.message}\n${tl.dump()}`));

  await t.test('50 MB each way through the black hole: exact, the session stays direct', async () => {
    await exact(tl, 50 * MB, 'black hole 1280');
    assertStayedDirect(tl, 'black hole 1280');
    // Each side found its own sending direction's size: no more than the link carries.
    for (const who of ['visit', 'serve'] as const) {
      const size = sizeOf(lastPmtu(tl, who));
      assert.ok(size <= FITS_1280, `${who}: path MTU ${size} > ${FITS_1280}\n${tl.dump()}`);
      assert.ok(size >= 1200, `${who}: path MTU ${size} below base`);
    }
  });

  await t.test('the bottleneck goes away: the size grows back within the raise timer', async () => {
    const mark = { visit: tl.mark('visit'), serve: tl.mark('serve') };
    await tl.lab.setMtu('rb', 0);
    for (const who of ['visit', 'serve'] as const) {
      const grown = await waitForEvent(
        tl[who],
        (o) => o.event === 'pmtu' && Number(o.new) > FITS_1280,
        (RAISE_S + 20) * 1000,
        { after: mark[who] },
      ).catch((e: Error) => assert.fail(`${who} never grew back: ${e.message}\n${tl.dump()}`));
      assert.ok(Number(grown.new) > FITS_1280);
    }
    // Grown all the way to a 1500-byte path's 1472 eventually (a few more probes).
    assert.equal(await waitSize(tl, 'visit', (n) => n === 1472, 20_000), 1472, tl.dump());
    await exact(tl, 5 * MB, 'after growing back');
    assertStayedDirect(tl, 'after growing back');
  });

  await t.test('the MTU drops from 1500 to 1280 mid-transfer: no byte lost, no reset, direct in the end', async () => {
    assert.equal(sizeOf(lastPmtu(tl, 'serve')) > FITS_1280, true, 'starts above 1280');
    // Paced (64 KiB every 4 ms, at most ~16 MB/s) so the transfer lasts seconds: unpaced,
    // batched sends finished 50 MB before the link changed and nothing crossed the drop.
    const { child, result } = tl.startTransfer(50 * MB, { timeoutMs: 240_000, delayMs: 4 });
    // Wait for the transfer to be under way, then shrink the link under it.
    await waitForEvent(child, 'progress', 30_000).catch(() => undefined);
    await tl.lab.setMtu('rb', 1280, 'blackhole');
    const atDrop = eventsOf(child, 'progress').at(-1);
    assert.equal(eventsOf(child, 'result').length, 0, 'the transfer ended before the MTU dropped: not mid-transfer');
    assert.ok(Number(atDrop?.gotBytes ?? 0) < 40 * MB, `the drop came late: ${JSON.stringify(atDrop)}`);
    const r = await result;
    assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
    assert.equal(r.got, r.sent, 'sha256 differs');
    // Both sides shrank for the black hole (or still do, once data went through).
    for (const who of ['visit', 'serve'] as const) {
      const size = await waitSize(tl, who, (n) => n <= FITS_1280, 20_000);
      assert.ok(size <= FITS_1280, `${who}: path MTU ${size} after the drop\n${tl.dump()}`);
    }
    // The path stays direct, or falls back to the relay and returns.
    if (tl.lastPath() !== 'direct') await tl.waitPath('direct', 60_000, 'visit', tl.mark());
    assert.equal(tl.lastPath(), 'direct', tl.pathSequence().join(' -> '));
    assert.equal(tl.events('session_closed').length, 0, 'the session closed');
  });
});

test('path MTU 1492 (PPPoE) with ICMP on the server side: direct, exact', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: 'cone', b: { type: 'cone', mtu: 1492, mtuMode: 'icmp' } },
    { prefix: uniquePrefix('pppoe'), serveArgs: PMTU_ARGS, visitArgs: PMTU_ARGS },
  );
  if (!tl) return;
  await tl.waitPath('direct', 25_000).catch((e: Error) => assert.fail(`no direct path: ${e.message}\n${tl.dump()}`));
  await exact(tl, 20 * MB, 'PPPoE 1492 with ICMP');
  assertStayedDirect(tl, 'PPPoE 1492 with ICMP');
  // The search ran (the peer answers probes) and settled somewhere it found to pass.
  for (const who of ['visit', 'serve'] as const) {
    const e = lastPmtu(tl, who);
    assert.ok(e, `${who}: no pmtu event\n${tl.dump()}`);
    assert.ok(sizeOf(e) >= 1200, `${who}: ${sizeOf(e)}`);
  }
});

// Regression (CI, 2026-12-07): under the kernel's default DF policy a GSO
// super-packet's segments leave WITHOUT DF (DF is decided by the
// super-packet's length), so the lab's 1280 link fragmented them where the
// search's own probes were dropped: the visitor's data crossed the "black
// hole" as fragments and it never shrank. The tunnel's sockets now force DF
// (forceDontFragment, IP_PMTUDISC_PROBE). This sends batched runs of 1200-
// and 1400-byte datagrams through the project's sender across a 1280 black
// hole: only the 1200-byte ones may arrive, whole.
test('batched (GSO) datagrams carry DF: a 1280 black hole drops the 1400-byte ones, not fragments them', async (t) => {
  const lab = await startLab(t, { a: 'cone', b: 'public' }, uniquePrefix('gsodf'));
  if (!lab) return;
  await lab.setMtu('rb', 1280, 'blackhole');
  const port = 45_123;
  const sink = lab.spawn('b', [process.execPath, '-e', SINK, String(port)]);
  await waitForEvent(sink, 'ready', 10_000);
  const sent = await execJson<{ batched: boolean; df: boolean }>(lab, 'a', [
    process.execPath,
    '--input-type=module',
    '-e',
    GSO_SENDER,
    distPath('src/transport/batched-udp.js'),
    lab.addr('b'),
    String(port),
  ]);
  if (!sent.batched) {
    t.skip('the udp-batch addon is not built here: datagrams go one by one, which carry DF by default');
    return;
  }
  assert.equal(sent.df, true, 'DF could not be forced on the socket');
  const got = (await waitForEvent(sink, 'sizes', 10_000)) as unknown as { sizes: Record<string, number> };
  const sizes = JSON.stringify(got.sizes);
  assert.deepEqual(got.sizes, { '1200': 10 }, `only the 1200-byte datagrams fit the link: ${sizes}`);
});

/** Counts datagrams by size on port argv[1] until 1.5 s pass without one; prints {"event":"sizes"}. */
const SINK = `
const s = require('node:dgram').createSocket('udp4');
const sizes = {};
let idle;
const done = () => {
  console.log(JSON.stringify({ event: 'sizes', sizes }));
  process.exit(0);
};
s.on('message', (m) => {
  sizes[m.length] = (sizes[m.length] || 0) + 1;
  clearTimeout(idle);
  idle = setTimeout(done, 1500);
});
s.bind(Number(process.argv[1]), () => {
  console.error(JSON.stringify({ event: 'ready' }));
  idle = setTimeout(done, 5000);
});`;

/** argv: batched-udp.js path, host, port. DF forced, then ten 1200-byte and ten 1400-byte datagrams in one turn. */
const GSO_SENDER = `
import dgram from 'node:dgram';
const [mod, host, port] = process.argv.slice(1);
const { sendDatagram, forceDontFragment, udpBatchingAvailable } = await import(mod);
const s = dgram.createSocket('udp4');
await new Promise((r) => s.bind(0, r));
const df = forceDontFragment(s);
for (const size of [1200, 1400])
  for (let i = 0; i < 10; i++) sendDatagram(s, new Uint8Array(size).fill(7), Number(port), host);
await new Promise((r) => setTimeout(r, 300));
console.log(JSON.stringify({ batched: udpBatchingAvailable(), df }));
s.close();`;
