import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setImmediate as tick } from 'node:timers/promises';
import { MuxResetReason, type Mux, type MuxStream } from '../src/mux/index.js';
import { MuxCmd, decodeMuxFrame, encodeMuxControl, encodeMuxData } from '../src/wire/mux-frame.js';
import { createMuxPair, nextError, randomData, readAll, sha256, withTimeout, type MuxPair } from './mux-harness.js';

function pair(t: { after: (fn: () => void) => void }, opts?: Parameters<typeof createMuxPair>[0]): MuxPair {
  const p = createMuxPair(opts);
  t.after(() => p.close());
  return p;
}

function echo(s: MuxStream): void {
  s.on('error', () => {});
  s.pipe(s);
}

/** Writes `data` in chunks, honouring write() backpressure. */
async function writeAll(s: MuxStream, data: Buffer, chunk = 16 * 1024, end = true): Promise<void> {
  for (let off = 0; off < data.length; off += chunk) {
    if (!s.write(data.subarray(off, off + chunk))) await once(s, 'drain');
  }
  if (end) s.end();
}

async function until(cond: () => boolean, what: string, maxTurns = 20_000): Promise<void> {
  for (let i = 0; i < maxTurns; i++) {
    if (cond()) return;
    await tick();
  }
  assert.fail(`never happened: ${what}`);
}

test('mux: open a stream, echo, both sides release it', async (t) => {
  const p = pair(t);
  p.b.on('stream', echo);
  const s = p.a.openStream();
  assert.equal(s.id % 2, 1, 'client opens odd ids');
  const got = readAll(s);
  s.end('hello mux');
  assert.equal((await withTimeout(got, 5000, 'echo')).toString(), 'hello mux');
  await p.settle();
  assert.equal(p.a.streamCount, 0);
  assert.equal(p.b.streamCount, 0);
  assert.equal(p.a.bytesSent, 9);
  assert.equal(p.a.bytesReceived, 9);
});

test('mux: 200 concurrent streams carry sha256-checked data both ways', async (t) => {
  const p = pair(t);
  p.b.on('stream', echo);
  const jobs: Promise<void>[] = [];
  const ids = new Set<number>();
  let total = 0;
  for (let i = 0; i < 200; i++) {
    const data = randomData(1 + ((i * 7919) % 24_000));
    total += data.length;
    const s = p.a.openStream();
    ids.add(s.id);
    jobs.push(readAll(s).then((back) => assert.equal(sha256(back), sha256(data), `stream ${s.id}`)));
    s.end(data);
  }
  assert.equal(p.a.streamCount, 200);
  await withTimeout(Promise.all(jobs), 30_000, '200 streams');
  assert.equal(ids.size, 200);
  assert.equal(p.a.bytesSent, total);
  assert.equal(p.b.bytesSent, total);
  await p.settle();
  assert.equal(p.a.streamCount, 0);
  assert.equal(p.b.streamCount, 0);
});

for (const first of ['opener', 'acceptor'] as const) {
  test(`mux: half-close, ${first} ends first and the other side still writes back`, async (t) => {
    const p = pair(t);
    const accepted = new Promise<MuxStream>((r) => p.b.once('stream', r));
    const opener = p.a.openStream();
    opener.write('syn'); // the acceptor learns of a stream from its SYN + data
    const acceptor = await withTimeout(accepted, 5000, 'accept');
    const [early, late] = first === 'opener' ? [opener, acceptor] : [acceptor, opener];
    const bothClosed = Promise.all([once(opener, 'close'), once(acceptor, 'close')]);

    const lateReads = readAll(late);
    early.end(' early done');
    const lateGot = await withTimeout(lateReads, 5000, 'late side sees end');
    assert.equal(lateGot.toString(), first === 'opener' ? 'syn early done' : ' early done');
    assert.ok(late.writable, 'the side that got FIN can still write');

    const earlyReads = readAll(early);
    late.write('still talking');
    late.end(', bye');
    const earlyGot = (await withTimeout(earlyReads, 5000, 'early side sees end')).toString();
    assert.equal(earlyGot, (first === 'opener' ? '' : 'syn') + 'still talking, bye');

    await withTimeout(bothClosed, 5000, 'both streams close');
    await p.settle();
    assert.equal(p.a.streamCount, 0);
    assert.equal(p.b.streamCount, 0);
  });
}

