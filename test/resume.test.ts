// Resume proofs (src/crypto/resume.ts) and the relay's resumable pairs
// (relay/relay.ts): only the holder of a session's keys can take a side of the
// session back; forged, replayed, wrong-session, wrong-role and wrong-verifier
// tokens are refused and change nothing; a relay leg that dies mid-frame is
// replaced at a frame boundary, and the other leg never sees a broken frame.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';
import { cryptoReady } from '../src/crypto/index.js';
import { CHAIN_LEN, MAX_SKIP, ResumeChain, checkResumeToken, parseAnchor } from '../src/crypto/resume.js';
import { Relay, FrameCursor, MAX_RELAYED_FRAME_BODY } from '../relay/relay.js';
import { FramedSocket } from '../src/transport/framed-socket.js';
import { FrameDecoder, FrameKind, encodeFrame } from '../src/wire/frame.js';
import { encodeControl, parseControl, type ControlMessage } from '../src/wire/control.js';
import { issueTicket, newSessionId } from '../src/wire/ticket.js';
import { createLogger } from '../src/util/log.js';
import { sessionKeys } from './helpers/session-keys.js';
import { sleep } from '../src/util/backoff.js';
import { kernelSpliceAvailable } from '../src/transport/kernel-splice.js';

await cryptoReady();

test('resume chain: each token verifies once, in order, against the anchor', () => {
  const { visitor, server } = sessionKeys('resume');
  const sid = newSessionId();
  const mine = new ResumeChain(visitor, sid, 'visitor', 'relay');
  // The other peer computes the same chain for our role: both hold the same keys.
  assert.equal(new ResumeChain(server, sid, 'visitor', 'relay').anchorText, mine.anchorText);
  let held = mine.anchor;
  for (let i = 0; i < 5; i++) {
    const tok = mine.next()!;
    const ok = checkResumeToken(held, tok, sid, 'visitor', 'relay');
    assert.ok(ok.ok, `token ${i} verifies`);
    // Replayed: the verifier has moved past it.
    assert.equal(checkResumeToken(ok.next, tok, sid, 'visitor', 'relay').ok, false, 'a used token is refused');
    held = ok.next;
  }
  assert.equal(mine.remaining, CHAIN_LEN - 5);
});

test('resume chain: forged, wrong session, wrong role, wrong verifier, other keys are refused', () => {
  const { visitor } = sessionKeys('resume');
  const other = sessionKeys('resume').visitor;
  const sid = newSessionId();
  const chain = new ResumeChain(visitor, sid, 'visitor', 'rendezvous');
  const held = chain.anchor;
  const tok = chain.next()!;
  assert.equal(
    checkResumeToken(held, crypto.randomBytes(32).toString('base64url'), sid, 'visitor', 'rendezvous').ok,
    false,
  );
  assert.equal(checkResumeToken(held, 'short', sid, 'visitor', 'rendezvous').ok, false);
  assert.equal(checkResumeToken(held, tok, newSessionId(), 'visitor', 'rendezvous').ok, false, 'wrong sid');
  assert.equal(checkResumeToken(held, tok, sid, 'server', 'rendezvous').ok, false, 'wrong role');
  assert.equal(checkResumeToken(held, tok, sid, 'visitor', 'relay').ok, false, 'wrong verifier');
  // Someone who knows the sid but has other keys builds another chain.
  const forged = new ResumeChain(other, sid, 'visitor', 'rendezvous').next()!;
  assert.equal(checkResumeToken(held, forged, sid, 'visitor', 'rendezvous').ok, false, 'other keys');
  // The genuine token still works after all those failures: they changed nothing.
  assert.ok(checkResumeToken(held, tok, sid, 'visitor', 'rendezvous').ok);
});

