'use strict';
/**
 * Node.js (>= 20) client for peerixd, the Peerix peer daemon.
 *
 * Speaks the peerixd local IPC protocol (see ipc-proto/PROTOCOL.md): frames of
 * a 4-byte big-endian length followed by one MessagePack map.
 * Only dependency: @msgpack/msgpack.
 */
const net = require('node:net');
const path = require('node:path');
const { encode, decode } = require('@msgpack/msgpack');

const PROTOCOL_VERSION = 1;
const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
const CLIENT_NAME = 'peerix-node/0.1.0';
const STREAM_CHUNK = 1024 * 1024;

/** A failed request or connection-level error carrying the protocol error code. */
class PeerixError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'PeerixError';
    this.code = code;
    this.detail = message;
  }
}

/** Socket path resolution identical to peerixd's. */
function defaultSocketPath(env = process.env) {
  if (env.PEERIX_SOCKET) return env.PEERIX_SOCKET;
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'peerix', 'peerixd.sock');
  return '/run/peerix/peerixd.sock';
}

/** Encodes one message object as a frame (Uint8Array values become bin). */
function encodeFrame(msg, maxFrame = 0xffffffff) {
  const body = encode(msg);
  if (body.length > maxFrame) {
    throw new PeerixError('FRAME_TOO_LARGE', `frame of ${body.length} bytes exceeds ${maxFrame}`);
  }
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  Buffer.from(body.buffer, body.byteOffset, body.length).copy(out, 4);
  return out;
}

/** Decodes one frame payload; throws PeerixError(MALFORMED_FRAME) on bad input. */
function decodeBody(body) {
  let msg;
  try {
    msg = decode(body);
  } catch (err) {
    throw new PeerixError('MALFORMED_FRAME', String(err && err.message ? err.message : err));
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg) || typeof msg.type !== 'string') {
    throw new PeerixError('MALFORMED_FRAME', 'frame is not a message map');
  }
  return msg;
}

/** Splits a byte stream into frame payloads. */
class FrameDecoder {
  constructor(maxFrame = DEFAULT_MAX_FRAME) {
    this.maxFrame = maxFrame;
    this.buf = Buffer.alloc(0);
  }
  push(data) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : Buffer.from(data);
  }
  /** Returns the next payload, null if incomplete; throws if too large. */
  nextFrame() {
    if (this.buf.length < 4) return null;
    const len = this.buf.readUInt32BE(0);
    if (len > this.maxFrame) {
      throw new PeerixError('FRAME_TOO_LARGE', `frame of ${len} bytes exceeds ${this.maxFrame}`);
    }
    if (this.buf.length < 4 + len) return null;
    const body = this.buf.subarray(4, 4 + len);
    this.buf = this.buf.subarray(4 + len);
    return body;
  }
}

function helloMessage(client = CLIENT_NAME, capabilities = []) {
  return { type: 'hello', version: PROTOCOL_VERSION, client, capabilities };
}

function requestMessage(id, op, args = {}) {
  return { type: 'request', id, op, args };
}

/** Arguments of a `send` start request (type: 'text' | 'bytes' | 'json'). */
function sendArgs(room, data, type, { label = 'default', to, info, more = false, progress = false } = {}) {
  const args = { room, label };
  if (to !== undefined) args.to = to;
  args.type = type;
  args.data = data;
  if (info !== undefined) args.info = info;
  if (more) args.more = true;
  if (progress) args.progress = true;
  return args;
}

/** Arguments of a `send` chunk of a streamed transfer. */
function chunkArgs(transfer, data, more) {
  return { transfer, data, more };
}

/** Async iterable of event objects ({seq, name, room?, data}). */
class EventStream {
  constructor() {
    this.queue = [];
    this.waiters = [];
    this.ended = false;
  }
  _put(ev) {
    if (this.ended) return;
    if (ev === null) this.ended = true;
    const w = this.waiters.shift();
    if (w) w(ev);
    else this.queue.push(ev);
    if (this.ended) for (const w2 of this.waiters.splice(0)) w2(null);
  }
  next() {
    if (this.queue.length) {
      const ev = this.queue.shift();
      return Promise.resolve(ev === null ? { done: true, value: undefined } : { done: false, value: ev });
    }
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve) =>
      this.waiters.push((ev) => resolve(ev === null ? { done: true, value: undefined } : { done: false, value: ev })),
    );
  }
  [Symbol.asyncIterator]() {
    return this;
  }
}

