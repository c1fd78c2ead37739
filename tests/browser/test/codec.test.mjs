// Validates peerix-lite's codec against the real Chromium/Peerix 0.7.0 captures in
// shared/peerix-vectors and the byte vectors of the spec (§11). Run with `node --test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { webcrypto } from 'node:crypto';

import {
  base62Encode, base62Decode, namespace, encodeFields, decodeFields, encodePacket, decodePacket,
  openMessage, sealMessage, deriveAesKey, decompressPoint, compressPoint, deflate, inflate,
} from '../page/peerix-lite.js';

globalThis.crypto ??= webcrypto; // Node 18

const here = path.dirname(fileURLToPath(import.meta.url));
const VECTORS = process.env.PEERIX_VECTORS
  ?? [path.resolve(here, '../../../../shared/peerix-vectors'), '/work/shared/peerix-vectors'].find(existsSync);

const hex = (s) => Uint8Array.from(s.replace(/\s+/g, '').match(/../g) ?? [], (h) => parseInt(h, 16));
const toHex = (b) => Buffer.from(b).toString('hex');
const b64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));

const FRAME = { 1: 'uint', 2: 'bool', 3: 'uint', 4: 'uint', 5: 'bool', 6: 'bool', 7: 'bytes', 8: 'bytes' };

function loadSession(name) {
  assert.ok(VECTORS, 'shared/peerix-vectors not found (set PEERIX_VECTORS)');
  return JSON.parse(readFileSync(path.join(VECTORS, name), 'utf8'));
}