test('mux: reset propagates with its code, refusal is ECONNREFUSED', async (t) => {
  const p = pair(t);
  p.b.on('stream', (s: MuxStream) => {
    s.once('data', () => s.reset());
  });
  const s = p.a.openStream();
  const err = nextError(s);
  s.write('x');
  const e = await withTimeout(err, 5000, 'reset');
  assert.equal(e.code, 'ECONNRESET');
  await p.settle();
  assert.equal(p.a.streamCount, 0);
  assert.equal(p.b.streamCount, 0);
  // Writing to the reset stream fails through the callback/error path, not by throwing.
  await new Promise<void>((resolve) => s.write('late', (werr) => (assert.ok(werr), resolve())));

  // The opener resets with a reason; the acceptor sees the matching code.
  const p2 = pair(t);
  const accepted = new Promise<MuxStream>((r) => p2.b.once('stream', r));
  const s2 = p2.a.openStream();
  s2.write('y');
  const bs = await withTimeout(accepted, 5000, 'accept');
  const bErr = nextError(bs);
  s2.reset(MuxResetReason.ProtocolError);
  assert.equal((await withTimeout(bErr, 5000, 'peer reset')).code, 'EPROTO');

  // No 'stream' listener: the peer refuses.
  const p3 = pair(t);
  const s3 = p3.a.openStream();
  const refused = nextError(s3);
  s3.end('anyone?');
  const re = await withTimeout(refused, 5000, 'refused');
  assert.equal(re.code, 'ECONNREFUSED');
  await p3.settle();
  assert.equal(p3.a.streamCount, 0);
  assert.equal(p3.b.streamCount, 0);
});

for (const window of [64 * 1024, 256 * 1024]) {
  test(`mux: flow control, a consumer that does not read stops the sender after ${window / 1024} KiB`, async (t) => {
    const p = pair(t, { a: { initialWindow: window }, b: { initialWindow: window } });
    let bs: MuxStream | undefined;
    p.b.on('stream', (s: MuxStream) => (bs = s)); // no reader attached: nothing consumed
    const s = p.a.openStream();
    const data = randomData(2 * 1024 * 1024);
    let writerDone = false;
    const writer = writeAll(s, data).then(() => (writerDone = true));
    writer.catch(() => {});

    await p.settle();
    assert.ok(bs, 'stream accepted');
    assert.equal(p.a.bytesSent, window, 'sender stops at exactly one window');
    assert.equal(bs.readableLength, window, 'receiver buffers at most one window');
    assert.ok(s.queuedBytes <= 64 * 1024 + 16 * 1024, `sender queue bounded (${s.queuedBytes})`);
    assert.equal(writerDone, false, 'writer is held back');

    await p.settle(); // still stuck: no credit appears by itself
    assert.equal(p.a.bytesSent, window);

    let maxBuffered = 0;
    bs.on('data', () => (maxBuffered = Math.max(maxBuffered, bs!.readableLength)));
    const got = await withTimeout(readAll(bs), 20_000, 'drain after resume');
    assert.equal(sha256(got), sha256(data));
    await withTimeout(writer, 5000, 'writer finishes');
    assert.ok(maxBuffered <= window);
  });
}

test('mux: a reader that stops midway bounds the buffer and resumes the sender', async (t) => {
  const window = 64 * 1024;
  const p = pair(t, { b: { initialWindow: window } });
  const accepted = new Promise<MuxStream>((r) => p.b.once('stream', r));
  const s = p.a.openStream();
  const data = randomData(1024 * 1024);
  const writer = writeAll(s, data);
  writer.catch(() => {});
  const bs = await withTimeout(accepted, 5000, 'accept');
  const parts: Buffer[] = [];
  let received = 0;
  bs.on('data', (c: Buffer) => {
    parts.push(c);
    received += c.length;
    if (received >= 300 * 1024 && received - c.length < 300 * 1024) bs.pause();
  });
  await until(() => bs.isPaused(), 'reader paused');
  await p.settle();
  const sentWhilePaused = p.a.bytesSent;
  assert.ok(sentWhilePaused - received <= window, `in flight+buffered ${sentWhilePaused - received} > window`);
  assert.ok(bs.readableLength <= window);
  const ended = once(bs, 'end');
  bs.resume();
  await withTimeout(ended, 20_000, 'end after resume');
  await withTimeout(writer, 5000, 'writer');
  assert.equal(sha256(Buffer.concat(parts)), sha256(data));
});

