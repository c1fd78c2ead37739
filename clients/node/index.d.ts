// Types for peerix-client, the Node.js client of peerixd (ipc-proto/PROTOCOL.md).

/** A MessagePack value as this client decodes it (bin → Uint8Array). */
export type Value = null | boolean | number | bigint | string | Uint8Array | Value[] | { [key: string]: Value };

export const PROTOCOL_VERSION: 1;
export const DEFAULT_MAX_FRAME: number;
/** Events sent whatever the connection subscribed to. */
export const UNSOLICITED: readonly string[];

/** A failed request or connection-level error; `code` is a PROTOCOL.md error code or `CLOSED`/`TIMEOUT`. */
export class PeerixError extends Error {
  constructor(code: string, message: string);
  code: string;
  detail: string;
}

export interface Welcome {
  type: 'welcome';
  version: number;
  daemon: string;
  /** The machine id (not the id peers see: every room has its own). */
  id: string;
  /** Random per daemon run; sequence numbers compare only within one epoch. */
  epoch: number;
  capabilities: string[];
  max_frame: number;
}

export interface ErrorBody { code: string; message: string }

/** One event frame. */
export interface PeerixEvent<D = Record<string, any>> {
  type: 'event';
  seq: number;
  name: string;
  room?: string;
  data: D;
}

export interface ChannelMessageData {
  peer: string;
  id: string;
  label: string;
  type: 'text' | 'json' | 'blob' | 'bytes';
  data: Value;
  info?: Record<string, Value>;
  transfer: number;
  offset: number;
  total?: number;
  final: boolean;
}

/** `lagged`: events [from, to] this connection will never get; `count` of them matched its filters. */
export interface LaggedData { from: number; to: number; count?: number }

/** `room:left`: the room was left by a hold released elsewhere (or the last holder disconnecting). */
export interface RoomLeftData { reason: 'released' | 'leave-all' | 'disconnected' | 'config' | string; holders: number }

export interface Progress {
  type: 'progress';
  id: number;
  peer?: string;
  label: string;
  current: number;
  total?: number;
  done: boolean;
  error?: ErrorBody;
}

export interface PeerResult { id: string; ok: boolean; error?: ErrorBody }
export interface SendResult { transfer: number; peers: PeerResult[] }
export interface BatchResult {
  transfer: number;
  count: number;
  peers: Array<{ id: string; ok: boolean; delivered: number; failed?: Array<{ index: number; error: { code: string; message: string } }> }>;
}

export interface JoinResult { room: string; id: string; metadata: Value; holders: number; persist: boolean }
export interface LeaveResult { left: boolean; holders: number }
export interface InboxResult {
  events: Array<{ seq: number; name: string; room?: string; data: Record<string, any> }>;
  dropped: number;
  more: boolean;
}
/** `forward`: the track forwarded and the SDP a player opens to receive it. */
export interface ForwardResult { track: string; kind: 'audio' | 'video'; codec: string; sdp: string }

/** One track of a `share`: RTP ingest when `rtp` is given, else fed with `frame`. */
export interface ShareTrack { codec: 'opus' | 'vp8' | 'vp9' | 'h264' | 'av1'; kind?: 'audio' | 'video'; rtp?: string }
/** Peerix's `audioParameters`/`videoParameters`. */
export interface EncodingParameters { maxBitrate?: number; maxFramerate?: number }
/** `share`: the stream id peers see and each track's id (and ingest address). */
export interface ShareResult {
  stream: string;
  tracks: Array<{ track: string; kind: 'audio' | 'video'; codec: string; rtp?: string }>;
}

export interface SubscribeResult { replayed?: number; complete?: boolean }

export interface RoomStatus {
  room: string;
  /** This daemon's peer id in the room (what remote peers see). */
  id: string;
  driver: string;
  peers: number;
  channels: string[];
  holders: number;
  persist: boolean;
  inbox?: number;
  /** URLs of the STUN/TURN servers the room's new connections use (never credentials). */
  iceServers?: string[];
  iceTransportPolicy?: 'all' | 'relay';
}

export interface Status {
  version: string;
  id: string;
  epoch: number;
  drivers: Array<{ name: string; kind: string; active: boolean; state?: string }>;
  rooms: RoomStatus[];
  ipc: { queued: number; queue_budget: number };
}

export interface RemoteTrack { label: string; stream: string; track: string; kind: 'audio' | 'video'; codec: string }
export interface PeerInfo { id: string; state: string; metadata: Value; channels: string[]; tracks: RemoteTrack[] }

export interface IceServer { urls: string | string[]; username?: string; credential?: string }

