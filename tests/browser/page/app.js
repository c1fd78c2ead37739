// The page's own code: it only orchestrates the REAL Peerix 0.7.0 library (served by the runner
// at /peerix/peerix.esm.js from ../shared/peerix-0.7.0, never copied) and the real NATS client
// (@nats-io/nats-core, bundled into this file by esbuild when the runner starts).
//
// run-interop.mjs calls window.harness.exec({cmd, ...args}) for every command line it reads and
// reports every event through window.__report (one JSON object per line on its stdout).
import { wsconnect } from '@nats-io/nats-core';
import { Room, NatsDriver } from '/peerix/peerix.esm.js';

const report = (obj) => window.__report?.(JSON.stringify(obj));
const now = () => performance.now();
const t0 = now();
const ms = () => Math.round(now() - t0);
const errMsg = (e) => String(e?.message ?? e);
const sleep = (n) => new Promise((r) => setTimeout(r, n));

/**
 * NatsDriver whose publishes can be held back: while `held`, signaling packets are buffered
 * instead of published. `join` uses it to pick an id with a wanted politeness without ever
 * announcing the ids it throws away (Peerix draws a new random id on every join). The packets
 * themselves are Peerix's own, unchanged.
 */
class GatedNatsDriver extends NatsDriver {
  held = false;
  buffer = [];
  async publish(namespace, data) {
    if (this.held) {
      this.buffer.push([namespace, data]);
      return;
    }
    return super.publish(namespace, data);
  }
  discard() {
    this.buffer = [];
  }
  async release() {
    this.held = false;
    const queued = this.buffer.splice(0);
    for (const [ns, data] of queued) await super.publish(ns, data);
    return queued.length;
  }
}

/**
 * Data-channel trace (join option `dcTrace`): the page's RTCDataChannels as the browser sees
 * them, under Peerix: which side created each, its state changes, every message's size and a
 * `send` that throws. Shows races Peerix's own events cannot (e.g. an ack written to a channel
 * that is not open yet). Off by default: it reports every message.
 */
let dcTrace = false;
function traceChannel(dc, how) {
  const base = () => ({ t: ms(), label: dc.label, id: dc.id, readyState: dc.readyState });
  report({ ev: 'dc:' + how, ...base() });
  dc.addEventListener('open', () => report({ ev: 'dc:open', ...base() }));
  dc.addEventListener('close', () => report({ ev: 'dc:close', ...base() }));
  dc.addEventListener('message', (m) => report({ ev: 'dc:message', size: m.data?.byteLength ?? m.data?.length, ...base() }));
}
{
  const send = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (data) {
    if (dcTrace) report({ ev: 'dc:send', size: data?.byteLength ?? data?.length, t: ms(), label: this.label, id: this.id, readyState: this.readyState });
    try {
      return send.call(this, data);
    } catch (err) {
      report({ ev: 'dc:send-error', t: ms(), label: this.label, id: this.id, readyState: this.readyState, error: errMsg(err) });
      throw err;
    }
  };
  const create = RTCPeerConnection.prototype.createDataChannel;
  RTCPeerConnection.prototype.createDataChannel = function (...args) {
    const dc = create.apply(this, args);
    if (dcTrace) traceChannel(dc, 'local');
    return dc;
  };
}

let nc = null;
let driver = null;
let room = null;
let me = null;
let msgSeq = 0;
/** Every Peerix `error` event and `channel:error` of this page (cleared by `join`). */
let errors = [];
/** Per peer id: candidates, signaling-state history. */
const peerInfo = new Map();
/** Received messages, without their data: {mid, peer, label, type, size, sha256, ...}. */
let received = [];

function info(peerId) {
  let i = peerInfo.get(peerId);
  if (!i) {
    i = { localCandidates: [], signaling: ['stable'], signalingChanges: 0 };
    peerInfo.set(peerId, i);
  }
  return i;
}

