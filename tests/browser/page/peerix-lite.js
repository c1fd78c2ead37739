// peerix-lite: a minimal, faithful re-implementation of the Peerix 0.7.0 *wire behaviour* as a
// browser peer, using the browser's own RTCPeerConnection and WebCrypto. Section numbers refer to
// shared/peerix-wire-protocol.md. Runs in Chromium and (codec parts only) in Node >= 20.
//
// Scope: identity (§1), namespaces (§2), NATS driver (§3.2), signaling codec and reactions
// (§4, §5), control channel and perfect negotiation (§6), framed user channels with acks (§7),
// Peerix-style events (§9.2). Not implemented: media (§8), verify(), the (buggy) re-invoke on
// failure (§5.7: with encryption on it never leaves Peerix either).

// ---------------------------------------------------------------------------------------------
// §1.3 Base62 (0-9 a-z A-Z)

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const TE = new TextEncoder();
const TD = new TextDecoder();

function bytesToBig(bytes) {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function bigToBytes(n, len) {
  const out = [];
  while (n > 0n) {
    out.unshift(Number(n & 0xffn));
    n >>= 8n;
  }
  if (out.length === 0) out.push(0);
  if (len === undefined) return Uint8Array.from(out);
  while (out.length < len) out.unshift(0);
  return Uint8Array.from(out.slice(out.length - len));
}

export function base62Encode(bytes) {
  if (bytes.length === 0) return '';
  let n = bytesToBig(bytes);
  if (n === 0n) return '0';
  let s = '';
  while (n > 0n) {
    s = ALPHABET[Number(n % 62n)] + s;
    n /= 62n;
  }
  return s;
}

export function base62Decode(text, len) {
  if (text.length === 0) return len === undefined ? new Uint8Array(0) : new Uint8Array(len);
  let n = 0n;
  for (const c of text) {
    const d = ALPHABET.indexOf(c);
    if (d < 0) throw new Error(`Invalid base62 character ${JSON.stringify(c)}`);
    n = n * 62n + BigInt(d);
  }
  return bigToBytes(n, len);
}

// §2.2 E(s) with namespaceHashing = true (default), or the escaping when false.
export async function namespace(s, hashing = true) {
  if (!hashing) return Array.from(String(s), (c) => (/^[A-Za-z0-9_-]$/.test(c) ? c : '_')).join('');
  const digest = await crypto.subtle.digest('SHA-256', TE.encode(String(s)));
  return base62Encode(new Uint8Array(digest));
}

// ---------------------------------------------------------------------------------------------
// §4.1 The protobuf-like codec. Encoder: ascending fields, emits zero/false/empty values, skips
// null/undefined. Decoder: schema-checked, max 5-byte varints, last duplicate wins.

function pushVarint(out, n) {
  n >>>= 0;
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
}

/** fields: [[fieldNumber, value], ...] with value number | boolean | Uint8Array | null. */
export function encodeFields(fields) {
  const head = [];
  const parts = [];
  let total = 0;
  const flush = () => {
    if (head.length) {
      const a = Uint8Array.from(head);
      parts.push(a);
      total += a.length;
      head.length = 0;
    }
  };
  for (const [num, value] of [...fields].sort((a, b) => a[0] - b[0])) {
    if (value === null || value === undefined) continue;
    if (value instanceof Uint8Array) {
      pushVarint(head, (num << 3) | 2);
      pushVarint(head, value.length);
      flush();
      parts.push(value);
      total += value.length;
    } else {
      pushVarint(head, (num << 3) | 0);
      pushVarint(head, typeof value === 'boolean' ? (value ? 1 : 0) : value);
    }
  }
  flush();
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** schema: {fieldNumber: 'uint' | 'bool' | 'bytes'}; returns {fieldNumber: value} (absent = undefined). */
export function decodeFields(buf, schema) {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  let pos = 0;
  const varint = () => {
    let result = 0;
    for (let i = 0; i < 5; i++) {
      if (pos >= bytes.length) throw new Error('Truncated varint');
      const b = bytes[pos++];
      if (i === 4) {
        if (b & 0xf0) throw new Error('Varint too long');
        return (result + b * 2 ** 28) >>> 0;
      }
      result |= (b & 0x7f) << (7 * i);
      if (!(b & 0x80)) return result >>> 0;
    }
    throw new Error('unreachable');
  };
  const out = {};
  while (pos < bytes.length) {
    const tag = varint();
    const num = tag >>> 3;
    const wt = tag & 7;
    if (num === 0) throw new Error('Invalid field number 0');
    const kind = schema[num];
    const expect = kind === undefined ? undefined : kind === 'bytes' ? 2 : 0;
    if (expect !== undefined && expect !== wt) throw new Error(`Wrong wire type for field ${num}`);
    if (wt === 0) {
      const v = varint();
      if (kind === 'bool') {
        if (v > 1) throw new Error('Invalid bool');
        out[num] = v === 1;
      } else if (kind) out[num] = v;
    } else if (wt === 2) {
      const len = varint();
      if (pos + len > bytes.length) throw new Error('Truncated bytes');
      if (kind) out[num] = bytes.slice(pos, pos + len);
      pos += len;
    } else if (wt === 1 || wt === 5) {
      pos += wt === 1 ? 8 : 4;
      if (pos > bytes.length) throw new Error('Truncated fixed field');
    } else throw new Error(`Unsupported wire type ${wt}`);
  }
  return out;
}

const PACKET = { 1: 'uint', 2: 'uint', 3: 'bytes', 4: 'bytes' };
const CONTROL = { 1: 'uint', 2: 'bytes' };
const FRAME = { 1: 'uint', 2: 'bool', 3: 'uint', 4: 'uint', 5: 'bool', 6: 'bool', 7: 'bytes', 8: 'bytes' };

export const SignalType = { announce: 1, invoke: 2, offer: 3, answer: 4, candidate: 5 };

/** §4.2 envelope: {type, flags, sender: 33 bytes, payload}. All four fields always emitted. */
export function encodePacket({ type, flags, sender, payload }) {
  return encodeFields([[1, type], [2, flags], [3, sender], [4, payload]]);
}

export function decodePacket(buf) {
  const f = decodeFields(buf, PACKET);
  return { type: f[1], flags: f[2] ?? 0, sender: f[3], payload: f[4] };
}

// ---------------------------------------------------------------------------------------------
// §4.4 zlib via CompressionStream('deflate'); §4.5 AES-256-GCM with the raw ECDH X coordinate.

async function pipeBytes(bytes, transform) {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export const deflate = (bytes) => pipeBytes(bytes, new CompressionStream('deflate'));
export const inflate = (bytes) => pipeBytes(bytes, new DecompressionStream('deflate'));

// P-256 parameters for point decompression (WebCrypto only imports uncompressed raw points).
const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

function modPow(base, exp, mod) {
  let r = 1n;
  base %= mod;
  while (exp > 0n) {
    if (exp & 1n) r = (r * base) % mod;
    base = (base * base) % mod;
    exp >>= 1n;
  }
  return r;
}

/** SEC1 compressed (33 bytes) -> uncompressed (65 bytes), with Peerix's validation (§1.1). */
export function decompressPoint(c) {
  if (c.length !== 33 || (c[0] !== 2 && c[0] !== 3)) throw new Error('Invalid compressed public key prefix');
  const x = bytesToBig(c.subarray(1));
  if (x >= P) throw new Error('Invalid compressed public key: x >= p');
  const rhs = (((x * x * x - 3n * x + B) % P) + P) % P;
  let y = modPow(rhs, (P + 1n) / 4n, P);
  if ((y * y) % P !== rhs) throw new Error('Invalid compressed public key: x coordinate is not on the curve');
  if ((y & 1n) !== BigInt(c[0] & 1)) y = P - y;
  const out = new Uint8Array(65);
  out[0] = 4;
  out.set(bigToBytes(x, 32), 1);
  out.set(bigToBytes(y, 32), 33);
  return out;
}

export function compressPoint(raw65) {
  const out = new Uint8Array(33);
  out[0] = 2 + (raw65[64] & 1);
  out.set(raw65.subarray(1, 33), 1);
  return out;
}

/** §1.1 identity: fresh P-256 key pair, id = base62(compressed public key). */
export async function generateIdentity() {
  const keyPair = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveKey']);
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', keyPair.publicKey));
  const sender = compressPoint(raw);
  return { privateKey: keyPair.privateKey, sender, id: base62Encode(sender) };
}

/** AES-256-GCM key = first 256 bits of the raw ECDH secret (= X), no KDF (§4.5). */
export async function deriveAesKey(privateKey, remoteSender, extractable = false) {
  const publicKey = await crypto.subtle.importKey(
    'raw', decompressPoint(remoteSender), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
  return crypto.subtle.deriveKey(
    { name: 'ECDH', public: publicKey }, privateKey, { name: 'AES-GCM', length: 256 }, extractable,
    ['encrypt', 'decrypt']);
}

/** §4.3 send pipeline: JSON -> deflate if strictly shorter -> AES-GCM. Returns {flags, payload}. */
export async function sealMessage(message, { key = null, compress = true } = {}) {
  if (message === undefined || message === null) return { flags: 0, payload: new Uint8Array(0) };
  let data = TE.encode(JSON.stringify(message));
  let flags = 0;
  if (compress && typeof CompressionStream !== 'undefined') {
    const z = await deflate(data);
    if (z.length < data.length) {
      data = z;
      flags |= 1;
    }
  }
  if (key) {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, key, data));
    data = new Uint8Array(12 + ct.length);
    data.set(iv);
    data.set(ct, 12);
    flags |= 2;
  }
  return { flags, payload: data };
}

/** §4.3 receive pipeline. Returns the JSON array (empty payload -> []). */
export async function openMessage(flags, payload, key = null) {
  if (!payload) throw new TypeError('Packet has no payload');
  if (payload.length === 0) return [];
  let data = payload;
  if (key) {
    if (!(flags & 2)) throw new Error('Payload is not encrypted');
    data = new Uint8Array(await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: data.subarray(0, 12) }, key, data.subarray(12)));
  }
  if (flags & 1) {
    try {
      data = await inflate(data);
    } catch {
      // Peerix silently uses the bytes as they are.
    }
  }
  const value = JSON.parse(TD.decode(data));
  if (!Array.isArray(value)) throw new Error('Invalid signaling message');
  return value;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

class Emitter {
  #handlers = new Map();
  on(name, fn) {
    if (!this.#handlers.has(name)) this.#handlers.set(name, new Set());
    this.#handlers.get(name).add(fn);
    return () => this.#handlers.get(name)?.delete(fn);
  }
  emit(name, payload) {
    const event = { name, ...payload };
    const group = name.split(':')[0];
    // Peerix delivers events asynchronously.
    queueMicrotask(() => {
      for (const key of new Set([name, group, '*'])) {
        for (const fn of this.#handlers.get(key) ?? []) {
          try {
            fn(event);
          } catch (err) {
            console.error('event handler failed', err);
          }
        }
      }
    });
  }
  /** Resolves with the first event `name` satisfying `pred`. */
  once(name, pred = () => true, timeoutMs = 30000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${name}`));
      }, timeoutMs);
      const off = this.on(name, (ev) => {
        if (!pred(ev)) return;
        clearTimeout(timer);
        off();
        resolve(ev);
      });
    });
  }
}

const sdpUfrag = (sdp) => /^a=ice-ufrag:(.*?)\s*$/m.exec(sdp ?? '')?.[1];

const CHUNK = 16384 - 64; // §7.4
const HIGH_WATER = 256 * 1024;
const LOW_WATER = 32 * 1024;
const ACK_TIMEOUT = 10000;

// ---------------------------------------------------------------------------------------------
// §7 A framed user channel

class Channel {
  constructor(conn, dc) {
    this.conn = conn;
    this.dc = dc;
    this.label = dc.label;
    this.nextId = 1;
    this.incoming = new Map();
    this.outgoing = new Map();
    this.sendQueue = Promise.resolve();
    this.framed = dc.ordered && dc.protocol === '';
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = LOW_WATER;
    const base = { peer: conn.id, id: conn.id, label: this.label, channel: dc };
    this.base = base;
    conn.room.emit('channel:new', base);
    const onOpen = () => conn.room.emit('channel:open', base);
    if (dc.readyState === 'open') queueMicrotask(onOpen);
    else dc.addEventListener('open', onOpen);
    dc.addEventListener('close', () => {
      for (const p of this.outgoing.values()) p.reject(new Error('Channel closed'));
      this.outgoing.clear();
      if (conn.channels.get(this.label) === this) conn.channels.delete(this.label);
      conn.room.emit('channel:close', base);
    });
    dc.addEventListener('error', (e) => conn.room.emit('channel:error', { ...base, error: e.error ?? e }));
    dc.addEventListener('message', (e) => {
      if (dc.readyState !== 'open') {
        // Diagnostics (not Peerix): Chromium can dispatch a message before `open`.
        conn.room.emit('harness:early-message', { ...base, readyState: dc.readyState });
      }
      this.#onMessage(e.data);
    });
  }

  #emitMessage(data, info, type) {
    this.conn.room.emit('channel:message', { ...this.base, data, info, type });
  }

  #onMessage(data) {
    if (!this.framed || typeof data === 'string') return this.#emitMessage(data, undefined, 'raw');
    let f;
    try {
      f = decodeFields(data, FRAME);
    } catch (error) {
      this.conn.room.emit('channel:error', { ...this.base, error: new Error('Failed to decode message') });
      return;
    }
    const id = f[1];
    if (f[2]) {
      const p = this.outgoing.get(id);
      if (!p) return;
      if (f[5]) p.reject(new Error('Aborted by receiver'));
      else if (f[6]) p.resolve();
      return;
    }
    if (f[5]) {
      const t = this.incoming.get(id);
      if (t) {
        this.incoming.delete(id);
        this.conn.room.emit('channel:error', { ...this.base, error: new Error('Aborted by sender') });
      }
      return;
    }
    if (f[4] && f[3] === 0) {
      if (this.incoming.has(id)) this.#finish(id, false); // closed as if complete (§7.5)
      let info;
      try {
        info = f[7] ? JSON.parse(TD.decode(f[7])) : undefined;
      } catch {
        info = undefined;
      }
      this.incoming.set(id, { type: f[4], info, chunks: [], count: 0, size: 0 });
    }
    const t = this.incoming.get(id);
    if (f[8] !== undefined && t) {
      if (f[3] !== t.count) {
        this.incoming.delete(id);
        this.conn.room.emit('channel:error', { ...this.base, error: new Error('Incorrect message order') });
        return;
      }
      t.chunks.push(f[8]);
      t.count++;
      t.size += f[8].length;
    }
    if (f[6] && t) this.#finish(id, true);
  }

  #finish(id, ack) {
    const t = this.incoming.get(id);
    this.incoming.delete(id);
    const all = new Uint8Array(t.size);
    let o = 0;
    for (const c of t.chunks) {
      all.set(c, o);
      o += c.length;
    }
    if (ack) {
      const frame = encodeFields([[1, id], [2, true], [6, true]]);
      if (this.dc.readyState === 'open') this.dc.send(frame);
      else if (this.dc.readyState === 'connecting') {
        // Chromium 148 can dispatch `message` on a locally created channel before `open`
        // (readyState still "connecting", where send() throws). Deferring the ack to `open` is
        // this harness's choice; whether Peerix 0.7 itself loses the ack here is unverified.
        this.conn.room.emit('harness:deferred-ack', { ...this.base, transfer: id });
        this.dc.addEventListener('open', () => this.dc.send(frame), { once: true });
      }
    }
    let data;
    if (t.type === 1) data = TD.decode(all);
    else if (t.type === 2) data = JSON.parse(TD.decode(all));
    else if (t.type === 3) data = new Blob([all]);
    else data = all;
    this.#emitMessage(data, t.info, { 1: 'text', 2: 'json', 3: 'blob' }[t.type] ?? 'bytes');
  }

  async #waitBuffer(frameSize) {
    const limit = HIGH_WATER - frameSize;
    if (this.dc.bufferedAmount <= limit) return;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error('Send buffer timed out'));
      }, ACK_TIMEOUT);
      const check = () => {
        if (this.dc.bufferedAmount <= limit) {
          cleanup();
          resolve();
        } else if (this.dc.readyState !== 'open') {
          cleanup();
          reject(new Error('Channel closed'));
        }
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.dc.removeEventListener('bufferedamountlow', check);
        this.dc.removeEventListener('close', check);
      };
      this.dc.addEventListener('bufferedamountlow', check);
      this.dc.addEventListener('close', check);
    });
  }

  /** Sends one message (strictly after the previous one); resolves on the receiver's ack. */
  send(message, { info, onProgress } = {}) {
    const run = () => this.#send(message, info, onProgress);
    const p = this.sendQueue.then(run, run);
    this.sendQueue = p.catch(() => {});
    return p;
  }

  async #send(message, info, onProgress) {
    if (!this.framed) throw new Error('Channel is not supported');
    let type;
    let bytes;
    if (typeof message === 'string') {
      type = 1;
      bytes = TE.encode(message);
    } else if (typeof Blob !== 'undefined' && message instanceof Blob) {
      type = 3;
      bytes = new Uint8Array(await message.arrayBuffer());
    } else if (message instanceof ArrayBuffer) {
      type = 4;
      bytes = new Uint8Array(message);
    } else if (ArrayBuffer.isView(message)) {
      type = 4;
      bytes = new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    } else {
      type = 2;
      bytes = TE.encode(JSON.stringify(message === undefined ? null : message));
    }
    if (bytes.length === 0) return { id: 0, bytes: 0 }; // nothing is transmitted (§7.4)
    const infoBytes = info ? TE.encode(JSON.stringify(info)) : null;
    const id = this.nextId;
    this.nextId = this.nextId >= 65535 ? 1 : this.nextId + 1;
    let ackResolve;
    let ackReject;
    const acked = new Promise((resolve, reject) => {
      ackResolve = resolve;
      ackReject = reject;
    });
    this.outgoing.set(id, { resolve: ackResolve, reject: ackReject });
    try {
      let offset = 0;
      for (let index = 0; ; index++) {
        const size = index === 0 ? CHUNK - (infoBytes?.length ?? 0) : CHUNK;
        const chunk = bytes.subarray(offset, offset + size);
        offset += chunk.length;
        const done = offset >= bytes.length;
        const frame = encodeFields([
          [1, id], [3, index], [4, index === 0 ? type : null], [6, done],
          [7, index === 0 ? infoBytes : null], [8, chunk],
        ]);
        await this.#waitBuffer(frame.length);
        if (this.dc.readyState !== 'open') throw new Error('Channel closed');
        this.dc.send(frame);
        onProgress?.({ current: offset, total: bytes.length, done });
        if (done) break;
      }
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('Transfer timed out')), ACK_TIMEOUT);
      });
      await Promise.race([acked, timeout]).finally(() => clearTimeout(timer));
      return { id, bytes: bytes.length };
    } catch (err) {
      // Peerix sends ask+abort for sender-side aborts too (§7.5).
      if (this.dc.readyState === 'open') this.dc.send(encodeFields([[1, id], [2, true], [5, true]]));
      throw err;
    } finally {
      this.outgoing.delete(id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// §5/§6 One remote peer = one RTCPeerConnection

class Connection {
  constructor(room, id, metadata) {
    this.room = room;
    this.id = id;
    this.metadata = metadata ?? null;
    this.polite = room.me.id > id; // §1.4: greater ASCII id is polite
    this.state = 'new';
    this.channels = new Map();
    this.labels = {};
    this.remoteLabels = {};
    this.pendingCandidates = [];
    this.ignoreOffer = false;
    this.queue = Promise.resolve();
    this.batch = [];
    this.batchTimer = null;
    this.closed = false;

    const pc = new RTCPeerConnection({ iceServers: room.options.iceServers ?? [] });
    this.pc = pc;
    // §6.1 negotiated control channel, stream 0, created before any SDP.
    this.control = pc.createDataChannel('', { negotiated: true, id: 0, ordered: true });
    this.control.binaryType = 'arraybuffer';
    this.control.addEventListener('open', () => this.#onControlOpen());
    this.control.addEventListener('close', () => this.close());
    this.control.addEventListener('message', (e) => this.#onControlMessage(e.data));

    pc.addEventListener('negotiationneeded', () => this.enqueue(() => this.#makeOffer()));
    pc.addEventListener('icecandidate', (e) => this.#onLocalCandidate(e.candidate));
    pc.addEventListener('iceconnectionstatechange', () => this.#onIceState());
    pc.addEventListener('datachannel', (e) => this.#adopt(e.channel));
    this.timer = setTimeout(() => this.#fail(), room.options.connectionTimeout);
    room.emit('connection:new', { peer: this, state: 'new' });
  }

  get live() {
    return !this.closed;
  }

  enqueue(fn) {
    const p = this.queue.then(fn).catch((error) => {
      if (!this.closed) this.room.emit('error', { error, code: 'NEGOTIATION_ERROR', peer: this.id });
    });
    this.queue = p;
    return p;
  }

  #setState(state) {
    if (this.state === state || this.state === 'closed') return;
    this.state = state;
    this.room.emit(`connection:${state}`, { peer: this, state });
  }

  #onIceState() {
    const s = this.pc.iceConnectionState;
    if (s === 'checking') this.#setState('connecting');
    else if (s === 'connected') {
      clearTimeout(this.timer);
      this.#setState('connected');
    } else if (s === 'disconnected') {
      this.#setState('disconnected');
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.#fail(), this.room.options.connectionTimeout);
    } else if (s === 'failed') this.#fail();
    else if (s === 'closed') this.close();
  }

  #fail() {
    if (this.closed) return;
    this.#setState('failed');
    this.close();
  }

  /** Sends a signal: over the control channel when open, else over signaling (§5, §6.3). */
  #signal(kind, value) {
    if (this.control.readyState === 'open') {
      const msg = kind === 'offer' ? [value, this.labels] : [value];
      this.control.send(encodeFields([[1, 1], [2, TE.encode(JSON.stringify(msg))]]));
      return;
    }
    if (kind === 'offer') this.room.publishTo(this.id, SignalType.offer, [value, this.room.me.metadata ?? null]);
    else if (kind === 'answer') this.room.publishTo(this.id, SignalType.answer, [value]);
  }

  async #makeOffer() {
    if (this.closed || this.pc.signalingState !== 'stable') return;
    const offer = await this.pc.createOffer();
    if (this.pc.signalingState !== 'stable') return;
    await this.pc.setLocalDescription(offer);
    const d = this.pc.localDescription;
    this.#signal('offer', { type: d.type, sdp: d.sdp });
  }

  #onLocalCandidate(candidate) {
    if (!candidate || !candidate.candidate || this.closed) return;
    const json = candidate.toJSON();
    this.room.localCandidates.push({ peer: this.id, ...json });
    if (this.control.readyState === 'open') {
      this.control.send(encodeFields([[1, 1], [2, TE.encode(JSON.stringify([json]))]]));
      return;
    }
    // §5.5 trailing-edge debounce
    this.batch.push(json);
    clearTimeout(this.batchTimer);
    this.batchTimer = setTimeout(() => {
      const batch = this.batch;
      this.batch = [];
      if (!this.closed && batch.length) this.room.publishTo(this.id, SignalType.candidate, batch);
    }, this.room.options.iceCandidateDebounce);
  }

  /** Applies a description or candidate (serialized per connection, §5.9, §6.5). */
  handleSignal(value) {
    return this.enqueue(async () => {
      if (this.closed || !value || typeof value !== 'object') return;
      const pc = this.pc;
      if (value.type && value.sdp) {
        const collision = value.type === 'offer' && pc.signalingState !== 'stable';
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) {
          this.pendingCandidates = [];
          return;
        }
        if (collision) await pc.setLocalDescription({ type: 'rollback' });
        await pc.setRemoteDescription({ type: value.type, sdp: value.sdp });
        for (const c of this.pendingCandidates.splice(0)) await this.#addCandidate(c);
        if (value.type === 'offer') {
          const answer = await pc.createAnswer();
          await pc.setLocalDescription(answer);
          const d = pc.localDescription;
          this.#signal('answer', { type: d.type, sdp: d.sdp });
        }
      } else if ('candidate' in value) {
        if (!value.candidate) return;
        if (this.ignoreOffer && pc.signalingState !== 'stable') return;
        if (!pc.remoteDescription) this.pendingCandidates.push(value);
        else await this.#addCandidate(value);
      }
    });
  }

  async #addCandidate(c) {
    try {
      this.room.remoteCandidates.push({ peer: this.id, ...c });
      await this.pc.addIceCandidate(c);
    } catch (error) {
      if (!this.ignoreOffer) this.room.emit('error', { error, code: 'ICECANDIDATE_ERROR', peer: this.id });
    }
  }

  remoteUfrag() {
    return sdpUfrag(this.pc.remoteDescription?.sdp);
  }

  #onControlOpen() {
    // §6.6: impolite creates configured channels, polite requests them.
    for (const [label, opts] of this.room.openLabels) this.openChannel(label, opts);
    this.room.emit('harness:control-open', { peer: this.id });
  }

  openChannel(label, opts = {}) {
    if (this.control.readyState !== 'open' || this.closed) return;
    if (this.polite) {
      const req = { ...opts, label };
      this.control.send(encodeFields([[1, 2], [2, TE.encode(JSON.stringify(req))]]));
    } else if (!this.channels.has(label)) {
      this.#adopt(this.pc.createDataChannel(label, opts));
    }
  }

  #adopt(dc) {
    const old = this.channels.get(dc.label);
    this.channels.set(dc.label, new Channel(this, dc));
    if (old && old.dc !== dc) old.dc.close(); // a second channel with a known label replaces it
  }

  #onControlMessage(data) {
    if (typeof data === 'string') return; // text control messages are ignored
    let env;
    try {
      env = decodeFields(data, CONTROL);
    } catch {
      return;
    }
    if (env[1] === undefined || env[2] === undefined) return;
    let payload;
    try {
      payload = JSON.parse(TD.decode(env[2]));
    } catch (error) {
      this.room.emit('error', { error, code: 'SIGNALING_ERROR', peer: this.id });
      return;
    }
    this.room.controlLog.push({ peer: this.id, dir: 'in', event: env[1], payload });
    if (env[1] === 1 && Array.isArray(payload)) {
      if (payload[1] && typeof payload[1] === 'object') this.remoteLabels = payload[1];
      this.handleSignal(payload[0]);
    } else if (env[1] === 2 && payload && typeof payload === 'object') {
      const { label, ...opts } = payload;
      if (!this.polite && typeof label === 'string' && !this.channels.has(label)) {
        this.#adopt(this.pc.createDataChannel(label, opts));
      }
    }
  }

  close() {
    if (this.closed) return;
    clearTimeout(this.timer);
    clearTimeout(this.batchTimer);
    this.closed = true;
    try {
      this.control.close();
    } catch {}
    for (const ch of this.channels.values()) {
      try {
        ch.dc.close();
      } catch {}
    }
    this.pc.close();
    this.room.forget(this.id);
    this.state = 'closed';
    this.room.emit('connection:closed', { peer: this, state: 'closed' });
  }
}

// ---------------------------------------------------------------------------------------------
// §3.2 NATS driver over a connected nats.ws / nats-core client

export class NatsDriver {
  constructor(nc, { prefix = '' } = {}) {
    this.nc = nc;
    this.prefix = prefix;
    this.subs = new Map();
  }
  subscribe(ns, handler) {
    const sub = this.nc.subscribe(this.prefix + ns, {
      callback: (err, msg) => {
        if (!err) handler(msg.data);
      },
    });
    this.subs.set(ns, sub);
  }
  unsubscribe(ns) {
    this.subs.get(ns)?.unsubscribe();
    this.subs.delete(ns);
  }
  publish(ns, bytes) {
    this.nc.publish(this.prefix + ns, bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// The Room

export class Room extends Emitter {
  constructor(options = {}) {
    super();
    this.options = {
      id: 'default',
      iceServers: [],
      iceCandidateDebounce: 50,
      connectionTimeout: 15000,
      namespaceHashing: true,
      signalingCompression: true,
      signalingEncryption: true,
      ...options,
    };
    this.driver = options.driver;
    this.peers = new Map();
    this.keys = new Map();
    this.queued = new Map();
    this.openLabels = new Map();
    this.me = null;
    this.localCandidates = [];
    this.remoteCandidates = [];
    this.controlLog = [];
    this.signalLog = [];
    this.inbox = Promise.resolve();
  }

  async join(metadata) {
    if (this.me) return null;
    let identity;
    if (this.options.signalingEncryption) {
      // acceptId is a test hook (not Peerix): regenerate until the id has the wanted ASCII order.
      do identity = await generateIdentity();
      while (this.options.acceptId && !this.options.acceptId(identity.id));
    } else {
      const sender = crypto.getRandomValues(new Uint8Array(33));
      identity = { sender, id: base62Encode(sender), privateKey: null };
    }
    this.identity = identity;
    this.me = { id: identity.id, metadata };
    this.roomNs = await namespace(this.options.id, this.options.namespaceHashing);
    this.myNs = await namespace(identity.id, this.options.namespaceHashing);
    const onPacket = (bytes) => {
      // Decode in arrival order (Peerix decodes concurrently; the per-connection queue then
      // serializes application — arrival order is one of the orders Peerix may produce).
      this.inbox = this.inbox.then(() => this.#onPacket(bytes)).catch((error) =>
        this.emit('error', { error, code: 'SIGNALING_ERROR' }));
    };
    this.driver.subscribe(this.roomNs, onPacket);
    this.driver.subscribe(this.myNs, onPacket);
    await this.#publish(this.roomNs, SignalType.announce, null, null);
    return this.me;
  }

  leave() {
    if (!this.me) return;
    this.driver.unsubscribe(this.roomNs);
    this.driver.unsubscribe(this.myNs);
    for (const conn of [...this.peers.values()]) conn.close();
    this.keys.clear();
    this.me = null;
  }

  forget(id) {
    this.peers.delete(id);
    this.keys.delete(id);
    this.queued.delete(id);
  }

  async #keyFor(id, senderBytes) {
    if (!this.options.signalingEncryption) return null;
    let key = this.keys.get(id);
    if (!key) {
      key = await deriveAesKey(this.identity.privateKey, senderBytes ?? base62Decode(id, 33));
      this.keys.set(id, key);
    }
    return key;
  }

  async #publish(ns, type, message, key) {
    const { flags, payload } = await sealMessage(message, {
      key: message === null || message === undefined ? null : key,
      compress: this.options.signalingCompression,
    });
    this.signalLog.push({ dir: 'out', type, message, flags, size: payload.length });
    this.driver.publish(ns, encodePacket({ type, flags, sender: this.identity.sender, payload }));
  }

  /** Publishes a signal to the personal namespace of peer `id`. */
  async publishTo(id, type, message) {
    try {
      const key = await this.#keyFor(id);
      await this.#publish(await namespace(id, this.options.namespaceHashing), type, message, key);
    } catch (error) {
      this.emit('error', { error, code: 'SIGNALING_ERROR', peer: id });
    }
  }

  async #onPacket(bytes) {
    if (!this.me) return;
    let packet;
    try {
      packet = decodePacket(bytes);
    } catch (error) {
      throw new Error(`Invalid packet: ${error.message}`);
    }
    if (!packet.sender || packet.sender.length === 0) return;
    const from = base62Encode(packet.sender);
    if (from === this.me.id) return;
    const key = await this.#keyFor(from, packet.sender);
    const message = await openMessage(packet.flags, packet.payload, key);
    if (!(packet.type >= 1 && packet.type <= 5)) throw new Error('Invalid signaling message');
    this.signalLog.push({ dir: 'in', type: packet.type, from, flags: packet.flags, message });
    this.emit('harness:signal', { type: packet.type, from });
    const conn = this.peers.get(from);
    switch (packet.type) {
      case SignalType.announce:
        await this.publishTo(from, SignalType.invoke, this.me.metadata === undefined ? null : [this.me.metadata]);
        break;
      case SignalType.invoke:
        if (!conn?.live) this.#create(from, message[0]);
        break;
      case SignalType.offer: {
        const c = conn?.live ? conn : this.#create(from, message[1]);
        await c.handleSignal(message[0]);
        this.#flushQueued(c);
        break;
      }
      case SignalType.answer:
        if (conn?.live) {
          await conn.handleSignal(message[0]);
          this.#flushQueued(conn);
        }
        break;
      case SignalType.candidate:
        for (const cand of message) {
          const ufrag = conn?.remoteUfrag();
          if (!conn?.live || !ufrag || cand?.usernameFragment !== ufrag) {
            const q = this.queued.get(from) ?? [];
            q.push(cand);
            if (q.length > 100) q.shift();
            this.queued.set(from, q);
          } else conn.handleSignal(cand);
        }
        break;
      default:
    }
  }

  #flushQueued(conn) {
    const q = this.queued.get(conn.id);
    if (!q) return;
    const ufrag = conn.remoteUfrag();
    const keep = [];
    for (const cand of q) {
      if (ufrag && cand?.usernameFragment === ufrag) conn.handleSignal(cand);
      else keep.push(cand);
    }
    this.queued.set(conn.id, keep);
  }

  #create(id, metadata) {
    const conn = new Connection(this, id, metadata);
    this.peers.set(id, conn);
    return conn;
  }

  /** Registers a label; channels are created/requested when control channels open (§7.6). */
  open(label, opts = {}) {
    this.openLabels.set(label, opts);
    for (const conn of this.peers.values()) conn.openChannel(label, opts);
  }

  /** Sends to every connected peer (or `to`); resolves when all acked. */
  async send(message, { label = 'default', info, to, onProgress } = {}) {
    const targets = [...this.peers.values()].filter((c) => !to || c.id === to);
    return Promise.all(targets.map((c) => {
      const ch = c.channels.get(label);
      if (!ch) throw new Error(`No channel found for label ${label}`);
      return ch.send(message, { info, onProgress });
    }));
  }
}