test('resume chain: tokens lost on the way may be skipped, up to MAX_SKIP', () => {
  const { server } = sessionKeys('resume');
  const sid = newSessionId();
  const chain = new ResumeChain(server, sid, 'server', 'relay');
  for (let i = 0; i < MAX_SKIP - 1; i++) chain.next();
  assert.ok(checkResumeToken(chain.anchor, chain.next()!, sid, 'server', 'relay').ok, `${MAX_SKIP} steps`);
  const far = new ResumeChain(server, sid, 'server', 'relay');
  for (let i = 0; i < MAX_SKIP; i++) far.next();
  assert.equal(checkResumeToken(far.anchor, far.next()!, sid, 'server', 'relay').ok, false, 'beyond MAX_SKIP');
  assert.equal(parseAnchor('abc'), null);
  assert.ok(parseAnchor(chain.anchorText));
});

test('frame cursor: boundaries and padding that completes a cut frame', () => {
  const frames = Buffer.concat([
    encodeFrame(FrameKind.Datagram, Buffer.alloc(100, 1)),
    encodeFrame(FrameKind.Datagram, Buffer.alloc(50, 2)),
  ]);
  for (let cut = 0; cut <= frames.length; cut++) {
    const c = new FrameCursor();
    c.walk(frames.subarray(0, cut));
    const dec = new FrameDecoder(() => 1 << 20);
    const r = dec.push(
      Buffer.concat([frames.subarray(0, cut), c.padding(), encodeFrame(FrameKind.Datagram, Buffer.from('next'))]),
    );
    assert.equal(r.error, null, `cut at ${cut}`);
    assert.equal(r.frames.at(-1)!.body.toString(), 'next', `cut at ${cut}: the next frame is read whole`);
  }
  const c = new FrameCursor();
  c.walk(frames.subarray(0, 3));
  assert.equal(c.walk(frames, 3, true), 106, 'stops at the first boundary after a cut');
  assert.ok(c.atBoundary);
});

// --- the relay, in process, with real sockets ---------------------------------

const log = createLogger({ format: 'json', sink: { write: () => {} } });

interface Client {
  sock: net.Socket;
  msgs: ControlMessage[];
  datagrams: Buffer[];
  error: string | null;
}