test('mux: fairness, a small message overtakes a bulk transfer within a few frames', async (t) => {
  const capacity = 4;
  const p = pair(t, { capacity });
  const bStreams = new Map<number, MuxStream>();
  p.b.on('stream', (s: MuxStream) => {
    bStreams.set(s.id, s);
    s.resume();
  });
  const bulk = p.a.openStream();
  const chat = p.a.openStream();
  chat.write('hello');
  const bulkData = randomData(4 * 1024 * 1024);
  const bulkDone = writeAll(bulk, bulkData);
  bulkDone.catch(() => {});

  let chatFrameIndex = -1;
  const dataFrames: number[] = [];
  p.aToB.tap = (frame, index) => {
    const r = decodeMuxFrame(frame);
    if (!r.ok || r.frame.cmd !== MuxCmd.Data) return;
    dataFrames.push(r.frame.streamId);
    if (r.frame.streamId === chat.id && r.frame.payload.length === 4) chatFrameIndex = index;
  };
  await until(() => p.aToB.delivered > 300, 'bulk under way');
  const writtenAt = p.aToB.delivered;
  chat.write('ping');
  await until(() => chatFrameIndex >= 0, 'chat frame delivered');
  const between = chatFrameIndex - writtenAt;
  assert.ok(p.b.bytesReceived < bulkData.length / 2, 'bulk transfer was still far from done');
  assert.ok(between <= capacity + 2, `${between} frames passed before the small message`);

  // Two bulk streams share the link: neither gets more than two frames in a row while both have data.
  const bulk2 = p.a.openStream();
  const start = dataFrames.length;
  const bulk2Done = writeAll(bulk2, randomData(1024 * 1024));
  bulk2Done.catch(() => {});
  await withTimeout(bulk2Done, 20_000, 'second bulk');
  const fromBulk2 = dataFrames.indexOf(bulk2.id, start); // bulk ran alone until bulk2's first frame
  const seq = dataFrames.slice(fromBulk2).filter((id) => id === bulk.id || id === bulk2.id);
  const lastBoth = Math.min(seq.lastIndexOf(bulk.id), seq.lastIndexOf(bulk2.id));
  assert.ok(lastBoth > 100, 'the two transfers overlapped');
  let run = 1;
  let maxRun = 1;
  for (let i = 1; i <= lastBoth; i++) {
    run = seq[i] === seq[i - 1] ? run + 1 : 1;
    maxRun = Math.max(maxRun, run);
  }
  assert.ok(maxRun <= 2, `longest run of one stream: ${maxRun}`);
  await withTimeout(bulkDone, 20_000, 'bulk');
});

test('mux: malformed frames and protocol violations hit only the stream concerned', async (t) => {
  const window = 64 * 1024;
  const p = pair(t, { a: { initialWindow: window }, b: { initialWindow: window } });
  const bStreams = new Map<number, MuxStream>();
  const bErrors = new Map<number, string>();
  p.b.on('stream', (s: MuxStream) => {
    bStreams.set(s.id, s);
    s.on('error', (e: Error & { code?: string }) => bErrors.set(s.id, e.code ?? '?'));
    s.pipe(s);
  });
  let muxErrors = 0;
  p.a.on('error', () => muxErrors++);
  p.b.on('error', () => muxErrors++);

  const survivor = p.a.openStream();
  const survivorData = randomData(512 * 1024);
  const survivorBack = readAll(survivor);
  survivor.write(survivorData.subarray(0, 100_000));
  const victim = p.a.openStream();
  const victim2 = p.a.openStream();
  const victimErr = nextError(victim);
  const victim3 = p.a.openStream();
  const victim2Err = nextError(victim2);
  const victim3Err = nextError(victim3);
  victim.write('v');
  victim2.write('w');
  victim3.write('z');
  await p.settle();
  assert.equal(bStreams.size, 4);

  const inject = (m: Mux, frame: Uint8Array, what: string) => assert.doesNotThrow(() => m.receive(frame), what);
  for (let i = 0; i < 300; i++) {
    const junk = randomData(i % 50);
    if (i % 3 === 0 && junk.length > 0) junk[0] = 1;
    // Random bytes are now and then a well-formed frame (a SYN opening a stream
    // on b, seen once in CI): those are not junk, and the mux rightly obeys them.
    if (decodeMuxFrame(junk).ok) continue;
    inject(p.b, junk, 'random bytes');
  }
  const unknownCmd = encodeMuxControl(MuxCmd.Fin, survivor.id, 0);
  unknownCmd[1] = 200;
  inject(p.b, unknownCmd, 'unknown cmd');
  inject(p.b, encodeMuxData(999, Buffer.from('nobody')), 'DATA on a never-opened peer id');
  inject(p.b, encodeMuxData(1000, Buffer.from('nobody')), 'DATA on a never-opened local id');
  inject(p.b, encodeMuxControl(MuxCmd.Syn, 2000, window), 'SYN with the wrong parity');
  inject(p.b, encodeMuxControl(MuxCmd.Syn, victim3.id, window), 'SYN reusing an open id');
  inject(p.b, encodeMuxControl(MuxCmd.WindowUpdate, 777, 10), 'WINDOW_UPDATE on a never-opened id');
  inject(p.b, encodeMuxControl(MuxCmd.Rst, 4242, 0), 'RST on an unknown id');
  inject(p.a, encodeMuxControl(MuxCmd.Pong, 0, 12345), 'unsolicited PONG');
  // Window overflow: more bytes than the victim was granted.
  inject(p.b, encodeMuxData(victim.id, randomData(window + 1)), 'DATA beyond the window');
  // Credit overflow towards A.
  inject(p.a, encodeMuxControl(MuxCmd.WindowUpdate, victim2.id, 0xffffffff), 'WINDOW_UPDATE overflow');

  assert.equal((await withTimeout(victimErr, 5000, 'victim reset')).code, 'EPROTO');
  assert.equal((await withTimeout(victim2Err, 5000, 'victim2 reset')).code, 'EPROTO');
  assert.equal((await withTimeout(victim3Err, 5000, 'victim3 reset')).code, 'EPROTO');
  await p.settle();
  assert.equal(bErrors.get(victim.id), 'EPROTO');
  assert.equal(bErrors.get(victim2.id), 'EPROTO');
  assert.equal(bErrors.get(victim3.id), 'EPROTO');
  assert.ok(p.b.protocolErrors >= 5, `protocolErrors ${p.b.protocolErrors}`);

  // The survivor never noticed.
  survivor.end(survivorData.subarray(100_000));
  const back = await withTimeout(survivorBack, 20_000, 'survivor');
  assert.equal(sha256(back), sha256(survivorData));
  assert.equal(bErrors.has(survivor.id), false);
  assert.equal(muxErrors, 0);
  await p.settle();
  assert.equal(p.a.streamCount, 0);
  assert.equal(p.b.streamCount, 0);

  // And new streams still work.
  const fresh = p.a.openStream();
  const freshBack = readAll(fresh);
  fresh.end('still alive');
  assert.equal((await withTimeout(freshBack, 5000, 'fresh stream')).toString(), 'still alive');
});

