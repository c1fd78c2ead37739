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
const CLIENT_NAME = 'peerix-node/0.2.0';
/** Events the daemon sends whatever the connection subscribed to; they go to `client.events`. */
const UNSOLICITED = ['lagged', 'room:left', 'daemon:shutdown'];
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

/** Arguments of a `send` with `batch`: several whole messages of one type. */
function batchArgs(room, messages, type, { label = 'default', to, info } = {}) {
  const args = { room, label };
  if (to !== undefined) args.to = to;
  args.type = type;
  args.batch = messages;
  if (info !== undefined) args.info = info;
  return args;
}

/** Arguments of a `send` chunk of a streamed transfer. */
function chunkArgs(transfer, data, more) {
  return { transfer, data, more };
}

/** Arguments of `subscribe`; `since`/`epoch` resume after a reconnect. */
function subscribeArgs(events, { room, since, epoch } = {}) {
  const args = { events: [...events] };
  if (room !== undefined) args.room = room;
  if (since !== undefined) args.since = since;
  if (epoch !== undefined) args.epoch = epoch;
  return args;
}

/**
 * Async iterable of a connection's event objects ({seq, name, room?, data}). Besides what was
 * subscribed it carries `lagged` ({from, to, count}: events the daemon could not keep for this
 * client) and `room:left` for rooms the connection held. It ends when the connection closes.
 */
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
  /** The next event, rejecting after `ms`; resolves `null` at the end of the stream. */
  async nextEvent(ms = 15000) {
    let timer;
    const t = new Promise((_, rej) => {
      timer = setTimeout(() => rej(new PeerixError('TIMEOUT', `no event within ${ms} ms`)), ms);
    });
    try {
      const r = await Promise.race([this.next(), t]);
      return r.done ? null : r.value;
    } finally {
      clearTimeout(timer);
    }
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
    /** The machine's id; each room has its own peer id (see `join()` and `status()`). */
    this.machineId = welcome.id;
    /** The daemon run's epoch: sequence numbers compare only within one epoch. */
    this.epoch = Number(welcome.epoch || 0);
    this.capabilities = welcome.capabilities || [];
    this.maxFrame = Number(welcome.max_frame) || DEFAULT_MAX_FRAME;
    /** The highest event seq seen on this connection. */
    this.lastSeq = 0;
    /** The latest `subscribe` reply ({replayed, complete} after a resume). */
    this.lastSubscribe = {};
    this.decoder = decoder;
    this.nextId = 1;
    this.pending = new Map();
    this.progress = new Map();
    /** This connection's events (one stream, also before any subscribe). */
    this.events = new EventStream();
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
      } else if (msg.type === 'event') {
        if (typeof msg.seq === 'number' && msg.seq > this.lastSeq) this.lastSeq = msg.seq;
        if (msg.name === 'verify') {
          const stream = this.verifyStreams.get(msg.room);
          if (stream) stream._put(msg);
        } else this.events._put(msg);
      } else if (msg.type === 'progress') {
        const cb = this.progress.get(msg.id);
        if (cb) cb(msg);
      } else if (msg.type === 'error') {
        this.closedReason = `peerixd reported ${msg.code}: ${msg.message}`;
      }
    }
  }

  _shutdown(reason) {
    if (this.closedReason === null) this.closedReason = reason;
    for (const p of this.pending.values()) p(null);
    this.pending.clear();
    this.events._put(null);
    for (const s of this.verifyStreams.values()) s._put(null);
    this.verifyStreams.clear();
  }

  /** Sends a request; resolves with its result or rejects with PeerixError. */
  request(op, args = {}) {
    return this._requestWithId(this.nextId++, op, args);
  }

  _requestWithId(id, op, args) {
    if (this.closedReason !== null) return Promise.reject(new PeerixError('CLOSED', this.closedReason));
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

  /** Where this connection's event stream stands, to resume from on a new connection. */
  get position() { return { epoch: this.epoch, seq: this.lastSeq }; }

  status() { return this.request('status'); }
  /**
   * Holds `room` (joins it if nobody does yet). `persist: true` keeps it joined after this
   * connection closes, until a `leave` releases it. Resolves {room, id, metadata, holders, persist}.
   */
  join(room, { metadata, driver, options, persist } = {}) {
    const args = { room };
    if (metadata !== undefined) args.metadata = metadata;
    if (driver !== undefined) args.driver = driver;
    if (options !== undefined) args.options = options;
    if (persist) args.persist = true;
    return this.request('join', args);
  }
  /** Releases this connection's hold (`all: true`: every hold). Resolves {left, holders}. */
  leave(room, { all } = {}) {
    const args = { room };
    if (all) args.all = true;
    return this.request('leave', args);
  }
  /**
   * Sends the RTP of a track `peer` shares under `label` to `to` ('127.0.0.1:6000'), or stops
   * (`to` undefined). `kind` ('audio' | 'video') picks the track when the label has both.
   * Resolves {track, kind, codec, sdp}: write `sdp` to a file and open it with ffplay or VLC.
   */
  forward(room, peer, label, { to, kind } = {}) {
    const args = { room, peer, label };
    if (kind !== undefined) args.kind = kind;
    if (to === undefined) args.stop = true;
    else args.to = to;
    return this.request('forward', args);
  }
  /**
   * Shares a labelled stream with every peer of `room` (Peerix's `share`). Each track is
   * {codec: 'vp8'|'vp9'|'h264'|'av1'|'opus', rtp: '127.0.0.1:5004'} (RTP ingest; port 0 picks
   * one), or without `rtp` (fed with `frame`). Resolves {stream, tracks: [{track, kind, codec,
   * rtp?}]}. Sharing a label again with the same kinds replaces its tracks.
   */
  share(room, label, tracks, { audioParameters, videoParameters } = {}) {
    const args = { room, label, tracks };
    if (audioParameters !== undefined) args.audioParameters = audioParameters;
    if (videoParameters !== undefined) args.videoParameters = videoParameters;
    return this.request('share', args);
  }
  /** Stops sharing `label`; resolves whether it was shared. */
  async unshare(room, label) {
    const r = await this.request('unshare', { room, label });
    return Boolean(r.unshared);
  }
  /**
   * Pushes one encoded frame (Buffer/Uint8Array) lasting `durationUs` microseconds into a track
   * shared without `rtp`. Send a keyframe when a `track:keyframe` event asks.
   */
  frame(room, track, data, durationUs) {
    return this.request('frame', { room, track, data, duration: durationUs });
  }
  /** Takes messages that arrived while no client subscribed: {events, dropped, more}. */
  inbox(room, { max } = {}) {
    const args = { room };
    if (max !== undefined) args.max = max;
    return this.request('inbox', args);
  }
  async peers(room) { return (await this.request('peers', { room })).peers; }
  open(room, label, options = {}) { return this.request('open', { room, label, ...options }); }
  closeChannel(room, label, to) {
    const args = { room, label };
    if (to !== undefined) args.to = to;
    return this.request('close', args);
  }
  sendText(room, text, opts = {}) { return this.request('send', sendArgs(room, text, 'text', opts)); }
  sendJson(room, value, opts = {}) { return this.request('send', sendArgs(room, value, 'json', opts)); }
  /**
   * Several whole messages of one type ('text' | 'bytes' | 'json', default 'bytes') in one
   * request; each arrives as a message of its own, in order. Resolves to
   * `{transfer, count, peers: [{id, ok, delivered, failed?: [{index, error}]}]}`.
   */
  sendBatch(room, messages, { type = 'bytes', ...opts } = {}) {
    const batch = messages.map((m) => (type === 'bytes' && !(m instanceof Uint8Array) ? Uint8Array.from(m) : m));
    return this.request('send', batchArgs(room, batch, type, opts));
  }

  /**
   * Sends bytes (Uint8Array/Buffer); payloads larger than `chunk` (1 MiB) are streamed.
   * `onProgress` receives the daemon's progress frames ({peer, label, current, total?, done}).
   */
  async sendBytes(room, data, opts = {}) {
    const { chunk = STREAM_CHUNK, onProgress, ...rest } = opts;
    const bytes = data instanceof Uint8Array ? data : Uint8Array.from(data);
    const startId = this.nextId++;
    const progress = onProgress !== undefined;
    if (progress) this.progress.set(startId, onProgress);
    try {
      if (bytes.length <= chunk) {
        return await this._requestWithId(startId, 'send', sendArgs(room, bytes, 'bytes', { ...rest, progress }));
      }
      const first = await this._requestWithId(
        startId, 'send', sendArgs(room, new Uint8Array(0), 'bytes', { ...rest, more: true, progress }));
      let result = first;
      for (let off = 0; off < bytes.length; off += chunk) {
        const more = off + chunk < bytes.length;
        result = await this.request('send', chunkArgs(first.transfer, bytes.subarray(off, off + chunk), more));
      }
      return result;
    } finally {
      this.progress.delete(startId);
    }
  }

  /**
   * Adds a subscription and returns the connection's EventStream. `opts` is a room name or
   * {room, since, epoch}: with `since` (and the `epoch` it came from) the events after that seq
   * the daemon still holds come first, then live ones, with no gap or repeat; what it no longer
   * holds is announced by a `lagged` event first. The reply is kept in `lastSubscribe`.
   */
  async subscribe(events, opts = {}) {
    const o = typeof opts === 'string' ? { room: opts } : opts || {};
    this.lastSubscribe = await this.request('subscribe', subscribeArgs(events, o));
    return this.events;
  }

  /** Subscribes from where another connection stopped (its `position`). */
  resume(events, position, { room } = {}) {
    return this.subscribe(events, { room, since: position.seq, epoch: position.epoch });
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

  /** Drops every subscription of this connection (the event stream stays open). */
  async unsubscribe() {
    await this.request('unsubscribe');
  }

  /** Closes the connection; the daemon releases the rooms it held (not `persist` ones). */
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
  batchArgs,
  chunkArgs,
  subscribeArgs,
  UNSOLICITED,
};
