// Scenarios run inside the Chromium page by run-interop.mjs. Each reports progress through
// window.__report (exposed by the runner) and returns a JSON result.
import { connect } from '/nats.js';
import { Room, NatsDriver } from '/peerix-lite.js';

const report = (obj) => window.__report?.(JSON.stringify(obj));
const now = () => performance.now();
let current = null;

async function selectedPair(pc) {
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  let pair = pairId ? stats.get(pairId) : null;
  if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
  if (!pair) return null;
  const c = (id) => {
    const x = stats.get(id);
    return x && { type: x.candidateType, address: x.address, port: x.port, protocol: x.protocol };
  };
  return { local: c(pair.localCandidateId), remote: c(pair.remoteCandidateId), rtt: pair.currentRoundTripTime };
}

function pattern(size) {
  // Deterministic pseudo-random bytes (xorshift32), so the daemon side can verify them too.
  const out = new Uint8Array(size);
  let x = 0x12345678;
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

/**
 * opts: {ws, room, steps: ['connect'|'chat'|'big'], timeoutMs, bigSize, label}
 */
export async function run(opts) {
  const t0 = now();
  const timeoutMs = opts.timeoutMs ?? 30000;
  const label = opts.label ?? 'chat';
  const nc = await connect({ servers: opts.ws, noEcho: true, name: 'peerix-lite' });
  // Optional role control: with opts.against (the other peer's id) and opts.role, pick an id that
  // makes this page polite (greater ASCII id) or impolite (§1.4).
  const acceptId = opts.role && opts.against
    ? (id) => (id > opts.against) === (opts.role === 'polite')
    : undefined;
  const room = new Room({ id: opts.room, driver: new NatsDriver(nc), acceptId });
  current = { room, nc };
  const received = [];
  room.on('*', (ev) => {
    const line = { ev: ev.name, t: Math.round(now() - t0) };
    if (ev.peer) line.peer = typeof ev.peer === 'string' ? ev.peer : ev.peer.id;
    if (ev.state) line.state = ev.state;
    if (ev.label !== undefined) line.label = ev.label;
    if (ev.error) line.error = String(ev.error?.message ?? ev.error);
    if (ev.code) line.code = ev.code;
    if (ev.readyState) line.readyState = ev.readyState;
    if (ev.name === 'channel:message') {
      line.type = ev.type;
      if (typeof ev.data === 'string') line.text = ev.data.slice(0, 200);
      else if (ev.data instanceof Uint8Array) line.size = ev.data.length;
      else line.json = ev.data;
      if (ev.info) line.info = ev.info;
      received.push(ev);
    }
    if (ev.name === 'harness:signal') {
      line.type = ev.type;
      line.from = ev.from;
    }
    report(line);
  });
  const me = await room.join({ name: 'chromium' });
  report({ ev: 'joined', id: me.id, t: Math.round(now() - t0) });
  const result = { id: me.id };

  const connected = await room.once('connection:connected', () => true, timeoutMs);
  const conn = connected.peer;
  result.peer = conn.id;
  result.polite = conn.polite;
  result.connect_ms = Math.round(now() - t0);
  // Let ICE settle on a pair, then record it (mDNS vs IP, host vs prflx).
  await new Promise((r) => setTimeout(r, 200));
  result.selected_pair = await selectedPair(conn.pc);
  result.local_candidates = room.localCandidates.map((c) => c.candidate);
  result.remote_candidates = room.remoteCandidates.map((c) => ({ candidate: c.candidate, ufrag: c.usernameFragment, sdpMid: c.sdpMid }));
  report({ ev: 'harness:connected', peer: conn.id, selected_pair: result.selected_pair });

  const steps = opts.steps ?? ['connect'];
  if (steps.includes('chat') || steps.includes('big')) {
    const opened = conn.channels.get(label)?.dc.readyState === 'open'
      ? null
      : room.once('channel:open', (e) => e.label === label && e.peer === conn.id, timeoutMs);
    room.open(label);
    await opened;
    result.channel_open_ms = Math.round(now() - t0);
  }
  if (steps.includes('chat')) {
    const incoming = received.find((e) => e.label === label && e.type === 'text')
      ?? room.once('channel:message', (e) => e.label === label && e.type === 'text', timeoutMs);
    const ts = now();
    await room.send(opts.text ?? 'hello from chromium', { label, to: conn.id });
    result.text_ack_ms = Math.round(now() - ts);
    const got = await incoming;
    result.text_received = got.data;
    result.text_from = got.peer;
  }
  if (steps.includes('big')) {
    const size = opts.bigSize ?? 5 * 1024 * 1024;
    const data = pattern(size);
    result.big_sha256 = await sha256Hex(data);
    result.big_size = size;
    const ts = now();
    await room.send(data, { label, to: conn.id, info: { name: 'big.bin' } });
    result.big_ms = Math.round(now() - ts);
    result.big_mib_per_s = +((size / 1048576) / (result.big_ms / 1000)).toFixed(2);
  }
  result.errors = [];
  result.total_ms = Math.round(now() - t0);
  return result;
}

export async function leave() {
  if (!current) return;
  current.room.leave();
  await new Promise((r) => setTimeout(r, 100));
  await current.nc.close();
  current = null;
}