test('mux: maxStreams is enforced with RST, and room frees up as streams close', async (t) => {
  const p = pair(t, { b: { maxStreams: 5 } });
  const held: MuxStream[] = [];
  p.b.on('stream', (s: MuxStream) => {
    held.push(s);
    s.resume();
  });
  const opened: MuxStream[] = [];
  const outcomes: Promise<string>[] = [];
  for (let i = 0; i < 8; i++) {
    const s = p.a.openStream();
    opened.push(s);
    outcomes.push(new Promise((r) => s.once('error', (e: Error & { code?: string }) => r(e.code ?? '?'))));
    s.write('x');
  }
  await p.settle();
  assert.equal(p.b.streamCount, 5);
  assert.equal(held.length, 5);
  const refused = await withTimeout(Promise.all(outcomes.slice(5)), 5000, 'refusals');
  assert.deepEqual(refused, ['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED']);
  assert.deepEqual(
    held.map((s) => s.id),
    opened.slice(0, 5).map((s) => s.id),
  );

  for (const s of opened.slice(0, 5)) s.end();
  for (const s of held) s.end();
  await p.settle();
  assert.equal(p.b.streamCount, 0);
  assert.equal(p.a.streamCount, 0);
  const again = p.a.openStream();
  again.end('room again');
  await p.settle();
  assert.equal(held.length, 6);

  // The local side enforces its own limit without sending anything.
  const q = pair(t, { a: { maxStreams: 2 } });
  q.b.on('stream', (s: MuxStream) => s.resume());
  q.a.openStream().write('1');
  q.a.openStream().write('2');
  const third = q.a.openStream();
  const e = await withTimeout(nextError(third), 5000, 'local limit');
  assert.equal(e.code, 'ECONNREFUSED');
  await q.settle();
  assert.equal(q.b.streamCount, 2);
});

test('mux: close() resets every stream on both sides; ping measures a round trip', async (t) => {
  const p = pair(t);
  const bErrs: Promise<Error & { code?: string }>[] = [];
  p.b.on('stream', (s: MuxStream) => {
    bErrs.push(nextError(s));
    s.resume();
  });
  const rtt = await withTimeout(p.a.ping(), 5000, 'ping');
  assert.ok(rtt >= 0);
  const streams = [p.a.openStream(), p.a.openStream(), p.a.openStream()];
  const aErrs = streams.map((s) => nextError(s));
  for (const s of streams) s.write('hi');
  await p.settle();
  assert.equal(p.b.streamCount, 3);
  const closed = once(p.a, 'close');
  p.a.close();
  await closed;
  for (const e of await withTimeout(Promise.all(aErrs), 5000, 'local errors')) assert.equal(e.code, 'ECONNABORTED');
  for (const e of await withTimeout(Promise.all(bErrs), 5000, 'peer errors')) assert.equal(e.code, 'ECONNRESET');
  assert.equal(p.a.streamCount, 0);
  assert.equal(p.b.streamCount, 0);
  const late = p.a.openStream();
  assert.equal((await withTimeout(nextError(late), 5000, 'open after close')).code, 'ECONNABORTED');
  await assert.rejects(p.a.ping(), { code: 'ECONNABORTED' });
});

