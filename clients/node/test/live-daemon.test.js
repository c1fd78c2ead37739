// The Node client against two real peerixd processes (local driver) over the real socket.
// Needs the workspace binaries (`cargo build --workspace --bins`); PEERIX_BIN_DIR overrides the
// directory. Fails (does not skip) when they are missing.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { spawn } = require('node:child_process');
const { connect } = require('..');

const BIN = process.env.PEERIX_BIN_DIR || path.resolve(__dirname, '../../../target/debug');

async function startDaemon(dir, name) {
  const exe = path.join(BIN, 'peerixd');
  assert.ok(fs.existsSync(exe), `${exe} missing: run cargo build --workspace --bins first`);
  const sock = path.join(dir, `${name}.sock`);
  const proc = spawn(exe, ['--socket', sock, '--local-dir', path.join(dir, 'local'), '--no-system-config'], {
    stdio: ['ignore', 'ignore', fs.openSync(path.join(dir, `${name}.log`), 'w')],
  });
  const deadline = Date.now() + 20000;
  while (!fs.existsSync(sock)) {
    assert.ok(Date.now() < deadline, 'daemon did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  return { proc, sock };
}

async function nextEvent(stream, name, ms = 15000) {
  const timer = new Promise((_, rej) => setTimeout(() => rej(new Error(`timed out waiting for ${name}`)), ms));
  const loop = (async () => {
    for await (const ev of stream) if (ev.name === name) return ev;
    throw new Error(`stream ended before ${name}`);
  })();
  return Promise.race([loop, timer]);
}

test('two real daemons exchange text and bytes through the Node client', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peerix-node-'));
  const a = await startDaemon(dir, 'a');
  const b = await startDaemon(dir, 'b');
  try {
    const ca = await connect(a.sock);
    const cb = await connect(b.sock);
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
    const r2 = await ca.sendBytes('node', payload, { label: 'chat' });
    assert.ok(r2.peers.every((p) => p.ok));
    const parts = [];
    for (;;) {
      const ev = await nextEvent(events, 'channel:message');
      parts.push(Buffer.from(ev.data.data));
      if (ev.data.final) break;
    }
    assert.ok(Buffer.concat(parts).equals(Buffer.from(payload)));
    await assert.rejects(ca.request('no-such-op'), (e) => e.code === 'UNKNOWN_OP');
    ca.close();
    cb.close();
  } finally {
    a.proc.kill('SIGKILL');
    b.proc.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
