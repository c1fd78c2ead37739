'use strict';
// Frame encoding checked against ipc-proto/PROTOCOL.md, and the client against
// a FAKE in-test daemon (not peerixd).
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const pc = require('..');

const DOC = path.join(__dirname, '..', '..', '..', 'ipc-proto', 'PROTOCOL.md');

function docFrames() {
  const text = fs.readFileSync(DOC, 'utf8');
  const frames = {};
  for (const m of text.matchAll(/<!-- frame:([a-z0-9-]+) -->[\s\S]*?```text\n([\s\S]*?)```/g)) {
    frames[m[1]] = Buffer.from(m[2].replace(/\s+/g, ''), 'hex');
  }
  return frames;
}
const FRAMES = docFrames();

const CLIENT_EXAMPLES = {
  hello: pc.helloMessage('peerix-cli/0.1.0'),
  'request-status': pc.requestMessage(1, 'status'),
  'request-join': pc.requestMessage(2, 'join', { room: 'lobby', metadata: { name: 'bot' } }),
  'request-subscribe': pc.requestMessage(4, 'subscribe', { events: ['channel:message'], room: 'lobby' }),
  'request-send-text': pc.requestMessage(5, 'send', pc.sendArgs('lobby', 'hi', 'text')),
  'request-send-stream-start': pc.requestMessage(
    6,
    'send',
    pc.sendArgs('lobby', new Uint8Array(0), 'bytes', {
      label: 'files', to: 'peerB', info: { name: 'a.bin' }, more: true, progress: true,
    }),
  ),
  'request-send-chunk': pc.requestMessage(7, 'send', pc.chunkArgs(2, Uint8Array.from([1, 2, 3]), false)),
  'request-send-batch': pc.requestMessage(7, 'send', pc.batchArgs('lobby', ['a', 'b'], 'text')),
};

test('doc has the examples', () => {
  assert.ok(Object.keys(FRAMES).length >= 15);
});

for (const [name, msg] of Object.entries(CLIENT_EXAMPLES)) {
  test(`client frame ${name} matches PROTOCOL.md`, () => {
    assert.strictEqual(pc.encodeFrame(msg).toString('hex'), FRAMES[name].toString('hex'));
  });
}

test('all example frames decode and re-encode identically', () => {
  for (const [name, frame] of Object.entries(FRAMES)) {
    const dec = new pc.FrameDecoder();
    dec.push(frame);
    const msg = pc.decodeBody(dec.nextFrame());
    assert.strictEqual(dec.nextFrame(), null);
    assert.strictEqual(pc.encodeFrame(msg).toString('hex'), frame.toString('hex'), name);
  }
  const ev = pc.decodeBody(FRAMES['event-message'].subarray(4));
  assert.deepStrictEqual(Array.from(ev.data.data), [1, 2, 3]);
  assert.ok(ev.data.data instanceof Uint8Array);
});

test('decoder limits and malformed bodies', () => {
  const dec = new pc.FrameDecoder(8);
  dec.push(Buffer.from([0, 0, 0, 9]));
  assert.throws(() => dec.nextFrame(), (e) => e.code === 'FRAME_TOO_LARGE');
  assert.throws(() => pc.decodeBody(Buffer.from([0xc1])), (e) => e.code === 'MALFORMED_FRAME');
  assert.throws(() => pc.decodeBody(Buffer.from([0x90])), (e) => e.code === 'MALFORMED_FRAME');
});

test('defaultSocketPath', () => {
  assert.strictEqual(pc.defaultSocketPath({ PEERIX_SOCKET: '/x' }), '/x');
  assert.strictEqual(pc.defaultSocketPath({ XDG_RUNTIME_DIR: '/r' }), '/r/peerix/peerixd.sock');
  assert.strictEqual(pc.defaultSocketPath({}), '/run/peerix/peerixd.sock');
});

// FAKE daemon for client tests only.
function fakeDaemon(sock) {
  const dec = new pc.FrameDecoder();
  sock.on('data', (d) => {
    dec.push(d);
    let body;
    while ((body = dec.nextFrame()) !== null) {
      const msg = pc.decodeBody(body);
      let out;
      if (msg.type === 'hello') {
        out = [{ type: 'welcome', version: 1, daemon: 'fake', id: 'me', capabilities: [], max_frame: pc.DEFAULT_MAX_FRAME }];
      } else if (msg.op === 'subscribe') {
        out = [
          { type: 'reply', id: msg.id, ok: true, result: {} },
          { type: 'event', seq: 1, name: 'channel:message', room: 'lobby',
            data: { peer: 'p', id: 'p', label: 'default', type: 'text', data: 'yo', transfer: 1, offset: 0, final: true } },
        ];
      } else if (msg.op === 'leave') {
        out = [{ type: 'reply', id: msg.id, ok: false, error: { code: 'NOT_JOINED', message: 'nope' } }];
      } else {
        out = [{ type: 'reply', id: msg.id, ok: true, result: { op: msg.op } }];
      }
      for (const m of out) sock.write(pc.encodeFrame(m));
    }
  });
}

test('client against a fake daemon', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peerix-node-'));
  const sockPath = path.join(dir, 'fake.sock');
  const server = net.createServer(fakeDaemon);
  await new Promise((r) => server.listen(sockPath, r));
  try {
    const client = await pc.connect(sockPath);
    assert.strictEqual(client.machineId, 'me');
    const [a, b] = await Promise.all([client.status(), client.request('peers', { room: 'x' })]);
    assert.deepStrictEqual([a, b], [{ op: 'status' }, { op: 'peers' }]);
    await assert.rejects(client.leave('x'), (e) => e.code === 'NOT_JOINED');
    const events = await client.subscribe(['channel:message']);
    for await (const ev of events) {
      assert.strictEqual(ev.data.data, 'yo');
      break;
    }
    client.close();
    await assert.rejects(pc.connect(path.join(dir, 'missing.sock')), (e) => e.code === 'NOT_RUNNING');
  } finally {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('index.d.ts declares exactly the methods index.js has', () => {
  const fs = require('node:fs');
  const dts = fs.readFileSync(require.resolve('../index.d.ts'), 'utf8');
  const body = dts.slice(dts.indexOf('export class Client {'), dts.indexOf('export function connect'));
  const declared = new Set([...body.matchAll(/^ {2}([a-zA-Z]+)\(/gm)].map((m) => m[1]));
  const { Client } = require('..');
  const actual = new Set(
    Object.getOwnPropertyNames(Client.prototype).filter(
      (n) => n !== 'constructor' && !n.startsWith('_') && typeof Object.getOwnPropertyDescriptor(Client.prototype, n).value === 'function',
    ),
  );
  assert.deepStrictEqual([...declared].sort(), [...actual].sort());
  const exported = Object.keys(require('..')).sort();
  const declaredExports = [...dts.matchAll(/^export (?:const|function|class) ([A-Za-z_]+)/gm)].map((m) => m[1]).sort();
  assert.deepStrictEqual(declaredExports, exported);
});