test('mux: DATA after FIN resets the stream; a writer blocked on backpressure is released by a reset', async (t) => {
  const p = pair(t);
  const accepted: MuxStream[] = [];
  p.b.on('stream', (s: MuxStream) => accepted.push(s)); // never reads
  const s = p.a.openStream();
  const sErr = nextError(s);
  s.end('done');
  await p.settle();
  const bs = accepted[0];
  const bErr = nextError(bs);
  assert.doesNotThrow(() => p.b.receive(encodeMuxData(s.id, Buffer.from('more'))));
  assert.equal((await withTimeout(bErr, 5000, 'data after FIN')).code, 'EPROTO');
  assert.equal((await withTimeout(sErr, 5000, 'opener told')).code, 'EPROTO');

  // A writer stuck behind a full window and a full send queue gets its callback (with an error) when reset.
  const w = p.a.openStream();
  const wErr = nextError(w);
  const big = randomData(1024 * 1024);
  const cbErr = new Promise<Error | null | undefined>((r) => w.write(big, r));
  await p.settle();
  assert.equal(w.writableNeedDrain, true);
  await until(() => accepted.length === 2, 'second stream accepted');
  accepted[1].reset();
  assert.equal((await withTimeout(wErr, 5000, 'writer sees reset')).code, 'ECONNRESET');
  const e = await withTimeout(cbErr, 5000, 'write callback released');
  assert.ok(e, 'the unsent write reports an error');
});

/**
 * Sends `total` bytes on a fresh stream while, if `busy`, a second stream
 * carries a byte every few turns; the reader takes `readFirst` bytes, then
 * stops. Returns what the sender has out beyond what was read.
 */
async function outstandingAfterPause(
  t: { after: (fn: () => void) => void },
  busy: boolean,
  window: number,
  sharedWindow: number,
): Promise<number> {
  const p = pair(t, { b: { initialWindow: window, sharedWindow } });
  const accepted: MuxStream[] = [];
  p.b.on('stream', (s: MuxStream) => {
    s.on('error', () => {});
    accepted.push(s);
  });
  const chatty = p.a.openStream();
  chatty.on('error', () => {});
  // Open in both cases (a SYN carries no DATA); only a busy one says anything.
  if (busy) chatty.write(Buffer.from('hello'));
  await p.settle();
  await until(() => accepted.length === 1, 'chatty stream accepted');
  accepted[0].resume();
  let chatting = busy;
  const chat = async () => {
    while (chatting) {
      chatty.write(Buffer.from('.'));
      for (let i = 0; i < 5; i++) await tick();
    }
  };
  const chatter = chat();
  const bulk = p.a.openStream();
  const data = randomData(4 * window);
  const writer = writeAll(bulk, data, 16 * 1024, false);
  writer.catch(() => {});
  await until(() => accepted.length === 2, 'bulk stream accepted');
  const bs = accepted[1];
  let received = 0;
  const readFirst = 2 * window;
  bs.on('data', (c: Buffer) => {
    received += c.length;
    if (received >= readFirst && received - c.length < readFirst) bs.pause();
  });
  await until(() => bs.isPaused(), 'reader paused');
  await p.settle();
  const sent = p.a.bytesSent;
  chatting = false;
  await chatter;
  return sent - received;
}

test('mux: a stream alone may fill its window; while another stream is busy it gets the shared one', async (t) => {
  const window = 1024 * 1024;
  const shared = 256 * 1024;
  const alone = await outstandingAfterPause(t, false, window, shared);
  const withCompany = await outstandingAfterPause(t, true, window, shared);
  // bytesSent also counts the chatty stream's bytes (a few hundred at most).
  assert.ok(alone > shared + 64 * 1024, `alone: ${alone} bytes out, no more than the shared window`);
  assert.ok(alone <= window + 4096, `alone: ${alone} bytes out, more than the window`);
  assert.ok(
    withCompany <= shared + 4096,
    `with a busy neighbour: ${withCompany} bytes out, more than the shared window`,
  );
});
