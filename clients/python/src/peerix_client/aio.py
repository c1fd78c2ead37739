"""The asyncio client: one :class:`Client` per connection to peerixd."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

from .protocol import (
    CLIENT_NAME,
    PROTOCOL_VERSION,
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    Message,
    NotRunningError,
    PeerixError,
    batch_args,
    chunk_args,
    decode_body,
    default_socket_path,
    encode_frame,
    hello_message,
    request_message,
    send_args,
    subscribe_args,
)

#: Events the daemon sends to a connection whatever it subscribed to; they go to its event stream.
UNSOLICITED = ("lagged", "room:left", "daemon:shutdown")


@dataclass(frozen=True)
class Position:
    """Where a connection's event stream stands: give it to :meth:`Client.subscribe` of a new
    connection (``since=pos.seq, epoch=pos.epoch``) to resume without losing or repeating events."""

    epoch: int
    seq: int


class EventStream:
    """Async iterator over the connection's events (dicts ``{seq, name, room?, data}``).

    It ends when the connection closes. Besides what was subscribed, it carries ``lagged``
    (events the daemon could not keep for this client: ``data = {from, to, count}``) and
    ``room:left`` for rooms this connection held."""

    def __init__(self) -> None:
        self._queue: "asyncio.Queue[Optional[Message]]" = asyncio.Queue()

    def _put(self, event: Optional[Message]) -> None:
        self._queue.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # every later reader ends too
            raise StopAsyncIteration
        return event

    async def next(self, timeout: Optional[float] = None) -> Message:
        """The next event; ``asyncio.TimeoutError`` after ``timeout`` s, ``StopAsyncIteration`` at the end."""
        return await asyncio.wait_for(self.__anext__(), timeout)


class Client:
    """A connection to peerixd. Create one with :func:`connect`.

    Rooms joined through a connection are held by it: they stay joined while any connection
    holds them (or for good with ``persist=True``), and a connection that closes releases its
    holds."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, welcome: Message,
                 decoder: FrameDecoder):
        self.welcome = welcome
        #: The machine's id (each room has its own peer id: see :meth:`join` and :meth:`status`).
        self.machine_id: str = str(welcome.get("id", ""))
        #: The daemon run's epoch: sequence numbers are only comparable within one epoch.
        self.epoch: int = int(welcome.get("epoch", 0) or 0)
        self.max_frame: int = int(welcome.get("max_frame", DEFAULT_MAX_FRAME))
        self.capabilities: List[str] = list(welcome.get("capabilities") or [])
        self.last_seq: int = 0
        #: The result of the latest ``subscribe`` (``{replayed, complete}`` after a resume).
        self.last_subscribe: Dict[str, Any] = {}
        self._reader = reader
        self._writer = writer
        self._decoder = decoder
        self._ids = itertools.count(1)
        self._pending: Dict[int, "asyncio.Future[Message]"] = {}
        self._progress: Dict[int, Callable[[Message], None]] = {}
        self._events = EventStream()
        self._verify: Dict[str, EventStream] = {}
        self._closed: Optional[str] = None
        self._write_lock = asyncio.Lock()
        self._task = asyncio.ensure_future(self._read_loop())

    @property
    def position(self) -> Position:
        """The last event seen, to resume from on a new connection."""
        return Position(self.epoch, self.last_seq)

    @property
    def closed_reason(self) -> Optional[str]:
        """Why the connection ended (e.g. the daemon's final ``error`` frame), or ``None`` while open."""
        return self._closed

    async def _read_loop(self) -> None:
        reason = "peerixd closed the connection"
        try:
            while True:
                while True:
                    body = self._decoder.next_frame()
                    if body is None:
                        break
                    self._dispatch(body)
                data = await self._reader.read(65536)
                if not data:
                    break
                self._decoder.push(data)
        except PeerixError as exc:
            reason = str(exc)
        except (ConnectionError, OSError) as exc:
            reason = f"read failed: {exc}"
        finally:
            self._shutdown(reason)

    def _dispatch(self, body: bytes) -> None:
        try:
            msg = decode_body(body)
        except PeerixError:
            return  # a malformed frame is skipped; the length prefix keeps the stream in sync
        kind = msg["type"]
        if kind == "reply":
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind == "event":
            seq = msg.get("seq")
            if isinstance(seq, int) and seq > self.last_seq:
                self.last_seq = seq
            if msg.get("name") == "verify":
                stream = self._verify.get(msg.get("room", ""))
                if stream is not None:
                    stream._put(msg)
            else:
                self._events._put(msg)
        elif kind == "progress":
            cb = self._progress.get(msg.get("id", -1))
            if cb is not None:
                cb(msg)
        elif kind == "error":
            self._closed = f"peerixd reported {msg.get('code')}: {msg.get('message')}"

    def _shutdown(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerixError("CLOSED", self._closed))
        self._pending.clear()
        self._events._put(None)
        for stream in self._verify.values():
            stream._put(None)
        self._verify.clear()

    async def _send(self, msg: Message) -> None:
        frame = encode_frame(msg, self.max_frame)
        async with self._write_lock:
            self._writer.write(frame)
            await self._writer.drain()

    async def _request_with_id(self, id: int, op: str, args: Optional[Dict[str, Any]]) -> Any:
        if self._closed is not None:
            raise PeerixError("CLOSED", self._closed)
        fut: "asyncio.Future[Message]" = asyncio.get_running_loop().create_future()
        self._pending[id] = fut
        try:
            await self._send(request_message(id, op, args))
        except Exception:
            self._pending.pop(id, None)
            raise
        reply = await fut
        if reply.get("ok"):
            return reply.get("result")
        err = reply.get("error") or {}
        raise PeerixError(err.get("code", "INTERNAL"), err.get("message", "request failed"))

    async def request(self, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
        """Send any request and return its result; raises :class:`PeerixError` on failure."""
        return await self._request_with_id(next(self._ids), op, args)

    async def _map(self, op: str, args: Optional[Dict[str, Any]] = None, id: Optional[int] = None) -> Dict[str, Any]:
        result = await self._request_with_id(next(self._ids) if id is None else id, op, args)
        if not isinstance(result, dict):
            raise PeerixError("MALFORMED_FRAME", f"{op}: the daemon replied {result!r}, not a map")
        return result

    # --- rooms -------------------------------------------------------------------------------

    async def status(self) -> Dict[str, Any]:
        """Version, epoch, drivers and rooms (each with its own peer ``id`` and ``holders``)."""
        return await self._map("status")

    async def join(self, room: str, metadata: Any = None, driver: Optional[str] = None,
                   options: Optional[Dict[str, Any]] = None, persist: bool = False) -> Dict[str, Any]:
        """Hold ``room`` (join it if nobody does yet). ``persist=True`` keeps it joined after this
        connection closes, until a ``leave`` releases it. Result: ``{room, id, metadata, holders, persist}``."""
        args: Dict[str, Any] = {"room": room}
        if metadata is not None:
            args["metadata"] = metadata
        if driver is not None:
            args["driver"] = driver
        if options is not None:
            args["options"] = options
        if persist:
            args["persist"] = True
        return await self._map("join", args)

    async def leave(self, room: str, all: bool = False) -> Dict[str, Any]:
        """Release this connection's hold (``all=True``: every hold). Result: ``{left, holders}``."""
        args: Dict[str, Any] = {"room": room}
        if all:
            args["all"] = True
        return await self._map("leave", args)

    async def peers(self, room: str) -> List[Dict[str, Any]]:
        """The room's connections: ``[{id, state, metadata, channels, tracks}]`` (``tracks``: what each shares)."""
        return list((await self.request("peers", {"room": room}))["peers"])

    async def inbox(self, room: str, max: Optional[int] = None) -> Dict[str, Any]:
        """Take messages that arrived while no client subscribed: ``{events, dropped, more}``."""
        args: Dict[str, Any] = {"room": room}
        if max is not None:
            args["max"] = max
        return await self._map("inbox", args)

    async def forward(self, room: str, peer: str, label: str, to: Optional[str] = None,
                      kind: Optional[str] = None) -> Dict[str, Any]:
        """Send the RTP of a track ``peer`` shares under ``label`` to ``to`` (``"127.0.0.1:6000"``),
        or stop (``to=None``). ``kind`` (``"audio"``/``"video"``) picks the track when the label has
        both. Result: ``{track, kind, codec, sdp}``; write ``sdp`` to a file and open it with
        ffplay, VLC or GStreamer."""
        args: Dict[str, Any] = {"room": room, "peer": peer, "label": label}
        if kind is not None:
            args["kind"] = kind
        if to is None:
            args["stop"] = True
        else:
            args["to"] = to
        return await self._map("forward", args)

    async def share(self, room: str, label: str, tracks: List[Dict[str, Any]],
                    audio_parameters: Optional[Dict[str, Any]] = None,
                    video_parameters: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Share a labelled stream with every peer of ``room`` (Peerix's ``share``). Each track is
        ``{"codec": "vp8"|"vp9"|"h264"|"av1"|"opus", "rtp": "127.0.0.1:5004"}`` (RTP ingest; port 0
        picks one) or without ``rtp`` (fed with :meth:`frame`). Result: ``{stream, tracks: [{track,
        kind, codec, rtp?}]}``. Sharing a label again with the same kinds replaces its tracks."""
        args: Dict[str, Any] = {"room": room, "label": label, "tracks": tracks}
        if audio_parameters is not None:
            args["audioParameters"] = audio_parameters
        if video_parameters is not None:
            args["videoParameters"] = video_parameters
        return await self._map("share", args)

    async def unshare(self, room: str, label: str) -> bool:
        """Stop sharing ``label``; ``True`` if it was shared."""
        res = await self._map("unshare", {"room": room, "label": label})
        return bool(res.get("unshared"))

    async def frame(self, room: str, track: str, data: bytes, duration_us: int) -> None:
        """Push one encoded frame (VP8/VP9/AV1 frame, H.264 Annex B access unit, or one Opus
        packet) lasting ``duration_us`` into a track shared without ``rtp``. Send a keyframe when a
        ``track:keyframe`` event asks."""
        await self.request("frame", {"room": room, "track": track, "data": data,
                                     "duration": duration_us})

    # --- channels ----------------------------------------------------------------------------

    async def open(self, room: str, label: str, **options: Any) -> None:
        """Open a channel (``ordered``, ``protocol``, ``maxRetransmits``, ``maxPacketLifeTime``, ``to``)."""
        await self.request("open", {"room": room, "label": label, **options})

    async def close_channel(self, room: str, label: str, to: Optional[str] = None) -> None:
        """Close a channel (at every peer, or at ``to``)."""
        args: Dict[str, Any] = {"room": room, "label": label}
        if to is not None:
            args["to"] = to
        await self.request("close", args)

    async def send_text(self, room: str, text: str, label: str = "default", to: Optional[str] = None,
                        info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Send text; the result reports each peer: ``{transfer, peers: [{id, ok, error?}]}``."""
        return await self._map("send", send_args(room, text, "text", label, to, info))

    async def send_json(self, room: str, value: Any, label: str = "default", to: Optional[str] = None,
                        info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Send a JSON value."""
        return await self._map("send", send_args(room, value, "json", label, to, info))

    async def send_batch(self, room: str, messages: List[Any], type: str = "bytes", label: str = "default",
                         to: Optional[str] = None, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Send several whole messages of one ``type`` (text | bytes | json) in one request; each
        arrives as a message of its own, in order. The result reports each peer:
        ``{transfer, count, peers: [{id, ok, delivered, failed?: [{index, error}]}]}``."""
        return await self._map("send", batch_args(room, messages, type, label, to, info))

    async def send_bytes(self, room: str, data: bytes, label: str = "default", to: Optional[str] = None,
                         info: Optional[Dict[str, Any]] = None, chunk: int = 1024 * 1024,
                         on_progress: Optional[Callable[[Message], None]] = None) -> Dict[str, Any]:
        """Send bytes; payloads larger than ``chunk`` are streamed. ``on_progress`` gets the
        daemon's ``progress`` frames ({peer, label, current, total?, done})."""
        data = bytes(data)
        progress = on_progress is not None
        start_id = next(self._ids)
        if on_progress is not None:
            self._progress[start_id] = on_progress
        try:
            if len(data) <= chunk:
                return await self._map(
                    "send", send_args(room, data, "bytes", label, to, info, progress=progress), start_id)
            first = await self._map(
                "send", send_args(room, b"", "bytes", label, to, info, more=True, progress=progress), start_id)
            transfer = first["transfer"]
            result: Dict[str, Any] = first
            for off in range(0, len(data), chunk):
                part = data[off : off + chunk]
                more = off + chunk < len(data)
                result = await self._map("send", chunk_args(transfer, part, more))
            return result
        finally:
            self._progress.pop(start_id, None)

    # --- events ------------------------------------------------------------------------------

    @property
    def events(self) -> EventStream:
        """This connection's event stream (also before any ``subscribe``: ``lagged`` and ``room:left``)."""
        return self._events

    async def subscribe(self, events: List[str], room: Optional[str] = None, since: Optional[int] = None,
                        epoch: Optional[int] = None) -> EventStream:
        """Add a subscription and return the connection's event stream.

        With ``since`` (and the ``epoch`` it came from), events after that seq still held by the
        daemon come first, then live ones, with no gap or repeat; what the daemon no longer holds
        is announced by a ``lagged`` event first. The reply is kept as :attr:`last_subscribe`."""
        self.last_subscribe = await self._map("subscribe", subscribe_args(events, room, since, epoch))
        return self._events

    async def resume(self, events: List[str], position: Position, room: Optional[str] = None) -> EventStream:
        """Subscribe from where another connection stopped (its :attr:`position`)."""
        return await self.subscribe(events, room, since=position.seq, epoch=position.epoch)

    async def unsubscribe(self) -> None:
        """Drop every subscription of this connection."""
        await self.request("unsubscribe")

    # --- admission (Peerix's verify) -----------------------------------------------------------

    async def verifier(self, room: str) -> EventStream:
        """Become the verifier of ``room`` (joined with ``options={"verify": {"mode": "verifier"}}``).

        Returns the stream of its ``verify`` events (``data: {request, peer, id, metadata}``);
        answer each with :meth:`verify` before the room's timeout."""
        stream = EventStream()
        previous = self._verify.get(room)
        self._verify[room] = stream
        try:
            await self.request("verifier", {"room": room})
        except Exception:
            if previous is None:
                self._verify.pop(room, None)
            else:
                self._verify[room] = previous
            raise
        return stream

    async def release_verifier(self, room: str) -> None:
        """Stop being the room's verifier."""
        await self.request("verifier", {"room": room, "release": True})
        stream = self._verify.pop(room, None)
        if stream is not None:
            stream._put(None)

    async def verify(self, room: str, request: int, accept: bool) -> None:
        """Answer a ``verify`` event: may that peer connect?"""
        await self.request("verify", {"room": room, "request": request, "accept": accept})

    # --- lifetime ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection; the daemon releases the rooms it held (not ``persist`` ones)."""
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        self._task.cancel()
        self._shutdown("closed by client")

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def connect(path: Optional[str] = None, client: str = CLIENT_NAME, timeout: float = 10.0) -> Client:
    """Connect to peerixd and perform the handshake. Raises :class:`NotRunningError` when no
    daemon listens, :class:`PeerixError` when the daemon refuses (e.g. ``PERMISSION_DENIED``)."""
    path = path or default_socket_path()
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunningError(path) from None
    writer.write(encode_frame(hello_message(client)))
    await writer.drain()
    decoder = FrameDecoder()

    async def first_frame() -> bytes:
        while True:
            body = decoder.next_frame()
            if body is not None:
                return body
            data = await reader.read(65536)
            if not data:
                raise PeerixError("CLOSED", "peerixd closed the connection during the handshake")
            decoder.push(data)

    msg = decode_body(await asyncio.wait_for(first_frame(), timeout))
    if msg["type"] == "error":
        writer.close()
        raise PeerixError(msg.get("code", "INTERNAL"), msg.get("message", ""))
    if msg["type"] != "welcome" or msg.get("version") != PROTOCOL_VERSION:
        writer.close()
        raise PeerixError("VERSION_MISMATCH", f"unexpected handshake answer: {msg!r}")
    return Client(reader, writer, msg, decoder)
