"""Asyncio client for peerixd, the Peerix peer daemon.

Speaks the peerixd local IPC protocol (see ipc-proto/PROTOCOL.md): frames of a
4-byte big-endian length followed by one MessagePack map.

Dependencies: the Python standard library and the ``msgpack`` package.
The API is asyncio-based::

    import asyncio, peerix_client

    async def main():
        client = await peerix_client.connect()
        await client.join("lobby")
        events = await client.subscribe(["channel:message"], room="lobby")
        await client.send_text("lobby", "hello")
        async for event in events:
            print(event["name"], event["data"])

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
from typing import Any, AsyncIterator, Dict, List, Optional

import msgpack

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_MAX_FRAME",
    "PeerixError",
    "NotRunningError",
    "FrameDecoder",
    "encode_frame",
    "decode_body",
    "default_socket_path",
    "hello_message",
    "request_message",
    "send_args",
    "chunk_args",
    "Client",
    "EventStream",
    "connect",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
CLIENT_NAME = "peerix-py/0.1.0"


class PeerixError(Exception):
    """A failed request or connection-level error, with the protocol error code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotRunningError(ConnectionError):
    """Raised when no daemon listens at the socket path."""

    def __init__(self, path: str):
        super().__init__(
            f"peerixd is not running (no socket at {path}); start it with `peerixd`"
        )
        self.path = path


def default_socket_path() -> str:
    """PEERIX_SOCKET, else $XDG_RUNTIME_DIR/peerix/peerixd.sock, else /run/peerix/peerixd.sock."""
    explicit = os.environ.get("PEERIX_SOCKET")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "peerix", "peerixd.sock")
    return "/run/peerix/peerixd.sock"


def encode_frame(msg: Dict[str, Any], max_frame: int = 0xFFFFFFFF) -> bytes:
    """Encode one message (a dict) as a frame. ``bytes`` become MessagePack bin."""
    body = msgpack.packb(msg, use_bin_type=True)
    if len(body) > max_frame:
        raise PeerixError("FRAME_TOO_LARGE", f"frame of {len(body)} bytes exceeds {max_frame}")
    return struct.pack(">I", len(body)) + body