/** A connection to peerixd; create with `connect()`. */
class Client {
  constructor(socket, welcome, decoder) {
    this.socket = socket;
    this.welcome = welcome;
    this.peerId = welcome.id;
    this.maxFrame = Number(welcome.max_frame) || DEFAULT_MAX_FRAME;
    this.decoder = decoder;
    this.nextId = 1;
    this.pending = new Map();
    this.events = null;
    this.verifyStreams = new Map();
    this.closedReason = null;
    socket.on('data', (d) => this._onData(d));
    socket.on('close', () => this._shutdown('peerixd closed the connection'));
    socket.on('error', (e) => this._shutdown(`socket error: ${e.message}`));
    this._drain();
  }

  _onData(data) {
    this.decoder.push(data);
    this._drain();
  }

  _drain() {
    for (;;) {
      let body;
      try {
        body = this.decoder.nextFrame();
      } catch (e) {
        this._shutdown(e.message);
        this.socket.destroy();
        return;
      }
      if (body === null) return;
      let msg;
      try {
        msg = decodeBody(body);
      } catch {
        continue; // skip malformed frames; the length prefix keeps us in sync
      }
      if (msg.type === 'reply') {
        const p = this.pending.get(msg.id);
        if (p) {
          this.pending.delete(msg.id);
          p(msg);
        }
      } else if (msg.type === 'event' && msg.name === 'verify') {
        const stream = this.verifyStreams.get(msg.room);
        if (stream) stream._put(msg);
      } else if (msg.type === 'event') {
        if (this.events) this.events._put(msg);
      } else if (msg.type === 'error') {
        this.closedReason = `peerixd reported ${msg.code}: ${msg.message}`;
      }
    }
  }

  _shutdown(reason) {
    if (this.closedReason === null) this.closedReason = reason;
    for (const p of this.pending.values()) p(null);
    this.pending.clear();
    if (this.events) {
      this.events._put(null);
      this.events = null;
    }
    for (const s of this.verifyStreams.values()) s._put(null);
    this.verifyStreams.clear();
  }