function pattern(size, seed) {
  // Deterministic pseudo-random bytes (xorshift32), a different stream per seed.
  const out = new Uint8Array(size);
  let x = (0x12345678 ^ Math.imul(seed | 0, 0x9e3779b1)) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

async function sha256Hex(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function describeMessage(v) {
  if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
    const bytes = v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    return { type: 'bytes', size: bytes.byteLength, sha256: await sha256Hex(bytes) };
  }
  if (v instanceof Blob) {
    const bytes = new Uint8Array(await v.arrayBuffer());
    return { type: 'blob', size: bytes.byteLength, sha256: await sha256Hex(bytes) };
  }
  if (typeof v === 'string') {
    // A JSON message whose value is a string looks the same; the tests send objects as JSON.
    const bytes = new TextEncoder().encode(v);
    const d = { type: 'text', size: bytes.byteLength, sha256: await sha256Hex(bytes) };
    if (v.length <= 4096) d.text = v;
    return d;
  }
  return { type: 'json', json: v };
}

function onChannelMessage(e) {
  const mid = ++msgSeq;
  const base = { mid, peer: e.peer?.id, label: e.label };
  if (e.info !== undefined) base.info = e.info;
  const started = now();
  report({ ev: 'channel:message', t: ms(), ...base });
  if (receiveMode === 'stream') {
    readStream(e, base, started);
    return;
  }
  // Await the whole message, as an application would: Peerix resolves it once the last chunk
  // arrived and rejects it when the transfer is aborted, so a cut-off message never materializes.
  e.data.then(
    async (v) => {
      const d = { ...base, ...(await describeMessage(v)), ms: Math.round(now() - started) };
      received.push({ ...d, text: undefined, json: undefined });
      report({ ev: 'message', t: ms(), ...d });
    },
    (err) => {
      const d = { ...base, aborted: true, error: errMsg(err), ms: Math.round(now() - started) };
      received.push(d);
      report({ ev: 'message:aborted', t: ms(), ...d });
    },
  );
}

/**
 * The other way to receive (Peerix's README file example): read the message's chunks as they
 * arrive; the data is kept only once the stream ended, so an abort leaves nothing. Reports how many
 * bytes had arrived and the stream's own error (Peerix's reason, e.g. "Aborted by sender").
 */
async function readStream(e, base, started) {
  const chunks = [];
  let bytes = 0;
  try {
    for await (const chunk of e.data) {
      chunks.push(chunk);
      bytes += chunk.byteLength;
    }
    const all = new Uint8Array(bytes);
    let off = 0;
    for (const c of chunks) {
      all.set(c, off);
      off += c.byteLength;
    }
    const d = { ...base, type: 'stream', size: bytes, sha256: await sha256Hex(all), ms: Math.round(now() - started) };
    received.push(d);
    report({ ev: 'message', t: ms(), ...d });
  } catch (err) {
    chunks.length = 0;
    const d = { ...base, aborted: true, error: errMsg(err), bytes_before_abort: bytes, ms: Math.round(now() - started) };
    received.push(d);
    report({ ev: 'message:aborted', t: ms(), ...d });
  }
}

function attach(r) {
  r.on('connection', (e) => {
    const peer = e.peer?.id;
    report({ ev: e.name, t: ms(), peer, state: e.state });
    if (e.name === 'connection:new' && e.peer) {
      const pc = e.peer.connection;
      const i = info(peer);
      if (dcTrace) pc.addEventListener('datachannel', (ev) => traceChannel(ev.channel, 'remote'));
      pc.addEventListener('icecandidate', (ev) => {
        if (ev.candidate?.candidate) i.localCandidates.push(ev.candidate.candidate);
      });
      pc.addEventListener('signalingstatechange', () => {
        i.signaling.push(pc.signalingState);
        i.signalingChanges++;
        report({ ev: 'pc:signaling', t: ms(), peer, state: pc.signalingState });
      });
      pc.addEventListener('connectionstatechange', () => {
        report({ ev: 'pc:connection', t: ms(), peer, state: pc.connectionState });
      });
    }
    if (e.name === 'connection:connected' && e.peer) {
      // Open channels at the very moment Peerix reports the connection (the race case).
      for (const label of openOnConnected) {
        e.peer.open({ label }).catch((err) => report({ ev: 'harness:open-failed', peer, label, error: errMsg(err) }));
        report({ ev: 'harness:opened-on-connected', t: ms(), peer, label });
      }
    }
  });
  r.on('channel', (e) => {
    if (e.name === 'channel:message') {
      onChannelMessage(e);
      return;
    }
    const line = { ev: e.name, t: ms(), peer: e.peer?.id, label: e.label, readyState: e.channel?.readyState };
    if (e.error) {
      line.error = errMsg(e.error);
      line.code = e.error.code;
      // After the connection closed (e.g. our own leave), a channel error is teardown: the
      // application has already been told the peer is gone. Reported, but not counted.
      if (e.peer?.state === 'closed' || leaving) line.teardown = true;
      else errors.push(line);
    }
    report(line);
  });
  r.on('stream', (e) => report({ ev: e.name, t: ms(), peer: e.peer?.id, label: e.label }));
  r.on('track', (e) => report({ ev: e.name, t: ms(), peer: e.peer?.id, label: e.label, kind: e.track?.kind }));
  r.on('error', (e) => {
    const line = { ev: 'error', t: ms(), code: e.error?.code, error: errMsg(e.error) };
    errors.push(line);
    report(line);
  });
}

let openOnConnected = [];
/** 'await': await the message (resolved whole, or rejected); 'stream': read its chunks. */
let receiveMode = 'await';
let leaving = false;

function needRoom() {
  if (!room || !me) throw new Error('not joined (send a join command first)');
  return room;
}

function needPeer(id) {
  const r = needRoom();
  if (id === undefined || id === null) {
    const all = [...r.peers.values()];
    if (all.length !== 1) throw new Error(`no peer given and ${all.length} peers in the room`);
    return all[0];
  }
  const p = r.peers.get(id);
  if (!p) throw new Error(`no peer ${id} in the room (peers: ${[...r.peers.keys()].join(', ') || 'none'})`);
  return p;
}

async function selectedPair(pc) {
  const stats = await pc.getStats();
  let pairId = null;
  const remote = [];
  const local = [];
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    if (s.type === 'remote-candidate') remote.push({ type: s.candidateType, address: s.address, port: s.port, protocol: s.protocol });
    if (s.type === 'local-candidate') local.push({ type: s.candidateType, address: s.address, port: s.port, protocol: s.protocol });
  });
  let pair = pairId ? stats.get(pairId) : null;
  if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
  const c = (id) => {
    const x = stats.get(id);
    return x && { type: x.candidateType, address: x.address, port: x.port, protocol: x.protocol };
  };
  return {
    selected_pair: pair ? { local: c(pair.localCandidateId), remote: c(pair.remoteCandidateId), rtt: pair.currentRoundTripTime } : null,
    stats_remote_candidates: remote,
    stats_local_candidates: local,
  };
}

