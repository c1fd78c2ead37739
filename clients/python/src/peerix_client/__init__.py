"""Python client for peerixd, the daemon that makes this machine a peer in Peerix rooms.

``import peerix_client`` gives the asyncio API (:func:`connect`, :class:`Client`);
:mod:`peerix_client.blocking` wraps it for code without an event loop; the protocol pieces
(frames, messages) are in :mod:`peerix_client.protocol`."""

from .aio import UNSOLICITED, Client, EventStream, Position, connect
from .protocol import (
    CLIENT_NAME,
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    FrameDecoder,
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

__version__ = "0.2.0"

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_MAX_FRAME",
    "CLIENT_NAME",
    "UNSOLICITED",
    "PeerixError",
    "NotRunningError",
    "FrameDecoder",
    "encode_frame",
    "decode_body",
    "default_socket_path",
    "hello_message",
    "request_message",
    "send_args",
    "batch_args",
    "chunk_args",
    "subscribe_args",
    "Client",
    "EventStream",
    "Position",
    "connect",
]
