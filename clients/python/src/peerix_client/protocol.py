"""The peerixd local IPC protocol without I/O: frames, messages, argument builders.

Normative spec: ``ipc-proto/PROTOCOL.md``. A frame is a 4-byte big-endian length followed by
exactly one MessagePack map with string keys; ``bytes`` travel as MessagePack ``bin``.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Dict, List, Optional

import msgpack

PROTOCOL_VERSION = 1
"""The protocol version this client speaks (``hello.version``)."""

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
"""The daemon's default frame limit; the real one is ``welcome["max_frame"]``."""

CLIENT_NAME = "peerix-py/0.2.0"

Message = Dict[str, Any]


class PeerixError(Exception):
    """A failed request or a connection-level error, with the protocol error code.

    ``code`` is one of PROTOCOL.md's codes (e.g. ``NOT_JOINED``), or ``CLOSED`` when the
    connection ended before the reply came."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotRunningError(ConnectionError):
    """No daemon listens at the socket path."""

    def __init__(self, path: str):
        super().__init__(f"peerixd is not running (no socket at {path}); start it with `peerixd`")
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


def encode_frame(msg: Message, max_frame: int = 0xFFFFFFFF) -> bytes:
    """Encode one message as a frame. Raises ``PeerixError(FRAME_TOO_LARGE)`` above ``max_frame``."""
    body: bytes = msgpack.packb(msg, use_bin_type=True)
    if len(body) > max_frame:
        raise PeerixError("FRAME_TOO_LARGE", f"frame of {len(body)} bytes exceeds {max_frame}")
    return struct.pack(">I", len(body)) + body


def decode_body(body: bytes) -> Message:
    """Decode one frame payload; raises ``PeerixError(MALFORMED_FRAME)`` on bad input."""
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
        """Append bytes read from the socket."""
        self._buf += data

    def next_frame(self) -> Optional[bytes]:
        """The next payload, ``None`` if incomplete; ``PeerixError(FRAME_TOO_LARGE)`` if too large."""
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


def hello_message(client: str = CLIENT_NAME, capabilities: Optional[List[str]] = None) -> Message:
    """The ``hello`` frame's message."""
    return {"type": "hello", "version": PROTOCOL_VERSION, "client": client, "capabilities": capabilities or []}


def request_message(id: int, op: str, args: Optional[Dict[str, Any]] = None) -> Message:
    """A ``request`` message."""
    return {"type": "request", "id": id, "op": op, "args": args if args is not None else {}}


def send_args(room: str, data: Any, type: str, label: str = "default", to: Optional[str] = None,
              info: Optional[Dict[str, Any]] = None, more: bool = False, progress: bool = False) -> Dict[str, Any]:
    """Arguments of a ``send`` start request (``type``: text | bytes | json)."""
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


def batch_args(room: str, messages: List[Any], type: str, label: str = "default", to: Optional[str] = None,
               info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Arguments of a ``send`` with ``batch``: several whole messages of one ``type``."""
    args: Dict[str, Any] = {"room": room, "label": label}
    if to is not None:
        args["to"] = to
    args["type"] = type
    args["batch"] = list(messages)
    if info is not None:
        args["info"] = info
    return args


def chunk_args(transfer: int, data: Any, more: bool) -> Dict[str, Any]:
    """Arguments of a ``send`` chunk request of a streamed transfer."""
    return {"transfer": transfer, "data": data, "more": more}


def subscribe_args(events: List[str], room: Optional[str] = None, since: Optional[int] = None,
                   epoch: Optional[int] = None) -> Dict[str, Any]:
    """Arguments of ``subscribe``; ``since``/``epoch`` resume after a reconnect."""
    args: Dict[str, Any] = {"events": list(events)}
    if room is not None:
        args["room"] = room
    if since is not None:
        args["since"] = since
    if epoch is not None:
        args["epoch"] = epoch
    return args