  /** Sends a request; resolves with its result or rejects with PeerixError. */
  request(op, args = {}) {
    if (this.closedReason !== null) return Promise.reject(new PeerixError('CLOSED', this.closedReason));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, (reply) => {
        if (reply === null) reject(new PeerixError('CLOSED', this.closedReason || 'connection closed'));
        else if (reply.ok) resolve(reply.result);
        else {
          const e = reply.error || {};
          reject(new PeerixError(e.code || 'INTERNAL', e.message || 'request failed'));
        }
      });
      try {
        this.socket.write(encodeFrame(requestMessage(id, op, args), this.maxFrame));
      } catch (e) {
        this.pending.delete(id);
        reject(e);
      }
    });
  }

  status() { return this.request('status'); }
  join(room, { metadata, driver, options } = {}) {
    const args = { room };
    if (metadata !== undefined) args.metadata = metadata;
    if (driver !== undefined) args.driver = driver;
    if (options !== undefined) args.options = options;
    return this.request('join', args);
  }
  leave(room) { return this.request('leave', { room }); }
  async peers(room) { return (await this.request('peers', { room })).peers; }
  open(room, label, options = {}) { return this.request('open', { room, label, ...options }); }
  closeChannel(room, label, to) {
    const args = { room, label };
    if (to !== undefined) args.to = to;
    return this.request('close', args);
  }
  sendText(room, text, opts = {}) { return this.request('send', sendArgs(room, text, 'text', opts)); }
  sendJson(room, value, opts = {}) { return this.request('send', sendArgs(room, value, 'json', opts)); }

  /** Sends bytes (Uint8Array/Buffer); payloads larger than 1 MiB are streamed. */
  async sendBytes(room, data, opts = {}) {
    const bytes = data instanceof Uint8Array ? data : Uint8Array.from(data);
    if (bytes.length <= STREAM_CHUNK) return this.request('send', sendArgs(room, bytes, 'bytes', opts));
    const first = await this.request('send', sendArgs(room, new Uint8Array(0), 'bytes', { ...opts, more: true }));
    let result = first;
    for (let off = 0; off < bytes.length; off += STREAM_CHUNK) {
      const more = off + STREAM_CHUNK < bytes.length;
      result = await this.request('send', chunkArgs(first.transfer, bytes.subarray(off, off + STREAM_CHUNK), more));
    }
    return result;
  }

  /** Subscribes; all events of this connection go to the returned EventStream. */
  async subscribe(events, room) {
    const stream = new EventStream();
    const previous = this.events;
    this.events = stream;
    const args = { events };
    if (room !== undefined) args.room = room;
    try {
      await this.request('subscribe', args);
    } catch (e) {
      this.events = previous;
      throw e;
    }
    if (previous) previous._put(null);
    return stream;
  }

  /**
   * Becomes the verifier of `room` (joined with `options: {verify: {mode: 'verifier'}}`): returns
   * an EventStream of its `verify` events ({seq, name, room, data: {request, peer, id, metadata}});
   * answer each with `verify()` before the room's timeout.
   */
  async verifier(room) {
    const stream = new EventStream();
    const previous = this.verifyStreams.get(room);
    this.verifyStreams.set(room, stream);
    try {
      await this.request('verifier', { room });
    } catch (e) {
      if (previous) this.verifyStreams.set(room, previous);
      else this.verifyStreams.delete(room);
      throw e;
    }
    return stream;
  }

  async releaseVerifier(room) {
    await this.request('verifier', { room, release: true });
    const stream = this.verifyStreams.get(room);
    this.verifyStreams.delete(room);
    if (stream) stream._put(null);
  }

  /** Answers a `verify` event: may that peer connect? */
  verify(room, request, accept) { return this.request('verify', { room, request, accept }); }

  async unsubscribe() {
    await this.request('unsubscribe');
    if (this.events) {
      this.events._put(null);
      this.events = null;
    }
  }

  /** Closes the connection (rooms stay joined in the daemon). */
  close() {
    this.socket.end();
    this._shutdown('closed by client');
  }
}

/** Connects to peerixd and performs the handshake. */
function connect(socketPath = defaultSocketPath(), { client = CLIENT_NAME, timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder();
    const socket = net.createConnection(socketPath);
    let settled = false;
    const fail = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new PeerixError('TIMEOUT', 'waiting for welcome')), timeoutMs);
    const onData = (d) => {
      decoder.push(d);
      let body;
      try {
        body = decoder.nextFrame();
        if (body === null) return;
        const msg = decodeBody(body);
        if (msg.type === 'error') throw new PeerixError(msg.code, msg.message);
        if (msg.type !== 'welcome' || msg.version !== PROTOCOL_VERSION) {
          throw new PeerixError('VERSION_MISMATCH', `unexpected handshake answer (${msg.type} v${msg.version})`);
        }
        settled = true;
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('error', onError);
        resolve(new Client(socket, msg, decoder));
      } catch (e) {
        fail(e);
      }
    };
    const onError = (e) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        const err = new Error(`peerixd is not running (no socket at ${socketPath}); start it with \`peerixd\``);
        err.code = 'NOT_RUNNING';
        fail(err);
      } else fail(e);
    };
    socket.on('error', onError);
    socket.on('data', onData);
    socket.on('connect', () => socket.write(encodeFrame(helloMessage(client))));
  });
}

module.exports = {
  PROTOCOL_VERSION,
  DEFAULT_MAX_FRAME,
  PeerixError,
  FrameDecoder,
  EventStream,
  Client,
  connect,
  defaultSocketPath,
  encodeFrame,
  decodeBody,
  helloMessage,
  requestMessage,
  sendArgs,
  chunkArgs,
};