async function privateKeyOf(jwk) {
  const { key_ops: _ops, ext: _ext, ...clean } = jwk;
  return crypto.subtle.importKey('jwk', clean, { name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveKey']);
}

async function checkSession(name) {
  const s = loadSession(name);
  const { A, B } = s.peers;
  const opts = s.room_options;
  for (const [who, p] of Object.entries(s.peers)) {
    p.id_bytes_b64 ??= s.nats_messages.find((m) => m.decoded.sender_name === who)?.decoded.sender_b64;
  }
  // Namespaces (§2.2)
  assert.equal(await namespace(s.room_id, opts.namespaceHashing), A.room_subject);
  assert.equal(await namespace(A.id, opts.namespaceHashing), A.peer_subject);
  assert.equal(await namespace(B.id, opts.namespaceHashing), B.peer_subject);
  // Ids (§1)
  for (const p of [A, B]) {
    assert.equal(base62Encode(b64(p.id_bytes_b64)), p.id);
    assert.deepEqual(base62Decode(p.id, 33), b64(p.id_bytes_b64));
  }
  // Shared key (§4.5): derive it ourselves from A's private key and B's id.
  let key = null;
  if (opts.signalingEncryption) {
    const aB = await deriveAesKey(await privateKeyOf(A.keyPair.privateJwk), b64(B.id_bytes_b64), true);
    const bA = await deriveAesKey(await privateKeyOf(B.keyPair.privateJwk), b64(A.id_bytes_b64), true);
    const raw = new Uint8Array(await crypto.subtle.exportKey('raw', aB));
    assert.equal(Buffer.from(raw).toString('base64'), s.ecdh_shared_aes_key_b64);
    assert.deepEqual(new Uint8Array(await crypto.subtle.exportKey('raw', bA)), raw);
    // compress(decompress(x)) == x
    assert.deepEqual(compressPoint(decompressPoint(b64(A.id_bytes_b64))), b64(A.id_bytes_b64));
    key = aB;
  }
  assert.ok(s.nats_messages.length > 0);
  for (const m of s.nats_messages) {
    const bytes = b64(m.payload_b64);
    const p = decodePacket(bytes);
    const d = m.decoded;
    assert.equal(p.type, d.type, `seq ${m.seq} type`);
    assert.equal(p.flags, d.flags, `seq ${m.seq} flags`);
    assert.equal(base62Encode(p.sender), d.sender_id, `seq ${m.seq} sender`);
    assert.equal(p.payload.length, d.payload_len, `seq ${m.seq} payload length`);
    // Re-encoding gives the same bytes (all four fields, ascending).
    assert.equal(toHex(encodePacket(p)), toHex(bytes), `seq ${m.seq} re-encode`);
    const message = await openMessage(p.flags, p.payload, key);
    if (d.plaintext_json === null) assert.deepEqual(message, [], `seq ${m.seq}`);
    else assert.deepEqual(message, d.plaintext_json, `seq ${m.seq} plaintext`);
    // Subjects: announces to the room, the rest to the receiver's personal namespace.
    if (d.type === 1) assert.equal(m.subject, A.room_subject);
    else assert.equal(m.subject, d.sender_name === 'A' ? B.peer_subject : A.peer_subject);
  }
  // Data-channel frames of the capture decode with the frame schema (§7.3).
  for (const who of ['A', 'B']) {
    for (const f of s.datachannel_frames[who]) {
      if (f.truncated) continue;
      const bytes = b64(f.data_b64);
      if (f.label === '') {
        const env = decodeFields(bytes, { 1: 'uint', 2: 'bytes' });
        assert.ok(env[1] === 1 || env[1] === 2);
        JSON.parse(new TextDecoder().decode(env[2]));
      } else {
        const fr = decodeFields(bytes, FRAME);
        assert.ok(fr[1] >= 1);
        // Our encoder reproduces Peerix's frames byte for byte.
        const again = encodeFields(Object.entries(fr).map(([k, v]) => [Number(k), v]));
        assert.equal(toHex(again), toHex(bytes));
      }
    }
  }
  return s.nats_messages.length;
}

test('session-default.json: every NATS packet decodes, decrypts, inflates to plaintext_json', async () => {
  const n = await checkSession('session-default.json');
  assert.ok(n >= 7);
});

test('every other capture decodes too', async () => {
  const files = readdirSync(VECTORS).filter((f) => f.startsWith('session-') && f !== 'session-default.json');
  assert.ok(files.length >= 1);
  for (const f of files) await checkSession(f);
});

test('AES known answers recorded inside the pages', async () => {
  const s = loadSession('session-default.json');
  const key = await crypto.subtle.importKey('raw', b64(s.ecdh_shared_aes_key_b64), 'AES-GCM', false, ['decrypt']);
  let n = 0;
  for (const ops of Object.values(s.aes_operations)) {
    for (const op of ops) {
      const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: b64(op.iv_b64) }, key, b64(op.ciphertext_b64));
      assert.equal(Buffer.from(pt).toString('base64'), op.plaintext_b64);
      n++;
    }
  }
  assert.ok(n > 0);
});