function client(port: number, first: ControlMessage): Promise<Client> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const c: Client = { sock, msgs: [], datagrams: [], error: null };
    const dec = new FrameDecoder(() => 1 << 20);
    sock.on('data', (d: Buffer) => {
      const r = dec.push(d);
      if (r.error) c.error = r.error.code;
      for (const f of r.frames) {
        if (f.kind === FrameKind.Datagram) c.datagrams.push(Buffer.from(f.body));
        else {
          const p = parseControl(f.body);
          if (p.ok) c.msgs.push(p.msg);
        }
      }
    });
    sock.on('error', () => {});
    sock.once('connect', () => {
      sock.write(encodeControl(first));
      resolve(c);
    });
    sock.once('error', reject);
  });
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function relayServer(
  t: { after(fn: () => void): void },
  opts: { resumeTimeoutMs?: number; kernelSplice?: boolean; log?: typeof log } = {},
) {
  const key = crypto.randomBytes(32);
  const relay = new Relay({ key, log, ...opts });
  const server = net.createServer((s) => {
    const fs = new FramedSocket(s, { idleTimeoutMs: 5000 });
    fs.once('message', (m: ControlMessage) => {
      if (m.type === 'relay_resume') return relay.resume(fs, m);
      if (m.type === 'relay_bind') return relay.adopt(fs, m.ticket, m.resume);
      fs.fail('bad_message', 'expected relay_bind');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    relay.close();
    server.close();
  });
  return { relay, key, port: (server.address() as net.AddressInfo).port };
}

/**
 * Each relay case runs twice: forwarding in the kernel (native/tcp-splice),
 * and in JavaScript (the fallback, and the path for rate-limited sessions).
 */
const MODES = [
  {
    name: 'kernel forwarding',
    kernel: true,
    skip: kernelSpliceAvailable()
      ? false
      : 'the tcp-splice addon is not built here (not Linux, or no compiler at install)',
  },
  { name: 'JavaScript forwarding', kernel: false, skip: false },
];

const dg = (s: string) => encodeFrame(FrameKind.Datagram, Buffer.from(s));

/** Both sides of a new resumable session bound at the relay and told relay_ready, with their resume chains. */
async function joinedPair(port: number, key: Uint8Array) {
  const { visitor: vk, server: sk } = sessionKeys('relay');
  const sid = newSessionId();
  const vChain = new ResumeChain(vk, sid, 'visitor', 'relay');
  const sChain = new ResumeChain(sk, sid, 'server', 'relay');
  const bind = (role: 'visitor' | 'server', chain: ResumeChain) =>
    client(port, { type: 'relay_bind', ticket: issueTicket(key, sid, role), resume: chain.anchorText });
  const v = await bind('visitor', vChain);
  const s = await bind('server', sChain);
  await until('relay_ready', () => v.msgs.length > 0 && s.msgs.length > 0);
  return { sid, v, s, vChain };
}
const lastError = (c: Client) => c.msgs.filter((m) => m.type === 'error').at(-1) as { code: string } | undefined;

for (const mode of MODES)
  test(
    `relay: a leg lost mid-frame is taken back with relay_resume; bad proofs change nothing (${mode.name})`,
    { skip: mode.skip },
    async (t) => {
      const { relay, key, port } = await relayServer(t, { kernelSplice: mode.kernel });
      const { sid, v, s, vChain } = await joinedPair(port, key);
      assert.equal(relay.kernelSessionCount, mode.kernel ? 1 : 0, 'forwarding where the mode says');
      v.sock.write(dg('v1'));
      s.sock.write(dg('s1'));
      await until('first datagrams', () => v.datagrams.length === 1 && s.datagrams.length === 1);

      // The visitor's leg dies (RST) in the middle of a frame it was sending, and of one it was receiving.
      const half = dg('cut-in-the-middle');
      v.sock.write(half.subarray(0, 9));
      const sHalf = dg('server-frame-cut');
      s.sock.write(sHalf.subarray(0, 10));
      await until('the relay read both halves', () => relay.bytesForwarded >= 4 + 4 + 6 + 9 + 10 + 2 * 6 - 12);
      await sleep(50);
      v.sock.resetAndDestroy();
      await until('half-open', () => relay.halfOpenCount === 1);

      // Refusals: unknown session, forged token, a token of the other role; each leaves the session as it was.
      const unknown = await client(port, {
        type: 'relay_resume',
        sid: newSessionId(),
        role: 'visitor',
        token: vChain.next()!,
      });
      const forged = await client(port, {
        type: 'relay_resume',
        sid,
        role: 'visitor',
        token: crypto.randomBytes(32).toString('base64url'),
      });
      const wrongRole = await client(port, { type: 'relay_resume', sid, role: 'server', token: vChain.next()! });
      await until('refusals', () => !!lastError(unknown) && !!lastError(forged) && !!lastError(wrongRole));
      assert.equal(lastError(unknown)!.code, 'unknown_session');
      assert.equal(lastError(forged)!.code, 'bad_proof');
      assert.equal(lastError(wrongRole)!.code, 'bad_proof');
      assert.equal(relay.halfOpenCount, 1, 'still waiting for the visitor');
      assert.equal(relay.resumes, 0);

      const tok = vChain.next()!;
      const v2 = await client(port, { type: 'relay_resume', sid, role: 'visitor', token: tok });
      await until('relay_ready on the new leg', () => v2.msgs.some((m) => m.type === 'relay_ready'));
      // The rest of the server's cut frame is for nobody (its start went to the dead leg); the next frame is whole.
      s.sock.write(sHalf.subarray(10));
      s.sock.write(dg('s2-after-resume'));
      await until('the server frame after the resume', () => v2.datagrams.length === 1);
      assert.equal(v2.datagrams[0].toString(), 's2-after-resume');
      assert.equal(v2.error, null);
      v2.sock.write(dg('v2-after-resume'));
      await until('the server reads the new leg', () => s.datagrams.length >= 3);
      // The frame cut by the dying leg arrives completed with padding (dropped by a real peer), then the new one whole.
      assert.equal(s.error, null, 'no framing error on the surviving leg');
      assert.equal(s.datagrams[1].length, 'cut-in-the-middle'.length);
      assert.equal(s.datagrams[2].toString(), 'v2-after-resume');
      assert.equal(relay.halfOpenCount, 0);
      assert.equal(relay.resumes, 1);

      // Replaying the token that worked: refused, and the live session is untouched.
      const replay = await client(port, { type: 'relay_resume', sid, role: 'visitor', token: tok });
      await until('replay refused', () => !!lastError(replay));
      assert.equal(lastError(replay)!.code, 'bad_proof');
      s.sock.write(dg('s3'));
      await until('still joined', () => v2.datagrams.length === 2);
      assert.equal(v2.datagrams[1].toString(), 's3');

      // Lost again, at a frame boundary: what the server sends meanwhile waits for the next leg.
      v2.sock.resetAndDestroy();
      await until('half-open again', () => relay.halfOpenCount === 1);
      s.sock.write(dg('s4-while-away'));
      await sleep(50);
      const v3 = await client(port, { type: 'relay_resume', sid, role: 'visitor', token: vChain.next()! });
      await until('what the server sent meanwhile', () => v3.datagrams.length === 1);
      assert.equal(v3.datagrams[0].toString(), 's4-while-away');

      // A clean close (FIN) ends the session on purpose: the other leg is closed, nothing to resume.
      const closed = new Promise<void>((r) => s.sock.once('close', () => r()));
      v3.sock.end();
      await closed;
      await until('session gone', () => relay.sessionCount === 0);
      const late = await client(port, { type: 'relay_resume', sid, role: 'visitor', token: vChain.next()! });
      await until('late resume refused', () => !!lastError(late));
      assert.equal(lastError(late)!.code, 'unknown_session');
      for (const c of [v, s, v2, v3, unknown, forged, wrongRole, replay, late]) c.sock.destroy();
    },
  );

for (const mode of MODES)
  test(
    `relay: a RST behind unread bytes is a lost leg, not a close (Node reports it as an end of stream) (${mode.name})`,
    { skip: mode.skip },
    async (t) => {
      // Seen on a loaded machine (test/roaming.test.ts): the RST of a busy leg reached the relay while
      // bytes of that leg were still unread. libuv then reads them in one short read, sees POLLHUP and
      // reports an end of stream instead of ECONNRESET, so the socket emits 'end' as for a FIN and the
      // relay ended the session. Here the bytes and the RST reach the relay's socket before it reads.
      const { relay, key, port } = await relayServer(t, { kernelSplice: mode.kernel });
      const { sid, v, s, vChain } = await joinedPair(port, key);
      assert.equal(relay.kernelSessionCount, mode.kernel ? 1 : 0, 'forwarding where the mode says');

      // One synchronous block: on loopback both the bytes and the RST are in the relay's socket on return.
      v.sock.write(dg('last-before-the-cut'));
      v.sock.resetAndDestroy();
      await until('the relay saw the leg go', () => relay.halfOpenCount === 1 || relay.sessionCount === 0);
      assert.equal(relay.sessionCount, 1, 'the session is held for a resume');
      assert.equal(relay.halfOpenCount, 1);
      await until('the bytes read before the RST', () => s.datagrams.length === 1);
      assert.equal(s.datagrams[0].toString(), 'last-before-the-cut');

      const v2 = await client(port, { type: 'relay_resume', sid, role: 'visitor', token: vChain.next()! });
      await until('relay_ready on the new leg', () => v2.msgs.some((m) => m.type === 'relay_ready'));
      v2.sock.write(dg('after-resume'));
      await until('the server reads the new leg', () => s.datagrams.length === 2);
      assert.equal(s.datagrams[1].toString(), 'after-resume');
      assert.equal(relay.resumes, 1);

      // A FIN behind unread bytes still ends the session on purpose.
      const closed = new Promise<void>((r) => s.sock.once('close', () => r()));
      v2.sock.write(dg('last-words'));
      v2.sock.end();
      await closed;
      assert.equal(s.datagrams.at(-1)?.toString(), 'last-words');
      await until('session gone', () => relay.sessionCount === 0);
      for (const c of [v, s, v2]) c.sock.destroy();
    },
  );

for (const mode of MODES)
  test(`relay: a half-open session ends after the resume timeout (${mode.name})`, { skip: mode.skip }, async (t) => {
    const { relay, key, port } = await relayServer(t, { resumeTimeoutMs: 300, kernelSplice: mode.kernel });
    const { v, s } = await joinedPair(port, key);
    const closed = new Promise<void>((r) => s.sock.once('close', () => r()));
    v.sock.resetAndDestroy();
    await until('half-open', () => relay.halfOpenCount === 1);
    await closed;
    assert.equal(relay.sessionCount, 0);
    s.sock.destroy();
  });

for (const mode of MODES)
  test(
    `relay: bulk frames both ways at once arrive whole and in order (${mode.name})`,
    { skip: mode.skip },
    async (t) => {
      // Frames of every size from empty to the largest a leg may send (above
      // a read's capacity), in both directions at the same time: the kernel
      // path reads each header and splices each body, and must cut nothing.
      const { relay, key, port } = await relayServer(t, { kernelSplice: mode.kernel });
      const { sid, v, s, vChain } = await joinedPair(port, key);
      const forwardedBefore = relay.bytesForwarded;
      const make = (n: number) =>
        Array.from({ length: n }, (_, i) =>
          crypto.randomBytes(i % 7 === 0 ? 0 : i % 11 === 0 ? MAX_RELAYED_FRAME_BODY : crypto.randomInt(1, 65_536)),
        );
      const fromV = make(150);
      const fromS = make(150);
      let wire = 0;
      for (let i = 0; i < 150; i++) {
        const a = encodeFrame(FrameKind.Datagram, fromV[i]);
        const b = encodeFrame(FrameKind.Datagram, fromS[i]);
        wire += a.length + b.length;
        v.sock.write(a);
        s.sock.write(b);
      }
      assert.equal(relay.kernelSessionCount, mode.kernel ? 1 : 0);
      await until('every frame', () => v.datagrams.length === 150 && s.datagrams.length === 150, 20_000);
      assert.equal(v.error, null);
      assert.equal(s.error, null);
      for (let i = 0; i < 150; i++) {
        assert.ok(s.datagrams[i].equals(fromV[i]), `visitor frame ${i}`);
        assert.ok(v.datagrams[i].equals(fromS[i]), `server frame ${i}`);
      }
      assert.equal(relay.kernelSessionCount, mode.kernel ? 1 : 0, 'still forwarding where it started');
      assert.equal(relay.bytesForwarded - forwardedBefore, wire);

      // The visitor's leg dies inside a large frame's body: the relay must know
      // where that frame ends (from the header it read) to complete it for the
      // server and start the new leg's stream at a frame boundary.
      const big = encodeFrame(FrameKind.Datagram, crypto.randomBytes(60_000));
      v.sock.write(big.subarray(0, 30_000));
      await until('the relay forwarded the first half', () => relay.bytesForwarded - forwardedBefore >= wire + 30_000);
      v.sock.resetAndDestroy();
      await until('half-open', () => relay.halfOpenCount === 1);
      const v2 = await client(port, { type: 'relay_resume', sid, role: 'visitor', token: vChain.next()! });
      await until('relay_ready on the new leg', () => v2.msgs.some((m) => m.type === 'relay_ready'));
      const after = crypto.randomBytes(50_000);
      v2.sock.write(encodeFrame(FrameKind.Datagram, after));
      await until('the frame after the resume', () => s.datagrams.length === 152);
      assert.equal(s.error, null, 'the server never sees a broken frame');
      assert.equal(s.datagrams[150].length, 60_000, 'the cut frame, completed with padding');
      assert.ok(s.datagrams[151].equals(after));
      for (const c of [v, s, v2]) c.sock.destroy();
    },
  );

for (const mode of MODES)
  test(
    `relay: a frame header over the limit ends the session; nothing of it is forwarded or padded (${mode.name})`,
    { skip: mode.skip },
    async (t) => {
      // Before the limit, a leg that announced a 4 GiB frame and then died
      // made the relay allocate the frame's padding for the other side.
      const lines: string[] = [];
      const { relay, key, port } = await relayServer(t, {
        kernelSplice: mode.kernel,
        log: createLogger({ format: 'json', sink: { write: (l: string) => void lines.push(l) } }),
      });
      for (const [length, cut] of [
        [0xffff_ffff, 'rst'],
        [MAX_RELAYED_FRAME_BODY + 1, 'fin'],
        [0xffff_ffff, 'none'],
      ] as const) {
        const { v, s } = await joinedPair(port, key);
        assert.equal(relay.kernelSessionCount, mode.kernel ? 1 : 0);
        v.sock.write(dg('before'));
        await until('the frame before', () => s.datagrams.length === 1);
        const closed = new Promise<void>((r) => s.sock.once('close', () => r()));
        // No Nagle: the header must reach the relay before the RST below, not wait behind an ACK.
        v.sock.setNoDelay(true);
        const header = Buffer.alloc(6);
        header.writeUInt32BE(length, 0);
        header[4] = 1;
        header[5] = FrameKind.Datagram;
        // The header alone first: the kernel path reads it before any body byte.
        v.sock.write(header);
        await sleep(20);
        v.sock.write(Buffer.alloc(1000, 7));
        if (cut === 'rst') v.sock.resetAndDestroy();
        else if (cut === 'fin') v.sock.end();
        await closed;
        await until('session gone', () => relay.sessionCount === 0);
        assert.equal(relay.halfOpenCount, 0, 'not held for a resume');
        assert.equal(s.datagrams.length, 1, 'nothing after the frame before');
        assert.equal(s.error, null, 'the server never saw a broken frame');
        const events = lines.map((l) => JSON.parse(l) as { event: string; length?: number; code?: string });
        const bad = events.filter((e) => e.event === 'relay_bad_frame').at(-1);
        assert.equal(bad?.length, length);
        assert.equal(bad?.code, 'frame_too_large');
        v.sock.destroy();
        s.sock.destroy();
      }
      // The relay still serves.
      const { v, s } = await joinedPair(port, key);
      v.sock.write(dg('still here'));
      await until('a new session forwards', () => s.datagrams.length === 1);
      v.sock.destroy();
      s.sock.destroy();
    },
  );

test('frame cursor: a header over the limit stops the walk and marks the stream', () => {
  const c = new FrameCursor(100);
  const frames = Buffer.concat([
    encodeFrame(FrameKind.Datagram, Buffer.alloc(100)),
    encodeFrame(FrameKind.Datagram, Buffer.alloc(101)),
  ]);
  assert.equal(c.walk(frames), 106 + 6, 'stops right after the oversize header');
  assert.equal(c.oversize, 101);
  assert.equal(c.walk(frames, 112), 112, 'and goes no further');
  const r = new FrameCursor(100);
  r.restore({ header: Buffer.alloc(0), remaining: 5000 });
  assert.equal(r.oversize, 5000, 'a kernel state past the limit is refused too');
});

test('relay: a rate-limited relay never forwards in the kernel (the limit is applied in JavaScript)', () => {
  const key = crypto.randomBytes(32);
  assert.equal(new Relay({ key, log, rateBytesPerSec: 1_000_000 }).kernelSplice, false);
  assert.equal(new Relay({ key, log, kernelSplice: false }).kernelSplice, false);
  assert.equal(new Relay({ key, log }).kernelSplice, kernelSpliceAvailable());
});