def decode_body(body: bytes) -> Dict[str, Any]:
    """Decode one frame payload; raises PeerixError(MALFORMED_FRAME) on bad input."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several exception types
        raise PeerixError("MALFORMED_FRAME", str(exc)) from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise PeerixError("MALFORMED_FRAME", "frame is not a message map")
    return msg


class FrameDecoder:
    """Splits a byte stream into frame payloads."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()

    def push(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Optional[bytes]:
        """Return the next payload, None if incomplete; PeerixError if too large."""
        if len(self._buf) < 4:
            return None
        (length,) = struct.unpack(">I", self._buf[:4])
        if length > self.max_frame:
            raise PeerixError("FRAME_TOO_LARGE", f"frame of {length} bytes exceeds {self.max_frame}")
        if len(self._buf) < 4 + length:
            return None
        body = bytes(self._buf[4 : 4 + length])
        del self._buf[: 4 + length]
        return body


def hello_message(client: str = CLIENT_NAME, capabilities: Optional[List[str]] = None) -> Dict[str, Any]:
    return {"type": "hello", "version": PROTOCOL_VERSION, "client": client, "capabilities": capabilities or []}


def request_message(id: int, op: str, args: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {"type": "request", "id": id, "op": op, "args": args if args is not None else {}}


def send_args(room: str, data: Any, type: str, label: str = "default", to: Optional[str] = None,
              info: Optional[Dict[str, Any]] = None, more: bool = False, progress: bool = False) -> Dict[str, Any]:
    """Arguments of a `send` start request (``type``: text | bytes | json)."""
    args: Dict[str, Any] = {"room": room, "label": label}
    if to is not None:
        args["to"] = to
    args["type"] = type
    args["data"] = data
    if info is not None:
        args["info"] = info
    if more:
        args["more"] = True
    if progress:
        args["progress"] = True
    return args


def chunk_args(transfer: int, data: Any, more: bool) -> Dict[str, Any]:
    """Arguments of a `send` chunk request of a streamed transfer."""
    return {"transfer": transfer, "data": data, "more": more}


class EventStream:
    """Async iterator over event dicts ({seq, name, room?, data})."""

    def __init__(self) -> None:
        self._queue: "asyncio.Queue[Optional[Dict[str, Any]]]" = asyncio.Queue()

    def _put(self, event: Optional[Dict[str, Any]]) -> None:
        self._queue.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[Dict[str, Any]]:
        return self

    async def __anext__(self) -> Dict[str, Any]:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class Client:
    """A connection to peerixd. Use :func:`connect` to create one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, welcome: Dict[str, Any],
                 decoder: FrameDecoder):
        self.welcome = welcome
        self.peer_id: str = welcome.get("id", "")
        self.max_frame: int = int(welcome.get("max_frame", DEFAULT_MAX_FRAME))
        self._reader = reader
        self._writer = writer
        self._decoder = decoder
        self._ids = itertools.count(1)
        self._pending: Dict[int, asyncio.Future] = {}
        self._progress: Dict[int, Any] = {}
        self._events: Optional[EventStream] = None
        self._verify: Dict[str, EventStream] = {}
        self._closed: Optional[str] = None
        self._write_lock = asyncio.Lock()
        self._task = asyncio.ensure_future(self._read_loop())

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
            return  # skip malformed frames; the length prefix keeps us in sync
        kind = msg["type"]
        if kind == "reply":
            fut = self._pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind == "event" and msg.get("name") == "verify":
            stream = self._verify.get(msg.get("room", ""))
            if stream is not None:
                stream._put(msg)
        elif kind == "event":
            if self._events is not None:
                self._events._put(msg)
        elif kind == "progress":
            cb = self._progress.get(msg.get("id"))
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
        if self._events is not None:
            self._events._put(None)
            self._events = None
        for stream in self._verify.values():
            stream._put(None)
        self._verify.clear()

    async def _send(self, msg: Dict[str, Any]) -> None:
        frame = encode_frame(msg, self.max_frame)
        async with self._write_lock:
            self._writer.write(frame)
            await self._writer.drain()

    async def _request_with_id(self, id: int, op: str, args: Optional[Dict[str, Any]]) -> Any:
        if self._closed is not None:
            raise PeerixError("CLOSED", self._closed)
        fut = asyncio.get_running_loop().create_future()
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
        """Send a request and return its result; raises PeerixError on failure."""
        return await self._request_with_id(next(self._ids), op, args)

    async def status(self) -> Dict[str, Any]:
        return await self.request("status")

    async def join(self, room: str, metadata: Any = None, driver: Optional[str] = None,
                   options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        args: Dict[str, Any] = {"room": room}
        if metadata is not None:
            args["metadata"] = metadata
        if driver is not None:
            args["driver"] = driver
        if options is not None:
            args["options"] = options
        return await self.request("join", args)

    async def leave(self, room: str) -> None:
        await self.request("leave", {"room": room})

    async def peers(self, room: str) -> List[Dict[str, Any]]:
        return (await self.request("peers", {"room": room}))["peers"]

    async def open(self, room: str, label: str, **options: Any) -> None:
        await self.request("open", {"room": room, "label": label, **options})

    async def close_channel(self, room: str, label: str, to: Optional[str] = None) -> None:
        args: Dict[str, Any] = {"room": room, "label": label}
        if to is not None:
            args["to"] = to
        await self.request("close", args)

    async def send_text(self, room: str, text: str, label: str = "default", to: Optional[str] = None,
                        info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return await self.request("send", send_args(room, text, "text", label, to, info))

    async def send_bytes(self, room: str, data: bytes, label: str = "default", to: Optional[str] = None,
                         info: Optional[Dict[str, Any]] = None, chunk: int = 1024 * 1024) -> Dict[str, Any]:
        """Send bytes; payloads larger than ``chunk`` are streamed."""
        data = bytes(data)
        if len(data) <= chunk:
            return await self.request("send", send_args(room, data, "bytes", label, to, info))
        first = await self.request("send", send_args(room, b"", "bytes", label, to, info, more=True))
        transfer = first["transfer"]
        result: Dict[str, Any] = first
        for off in range(0, len(data), chunk):
            part = data[off : off + chunk]
            more = off + chunk < len(data)
            result = await self.request("send", chunk_args(transfer, part, more))
        return result

    async def send_json(self, room: str, value: Any, label: str = "default", to: Optional[str] = None,
                        info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return await self.request("send", send_args(room, value, "json", label, to, info))

    async def subscribe(self, events: List[str], room: Optional[str] = None) -> EventStream:
        """Subscribe; all events of this connection go to the returned stream."""
        stream = EventStream()
        previous, self._events = self._events, stream
        args: Dict[str, Any] = {"events": list(events)}
        if room is not None:
            args["room"] = room
        try:
            await self.request("subscribe", args)
        except Exception:
            self._events = previous
            raise
        return stream

    async def verifier(self, room: str) -> EventStream:
        """Become the verifier of ``room`` (joined with ``options={"verify": {"mode": "verifier"}}``).

        Returns the stream of its ``verify`` events ({seq, name, room, data: {request, peer, id,
        metadata}}); answer each with :meth:`verify` before the room's timeout."""
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
        await self.request("verifier", {"room": room, "release": True})
        stream = self._verify.pop(room, None)
        if stream is not None:
            stream._put(None)

    async def verify(self, room: str, request: int, accept: bool) -> None:
        """Answer a ``verify`` event: may that peer connect?"""
        await self.request("verify", {"room": room, "request": request, "accept": accept})

    async def unsubscribe(self) -> None:
        await self.request("unsubscribe")
        if self._events is not None:
            self._events._put(None)
            self._events = None

    async def close(self) -> None:
        """Close the connection (rooms stay joined in the daemon)."""
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
    """Connect to peerixd and perform the handshake."""
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