function transceivers(pc) {
  return pc.getTransceivers().map((t) => ({
    mid: t.mid, direction: t.direction, currentDirection: t.currentDirection,
    kind: t.sender.track?.kind ?? t.receiver.track?.kind,
  }));
}

async function peerState(p) {
  const pc = p.connection;
  const i = info(p.id);
  return {
    peer: p.id,
    polite: me.id > p.id,
    state: p.state,
    signalingState: pc.signalingState,
    connectionState: pc.connectionState,
    iceConnectionState: pc.iceConnectionState,
    iceGatheringState: pc.iceGatheringState,
    signaling_history: i.signaling,
    channels: [...p.channels].map(([label, dc]) => ({ label, readyState: dc.readyState, id: dc.id })),
    transceivers: transceivers(pc),
    streams: [...p.streams.keys()],
    local_candidates: i.localCandidates,
    ...(await selectedPair(pc)),
  };
}

/** Waits until `cond()` is truthy (checked every 10 ms), or throws after `timeoutMs`. */
async function until(what, timeoutMs, cond) {
  const deadline = now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Waits for a renegotiation that started after `before` signaling changes to settle in stable. */
async function renegotiated(p, before, timeoutMs) {
  const i = info(p.id);
  const pc = p.connection;
  const t = now();
  await until(`renegotiation with ${p.id} back in stable (history ${JSON.stringify(i.signaling)})`, timeoutMs,
    () => i.signalingChanges > before && pc.signalingState === 'stable');
  return Math.round(now() - t);
}

const commands = {
  async join({ ws, room: roomId, options = {}, metadata = { name: 'chromium' }, politeAgainst, openOnConnected: labels = [], maxTries = 100, dcTrace: trace = false }) {
    if (room) throw new Error('already joined; leave first');
    if (!ws || !roomId) throw new Error('join needs ws and room');
    errors = [];
    leaving = false;
    received = [];
    peerInfo.clear();
    openOnConnected = labels;
    dcTrace = trace;
    if (!nc || nc.isClosed()) nc = await wsconnect({ servers: ws, noEcho: true, name: 'peerix-browser-interop' });
    driver = new GatedNatsDriver({ nc });
    driver.held = !!politeAgainst;
    room = new Room({ id: roomId, driver, ...options });
    attach(room);
    let tries = 0;
    for (;;) {
      tries++;
      me = await room.join(metadata);
      if (!politeAgainst) break;
      // Peerix publishes the announce asynchronously after join() returns: hold it back (and
      // discard it with the id if the id does not fit) so that no unwanted id is ever announced.
      await until('the announce to be buffered', 2000, () => driver.buffer.length > 0);
      const wantPolite = politeAgainst.role === 'polite';
      // Peerix: the peer with the greater id (JS string comparison) is polite.
      if ((me.id > politeAgainst.id) === wantPolite) break;
      if (tries >= maxTries) throw new Error(`no ${politeAgainst.role} id after ${tries} joins`);
      await room.leave();
      await sleep(30); // publishes already under way for the dropped id land in the buffer
      driver.discard();
    }
    const released = politeAgainst ? await driver.release() : 0;
    report({ ev: 'joined', t: ms(), id: me.id, tries });
    return { id: me.id, tries, released };
  },

  async leave() {
    if (!room) return { left: false };
    const r = room;
    room = null;
    me = null;
    leaving = true;
    try {
      await r.leave();
    } finally {
      // Late teardown events of this room still count as teardown.
      setTimeout(() => { if (!room) leaving = false; }, 500);
    }
    // Leave Peerix's 'connection:closed' events time to go out before the driver goes.
    await sleep(50);
    driver?.destroy();
    driver = null;
    report({ ev: 'left', t: ms() });
    return { left: true };
  },

  async open({ label, options = {}, peer }) {
    if (peer) await needPeer(peer).open({ ...options, label });
    else await needRoom().open({ ...options, label });
    return {};
  },

  async close({ label, peer }) {
    if (peer) await needPeer(peer).close({ label });
    else await needRoom().close({ label });
    return {};
  },

  async waitConnected({ peer, timeoutMs = 30000 }) {
    const t = now();
    const p = await until(`connection:connected${peer ? ` with ${peer}` : ''}`, timeoutMs, () => {
      const r = needRoom();
      const all = peer ? [r.peers.get(peer)] : [...r.peers.values()];
      return all.find((x) => x && x.state === 'connected');
    });
    return { peer: p.id, polite: me.id > p.id, ms: Math.round(now() - t) };
  },

  async waitChannel({ label, peer, timeoutMs = 30000 }) {
    const t = now();
    await until(`channel ${label} open with ${peer ?? 'the peer'}`, timeoutMs, () => {
      const r = needRoom();
      const p = peer ? r.peers.get(peer) : [...r.peers.values()][0];
      return p?.channels.get(label)?.readyState === 'open';
    });
    return { ms: Math.round(now() - t) };
  },

  async send({ label, to, text, json, bytes, info: sendInfo }) {
    let data;
    const res = {};
    if (text !== undefined) data = text;
    else if (json !== undefined) data = json;
    else if (bytes) {
      data = pattern(bytes.size, bytes.seed ?? 0);
      res.size = bytes.size;
      res.sha256 = await sha256Hex(data);
    } else throw new Error('send needs text, json or bytes');
    const r = needRoom();
    if (!to && r.peers.size === 0) throw new Error('no peers to send to');
    const target = to ? needPeer(to) : r;
    const t = now();
    // Resolves when every receiver acknowledged the whole message (Peerix's ask/done frame).
    await target.send(data, { label, info: sendInfo });
    const took = now() - t;
    res.ack_ms = Math.round(took);
    // Unrounded, for the benchmark's round-trip figures (sub-millisecond on loopback).
    res.ack_ms_exact = took;
    if (bytes) res.mib_per_s = +((bytes.size / 1048576) / Math.max(res.ack_ms / 1000, 0.001)).toFixed(2);
    return res;
  },

  // `width`/`height`: the fake camera's exact size. `renegotiates: false` for a re-share of the
  // same kinds, which Peerix does with replaceTrack (wire spec §8.4: no negotiation round).
  async share({ label = 'camera', audio = false, width, height, renegotiates = true, timeoutMs = 30000 }) {
    const r = needRoom();
    const video = width && height ? { width: { exact: width }, height: { exact: height } } : true;
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    const before = new Map([...r.peers.values()].map((p) => [p.id, info(p.id).signalingChanges]));
    await r.share({ label, stream });
    const out = { tracks: stream.getTracks().map((t) => t.kind), renegotiation_ms: {}, transceivers: {} };
    if (!renegotiates) {
      await sleep(500);
      for (const p of r.peers.values()) {
        out.transceivers[p.id] = transceivers(p.connection);
        out.renegotiated = (out.renegotiated || false) || info(p.id).signalingChanges > before.get(p.id);
      }
      return out;
    }
    // A new track always needs a negotiation round (the browser offers, the remote answers).
    for (const p of r.peers.values()) {
      out.renegotiation_ms[p.id] = await renegotiated(p, before.get(p.id) ?? 0, timeoutMs);
      out.transceivers[p.id] = transceivers(p.connection);
    }
    return out;
  },

  async unshare({ label = 'camera', timeoutMs = 30000 }) {
    const r = needRoom();
    const before = new Map([...r.peers.values()].map((p) => [p.id, info(p.id).signalingChanges]));
    // Peerix stops the live sendonly transceivers, which needs a negotiation round; a remote
    // that rejected the media section (port 0) left none, and then nothing is renegotiated.
    const live = new Map([...r.peers.values()].map((p) => [p.id,
      p.connection.getTransceivers().some((t) => t.direction === 'sendonly' && t.currentDirection !== 'stopped' && t.currentDirection !== null)]));
    await r.unshare({ label });
    const out = { renegotiation_ms: {}, transceivers: {} };
    for (const p of r.peers.values()) {
      if (live.get(p.id)) out.renegotiation_ms[p.id] = await renegotiated(p, before.get(p.id) ?? 0, timeoutMs);
      else await sleep(300);
      await until(`signaling with ${p.id} stable`, timeoutMs, () => p.connection.signalingState === 'stable');
      out.transceivers[p.id] = transceivers(p.connection);
    }
    return out;
  },

  // What this page decodes of a remote peer's share: waits until the inbound RTP of `kind`
  // decoded `minFrames` frames (video) or received `minPackets` packets (audio).
  async received({ peer, kind = 'video', minFrames = 1, minPackets = 1, timeoutMs = 30000 }) {
    const p = needPeer(peer);
    const pc = p.connection;
    return until(`${kind} decoded from ${p.id}`, timeoutMs, async () => {
      const stats = await pc.getStats();
      let found = null;
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp' || s.kind !== kind) return;
        const codec = s.codecId ? stats.get(s.codecId)?.mimeType : undefined;
        const x = {
          kind, codec, framesDecoded: s.framesDecoded ?? 0, packetsReceived: s.packetsReceived ?? 0,
          frameWidth: s.frameWidth, frameHeight: s.frameHeight, keyFramesDecoded: s.keyFramesDecoded,
          pliCount: s.pliCount, nackCount: s.nackCount,
        };
        const enough = kind === 'video' ? x.framesDecoded >= minFrames : x.packetsReceived >= minPackets;
        if (enough && (!found || x.framesDecoded > found.framesDecoded)) found = x;
      });
      return found;
    });
  },

  async state({ peer }) {
    return peerState(needPeer(peer));
  },

  async stats() {
    const r = room;
    const peers = r ? await Promise.all([...r.peers.values()].map(peerState)) : [];
    return { id: me?.id ?? null, peers, errors, received };
  },

  async receiveMode({ mode }) {
    if (mode !== 'await' && mode !== 'stream') throw new Error(`unknown receive mode ${mode}`);
    receiveMode = mode;
    return { mode };
  },

  async errors() {
    return { errors };
  },
};

window.harness = {
  async exec(c) {
    const fn = commands[c.cmd];
    if (!fn) throw new Error(`unknown command ${c.cmd}`);
    return fn(c);
  },
};
window.pageReady = true;