test('spec §11 vectors: base62, namespaces, packets, frames', async () => {
  assert.equal(base62Encode(new Uint8Array(0)), '');
  assert.equal(base62Encode(hex('000000')), '0');
  assert.equal(base62Encode(hex('24')), 'A');
  assert.equal(base62Encode(hex('000001')), '1');
  assert.equal(base62Encode(hex('3e')), '10');
  assert.equal(base62Encode(hex('00' + 'ff'.repeat(32))), 'YHJSKWDa6oz1al1yMhwzwM8llg7hJNUca2J5RoW8xP1');
  assert.deepEqual(base62Decode('YHJSKWDa6oz1al1yMhwzwM8llg7hJNUca2J5RoW8xP1', 33), hex('00' + 'ff'.repeat(32)));
  assert.equal(base62Encode(hex('ff'.repeat(33))), '42EBs5Q5HIpqAOGOrBmmuHkKs7My5f842dtgccuY3hEIf');
  assert.deepEqual(base62Decode('A', 33), hex('00'.repeat(32) + '24'));

  assert.equal(await namespace('default'), 'dcjHO465qAJI1IZONIXMIkFG0xWJrBMJqIdGY94W88L');
  assert.equal(await namespace('my-room'), 'kt5sJF8R3JgTW2WOGWtOHhnzkniNtCjhEywWtylBd43');
  assert.equal(await namespace('room-32'), 'CFPOOHmgBgdFmoTgEh4C7BvZgRYzLxB2w0oK7A7YM');
  assert.equal(await namespace(''), 'RZwTDmWjELXeEmMEb0eIIegKayGGUPNsuJweEPhlXi5');
  assert.equal(await namespace('2FDZnerLHOX5D23sxBi26UB5SRCuhPDrOmIvJFrfNzTn'), 'T7n7wLS3qHXrycjxGpCmqW3Faj0LcfKdBGAdbku9lbm');
  assert.equal(await namespace('my room!', false), 'my_room_');
  assert.equal(await namespace('a😀b', false), 'a_b');

  const senderA = hex('02ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd');
  assert.equal(base62Encode(senderA), '2FDZnerLHOX5D23sxBi26UB5SRCuhPDrOmIvJFrfNzTn');
  assert.equal(toHex(encodePacket({ type: 1, flags: 0, sender: senderA, payload: new Uint8Array(0) })),
    '080110001a2102ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd2200');

  // §11.4(d) compressed + encrypted candidates, key of §11.3.
  const key = await crypto.subtle.importKey('raw',
    hex('53ddb02cae67f8e09a80f6485335ad28c28fbe3ff99b8e0cc7ccc4bdff6ddf06'), 'AES-GCM', false, ['encrypt', 'decrypt']);
  const pkt = decodePacket(hex('080510031a2102ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd22c201a0a1a2a3a4a5a6a7a8a9aaabc3f2085299e79f0eae049fbc175d7e4293db4b3072a9b747fb4dc42d01681f33a52943d955752d1679f89aca4c5c9a803a43fe5b6785745796d9890eb79e156051397355dc4441bd47f44049d2337b3ae4f75908a1135f8d288b1ec0b0eee2cfdffde6b17f8ee4a112832523c482f500848daac1270d649ab4932bae5a398f721fb2fcfcdc96e81af823c1c18cb5c7ee49092d45e5a661adc73fd5371ebf1a07260e7f72b3803b44f0eb249ee8246a5c392f3dfbac9a'));
  const cands = await openMessage(pkt.flags, pkt.payload, key);
  assert.equal(cands.length, 3);
  assert.equal(cands[2].usernameFragment, 'AbCd');
  assert.match(cands[1].candidate, /192\.0\.2\.2 50002/);
  // Round trip through our own sealing: compressed only when shorter.
  const sealed = await sealMessage(cands, { key });
  assert.equal(sealed.flags, 3);
  assert.deepEqual(await openMessage(sealed.flags, sealed.payload, key), cands);
  const small = await sealMessage([{ name: 'Alice' }], { key });
  assert.equal(small.flags, 2); // 18-byte JSON does not shrink
  assert.equal(small.payload.length, 18 + 28);
  assert.deepEqual(await inflate(await deflate(new TextEncoder().encode('x'.repeat(100)))),
    new TextEncoder().encode('x'.repeat(100)));
  await assert.rejects(openMessage(0, new TextEncoder().encode('[1]'), key), /not encrypted/);

  // §11.6 frames
  assert.equal(toHex(encodeFields([[1, 1], [3, 0], [4, 1], [6, true], [8, new TextEncoder().encode('Hello')]])),
    '08011800200130014205' + '48656c6c6f');
  assert.equal(toHex(encodeFields([[1, 1], [2, true], [6, true]])), '080110013001');
  assert.equal(toHex(encodeFields([[1, 2], [2, new TextEncoder().encode('{"label":"chat"}')]])),
    '080212107b226c6162656c223a2263686174227d');
  // Decoder rules (§4.1, §11.5)
  assert.equal(decodePacket(hex('0882808080001000' + '1a0101' + '2200')).type, 2);
  assert.throws(() => decodeFields(hex('088280808080801000'), FRAME));
  assert.throws(() => decodeFields(hex('1002'), FRAME)); // bool 2
  assert.throws(() => decodeFields(hex('0001'), FRAME)); // field 0
  assert.equal(decodePacket(hex('2200' + '1a0101' + '0801' + '4801')).type, 1); // reversed + unknown field 9
});