export interface JoinOptions {
  metadata?: Value;
  driver?: string;
  /** Keep the room joined after this connection closes. */
  persist?: boolean;
  options?: {
    namespaceHashing?: boolean | string;
    signalingCompression?: boolean | string;
    signalingEncryption?: boolean | string;
    connectionTimeout?: number;
    iceCandidateDebounce?: number;
    iceServers?: IceServer[];
    iceTransportPolicy?: 'all' | 'relay';
    verify?: { mode: 'all' | 'allow' | 'verifier'; allow?: string[]; timeout?: number; fallback?: 'accept' | 'reject'; maxPending?: number };
  };
}

export interface OpenOptions { ordered?: boolean; protocol?: string; maxRetransmits?: number; maxPacketLifeTime?: number; to?: string }

export interface SendOptions { label?: string; to?: string; info?: Record<string, Value> }
export interface SendBytesOptions extends SendOptions {
  /** Payloads above this many bytes are streamed in chunks of it (default 1 MiB). */
  chunk?: number;
  onProgress?: (p: Progress) => void;
}

export interface Position { epoch: number; seq: number }

export interface SubscribeOptions { room?: string; since?: number; epoch?: number }

/** A connection's events; async-iterable, ends when the connection closes. */
export class EventStream implements AsyncIterableIterator<PeerixEvent> {
  next(): Promise<IteratorResult<PeerixEvent>>;
  /** The next event (null at the end); rejects with PeerixError TIMEOUT after `ms`. */
  nextEvent(ms?: number): Promise<PeerixEvent | null>;
  [Symbol.asyncIterator](): AsyncIterableIterator<PeerixEvent>;
}

export class Client {
  readonly welcome: Welcome;
  readonly machineId: string;
  readonly epoch: number;
  readonly capabilities: string[];
  readonly maxFrame: number;
  readonly lastSeq: number;
  readonly lastSubscribe: SubscribeResult;
  readonly events: EventStream;
  readonly closedReason: string | null;
  readonly position: Position;

  request(op: string, args?: Record<string, any>): Promise<any>;
  status(): Promise<Status>;
  join(room: string, opts?: JoinOptions): Promise<JoinResult>;
  leave(room: string, opts?: { all?: boolean }): Promise<LeaveResult>;
  inbox(room: string, opts?: { max?: number }): Promise<InboxResult>;
  forward(room: string, peer: string, label: string, opts?: { to?: string; kind?: 'audio' | 'video' }): Promise<ForwardResult>;
  share(room: string, label: string, tracks: ShareTrack[], opts?: { audioParameters?: EncodingParameters; videoParameters?: EncodingParameters }): Promise<ShareResult>;
  unshare(room: string, label: string): Promise<boolean>;
  frame(room: string, track: string, data: Uint8Array, durationUs: number): Promise<Record<string, never>>;
  peers(room: string): Promise<PeerInfo[]>;
  open(room: string, label: string, options?: OpenOptions): Promise<Record<string, never>>;
  closeChannel(room: string, label: string, to?: string): Promise<Record<string, never>>;
  sendText(room: string, text: string, opts?: SendOptions): Promise<SendResult>;
  sendJson(room: string, value: Value, opts?: SendOptions): Promise<SendResult>;
  sendBytes(room: string, data: Uint8Array | number[], opts?: SendBytesOptions): Promise<SendResult>;
  sendBatch(room: string, messages: Array<string | Uint8Array | number[] | Value>, opts?: SendOptions & { type?: 'text' | 'bytes' | 'json' }): Promise<BatchResult>;
  subscribe(events: string[], opts?: string | SubscribeOptions): Promise<EventStream>;
  resume(events: string[], position: Position, opts?: { room?: string }): Promise<EventStream>;
  unsubscribe(): Promise<void>;
  verifier(room: string): Promise<EventStream>;
  releaseVerifier(room: string): Promise<void>;
  verify(room: string, request: number, accept: boolean): Promise<Record<string, never>>;
  close(): void;
}

export function connect(socketPath?: string, opts?: { client?: string; timeoutMs?: number }): Promise<Client>;
export function defaultSocketPath(env?: Record<string, string | undefined>): string;
export function encodeFrame(msg: Record<string, any>, maxFrame?: number): Buffer;
export function decodeBody(body: Uint8Array): Record<string, any> & { type: string };
export class FrameDecoder {
  constructor(maxFrame?: number);
  push(data: Uint8Array): void;
  nextFrame(): Uint8Array | null;
}
export function helloMessage(client?: string, capabilities?: string[]): Record<string, any>;
export function requestMessage(id: number, op: string, args?: Record<string, any>): Record<string, any>;
export function sendArgs(room: string, data: Value, type: 'text' | 'bytes' | 'json', opts?: SendOptions & { more?: boolean; progress?: boolean }): Record<string, any>;
export function batchArgs(room: string, messages: Value[], type: 'text' | 'bytes' | 'json', opts?: SendOptions): Record<string, any>;
export function chunkArgs(transfer: number, data: string | Uint8Array, more: boolean): Record<string, any>;
export function subscribeArgs(events: string[], opts?: SubscribeOptions): Record<string, any>;
