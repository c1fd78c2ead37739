// The client conformance scenario (clients/conformance/SCENARIO.md) with the Node client,
// against two real peerixd processes.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const { connect } = require('..');
const { Daemons, nextEvent } = require('../testlib/daemons');

async function expectCode(code, promise) {
  await assert.rejects(promise, (e) => {
    assert.strictEqual(e.code, code, `expected ${code}, got ${e.code}: ${e.detail}`);
    return true;
  });
}

/** One whole channel:message (parts joined by offset). */
async function message(events, wantType) {
  const ev = await nextEvent(events, 'channel:message', 20000);
  const d = ev.data;
  assert.strictEqual(d.type, wantType, JSON.stringify(d));
  if (d.final) return d.data;
  assert.strictEqual(d.offset, 0);
  const parts = [d.data];
  let size = d.data.length;
  for (;;) {
    const p = (await nextEvent(events, 'channel:message', 20000)).data;
    assert.ok(p.transfer === d.transfer && p.offset === size, JSON.stringify({ ...p, data: undefined }));
    parts.push(p.data);
    size += p.data.length;
    if (p.final) return wantType === 'bytes' ? Buffer.concat(parts.map((x) => Buffer.from(x))) : parts.join('');
  }
}

const allOk = (res) => res.peers.length > 0 && res.peers.every((p) => p.ok);

test('conformance scenario', async () => {
  const ds = new Daemons();
  const room = `conf-${crypto.randomBytes(4).toString('hex')}`;
  try {
    const aSock = await ds.start('a');
    const bSock = await ds.start('b');

    // 1. Handshake.
    const h = await connect(aSock);
    const w = h.welcome;
    assert.strictEqual(w.version, 1);
    for (const cap of ['events', 'progress', 'streamed-send', 'holds', 'resume', 'inbox']) {
      assert.ok(w.capabilities.includes(cap), JSON.stringify(w));
    }
    assert.ok(Number.isInteger(Number(w.epoch)) && Number(w.epoch) !== 0, JSON.stringify(w));
    assert.ok(Number.isInteger(w.max_frame));

    // 2. Subscribe by group (B) and by name (A).
    const b = await connect(bSock);
    const bEvents = await b.subscribe(['connection', 'channel'], { room });
    const e1 = await connect(aSock);
    const e1Events = await e1.subscribe(['channel:message', 'connection:connected'], { room });

    // 3. Join.
    const joined = await h.join(room, { metadata: { name: 'conformance' } });
    const roomId = joined.id;
    assert.notStrictEqual(roomId, w.id);
    const entry = (await h.status()).rooms.find((r) => r.room === room);
    assert.ok(entry && entry.id === roomId && entry.holders === 1, JSON.stringify(entry));
    await b.join(room);
    const conn = await nextEvent(bEvents, 'connection:connected');
    assert.strictEqual(conn.data.peer, roomId);
    assert.deepStrictEqual(conn.data.metadata, { name: 'conformance' });
    assert.strictEqual((await b.peers(room)).length, 1);
    await nextEvent(e1Events, 'connection:connected');

    // 4. Open.
    await h.open(room, 'chat');
    await nextEvent(bEvents, 'channel:open', 15000, (e) => e.data.label === 'chat');

    // 5. Each type, A -> B.
    const big = Buffer.alloc(3 * 1024 * 1024).map((_, i) => i % 251);
    const json = { n: 1, list: [1, 'two', null] };
    assert.ok(allOk(await h.sendText(room, 'héllo', { label: 'chat' })));
    assert.strictEqual(await message(bEvents, 'text'), 'héllo');
    assert.ok(allOk(await h.sendJson(room, json, { label: 'chat' })));
    assert.deepStrictEqual(await message(bEvents, 'json'), json);
    const small = Uint8Array.from({ length: 16 }, (_, i) => i);
    assert.ok(allOk(await h.sendBytes(room, small, { label: 'chat' })));
    assert.ok(Buffer.from(await message(bEvents, 'bytes')).equals(Buffer.from(small)));
    assert.ok(allOk(await h.sendBytes(room, big, { label: 'chat' })));
    assert.ok(Buffer.from(await message(bEvents, 'bytes')).equals(big));

    // 6. B -> A, received by a subscription by name.
    assert.ok(allOk(await b.sendText(room, 'back', { label: 'chat' })));
    assert.strictEqual(await message(e1Events, 'text'), 'back');

    // 7. Resume after reconnect.
    const pos = e1.position;
    assert.ok(pos.epoch === Number(w.epoch) && pos.seq > 0, JSON.stringify(pos));
    e1.close();
    for (const t of ['r1', 'r2', 'r3']) assert.ok(allOk(await b.sendText(room, t, { label: 'chat' })));
    const e2 = await connect(aSock);
    const e2Events = await e2.resume(['channel:message'], pos, { room });
    assert.strictEqual(e2.lastSubscribe.complete, true, JSON.stringify(e2.lastSubscribe));
    const seqs = [];
    for (const t of ['r1', 'r2', 'r3']) {
      const ev = await nextEvent(e2Events, 'channel:message');
      assert.strictEqual(ev.data.data, t);
      seqs.push(ev.seq);
    }
    assert.ok(seqs[0] > pos.seq && seqs[1] > seqs[0] && seqs[2] > seqs[1], JSON.stringify(seqs));
    await b.sendText(room, 'r4', { label: 'chat' });
    const r4 = await nextEvent(e2Events, 'channel:message');
    assert.ok(r4.data.data === 'r4' && r4.seq > seqs[2]);
    const e3 = await connect(aSock);
    const e3Events = await e3.subscribe(['channel:message'], { room, since: pos.seq, epoch: pos.epoch + 1 });
    assert.strictEqual(e3.lastSubscribe.complete, false);
    const first = await e3Events.nextEvent(10000);
    assert.strictEqual(first && first.name, 'lagged', JSON.stringify(first));
    e3.close();

    // 8. Documented errors; the connection stays usable after each.
    await expectCode('UNKNOWN_OP', h.request('no-such-op'));
    await expectCode('NOT_JOINED', h.leave('never-joined'));
    await expectCode('NOT_JOINED', h.sendText('never-joined', 'x'));
    await expectCode('NO_SUCH_PEER', h.sendText(room, 'x', { label: 'chat', to: 'nobody' }));
    await expectCode('NO_SUCH_CHANNEL', h.closeChannel(room, 'never-opened'));
    await expectCode('BAD_REQUEST', h.request('send', { room, label: 'chat', data: 'x' }));
    await expectCode('BAD_REQUEST', h.request('subscribe', { events: ['Bad Pattern!'] }));
    assert.ok((await h.status()).rooms.length > 0);

    // 9. Leave.
    await e2.subscribe(['room']);
    const left = await h.leave(room);
    assert.strictEqual(left.left, true);
    const closed = await nextEvent(bEvents, 'connection:closed');
    assert.strictEqual(closed.data.peer, roomId);
    const roomLeft = await nextEvent(e2Events, 'room:left');
    assert.strictEqual(roomLeft.room, room);
    assert.ok((await h.status()).rooms.every((r) => r.room !== room));
    for (const c of [h, b, e2]) c.close();
  } finally {
    ds.stop();
  }
});
