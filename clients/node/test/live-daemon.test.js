// The Node client against two real peerixd processes (local driver) over the real socket.
// Needs the workspace binaries (`cargo build --workspace --bins`); PEERIX_BIN_DIR overrides the
// directory. Fails (does not skip) when they are missing.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { connect } = require('..');
const { Daemons, nextEvent } = require('../testlib/daemons');

test('two real daemons exchange text and bytes through the Node client', async () => {
  const ds = new Daemons();
  try {
    const ca = await connect(await ds.start('a'));
    const cb = await connect(await ds.start('b'));
    const events = await cb.subscribe(['connection', 'channel'], 'node');
    await ca.join('node', { metadata: { name: 'node-a' } });
    await cb.join('node');
    const conn = await nextEvent(events, 'connection:connected');
    assert.deepStrictEqual(conn.data.metadata, { name: 'node-a' });
    await ca.open('node', 'chat');
    await nextEvent(events, 'channel:open');
    const res = await ca.sendText('node', 'hello from node', { label: 'chat' });
    assert.ok(res.peers.every((p) => p.ok), JSON.stringify(res));
    const msg = await nextEvent(events, 'channel:message');
    assert.strictEqual(msg.data.data, 'hello from node');
    const payload = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 31) & 0xff);
    const progress = [];
    const r2 = await ca.sendBytes('node', payload, { label: 'chat', onProgress: (p) => progress.push(p) });
    assert.ok(r2.peers.every((p) => p.ok));
    assert.ok(progress.length > 0 && progress[progress.length - 1].done, JSON.stringify(progress));
    const parts = [];
    for (;;) {
      const ev = await nextEvent(events, 'channel:message');
      parts.push(Buffer.from(ev.data.data));
      if (ev.data.final) break;
    }
    assert.ok(Buffer.concat(parts).equals(Buffer.from(payload)));
    const batch = await ca.sendBatch('node', ['b0', 'b1', 'b2'], { type: 'text', label: 'chat' });
    assert.ok(batch.count === 3 && batch.peers.every((p) => p.ok && p.delivered === 3), JSON.stringify(batch));
    for (let k = 0; k < 3; k++) {
      const ev = await nextEvent(events, 'channel:message');
      assert.strictEqual(ev.data.data, `b${k}`);
    }
    await assert.rejects(ca.sendBatch('node', [], { label: 'chat' }), (e) => e.code === 'BAD_REQUEST');
    await assert.rejects(ca.request('no-such-op'), (e) => e.code === 'UNKNOWN_OP');
    ca.close();
    cb.close();
  } finally {
    ds.stop();
  }
});

test('share answers with the ingest port and track ids; frame feeds only IPC tracks', async () => {
  const ds = new Daemons();
  try {
    const c = await connect(await ds.start('a'));
    await c.join('node-share');
    const res = await c.share('node-share', 'cam', [{ codec: 'vp8', rtp: '127.0.0.1:0' }, { codec: 'opus' }]);
    const [video, audio] = res.tracks;
    assert.strictEqual(video.codec, 'video/VP8');
    assert.ok(video.rtp.startsWith('127.0.0.1:') && !video.rtp.endsWith(':0'), JSON.stringify(res));
    assert.strictEqual(audio.rtp, undefined);
    await c.frame('node-share', audio.track, Buffer.from([0xfc, 0xff, 0xfe]), 20000);
    await assert.rejects(c.frame('node-share', video.track, Buffer.from([0]), 33333), (e) => e.code === 'BAD_REQUEST');
    assert.strictEqual(await c.unshare('node-share', 'cam'), true);
    assert.strictEqual(await c.unshare('node-share', 'cam'), false);
    c.close();
  } finally {
    ds.stop();
  }
});
