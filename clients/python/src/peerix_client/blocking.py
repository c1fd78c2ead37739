"""A blocking wrapper for scripts and threads that do not run asyncio.

    from peerix_client.blocking import connect

    with connect() as client:
        client.join("lobby")
        client.subscribe(["channel:message"], room="lobby")
        client.send_text("lobby", "hello")
        for event in client.events(timeout=30):
            print(event["name"], event["data"])

Each :class:`BlockingClient` runs its own event loop on a daemon thread; every method blocks
until the daemon replies (or ``timeout`` seconds pass, then ``TimeoutError``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine, Dict, Iterator, List, Optional, TypeVar

from . import aio
from .protocol import CLIENT_NAME, Message

T = TypeVar("T")


class BlockingClient:
    """The blocking face of :class:`peerix_client.aio.Client`; same methods, same results."""

    def __init__(self, path: Optional[str] = None, client: str = CLIENT_NAME, timeout: float = 30.0):
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="peerix-client", daemon=True)
        self._thread.start()
        try:
            self._client: aio.Client = self._run(aio.connect(path, client))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError("peerixd did not answer in time") from None

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def async_client(self) -> aio.Client:
        """The underlying asyncio client (use it only from its loop)."""
        return self._client

    @property
    def welcome(self) -> Message:
        return self._client.welcome

    @property
    def position(self) -> aio.Position:
        return self._client.position

    def request(self, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
        return self._run(self._client.request(op, args))

    def status(self) -> Dict[str, Any]:
        return self._run(self._client.status())

    def join(self, room: str, metadata: Any = None, driver: Optional[str] = None,
             options: Optional[Dict[str, Any]] = None, persist: bool = False) -> Dict[str, Any]:
        return self._run(self._client.join(room, metadata, driver, options, persist))

    def leave(self, room: str, all: bool = False) -> Dict[str, Any]:
        return self._run(self._client.leave(room, all))

    def peers(self, room: str) -> List[Dict[str, Any]]:
        return self._run(self._client.peers(room))

    def inbox(self, room: str, max: Optional[int] = None) -> Dict[str, Any]:
        return self._run(self._client.inbox(room, max))

    def forward(self, room: str, peer: str, label: str, to: Optional[str] = None,
                kind: Optional[str] = None) -> Dict[str, Any]:
        return self._run(self._client.forward(room, peer, label, to, kind))

    def share(self, room: str, label: str, tracks: List[Dict[str, Any]],
              audio_parameters: Optional[Dict[str, Any]] = None,
              video_parameters: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self._run(self._client.share(room, label, tracks, audio_parameters,
                                            video_parameters))

    def unshare(self, room: str, label: str) -> bool:
        return self._run(self._client.unshare(room, label))

    def frame(self, room: str, track: str, data: bytes, duration_us: int) -> None:
        self._run(self._client.frame(room, track, data, duration_us))

    def open(self, room: str, label: str, **options: Any) -> None:
        self._run(self._client.open(room, label, **options))

    def close_channel(self, room: str, label: str, to: Optional[str] = None) -> None:
        self._run(self._client.close_channel(room, label, to))

    def send_text(self, room: str, text: str, label: str = "default", to: Optional[str] = None,
                  info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self._run(self._client.send_text(room, text, label, to, info))

    def send_json(self, room: str, value: Any, label: str = "default", to: Optional[str] = None,
                  info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self._run(self._client.send_json(room, value, label, to, info))

    def send_batch(self, room: str, messages: List[Any], type: str = "bytes", label: str = "default",
                   to: Optional[str] = None, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self._run(self._client.send_batch(room, messages, type, label, to, info))

    def send_bytes(self, room: str, data: bytes, label: str = "default", to: Optional[str] = None,
                   info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self._run(self._client.send_bytes(room, data, label, to, info))

    def subscribe(self, events: List[str], room: Optional[str] = None, since: Optional[int] = None,
                  epoch: Optional[int] = None) -> Dict[str, Any]:
        """Add a subscription; read the events with :meth:`events`. Returns the daemon's reply."""
        self._run(self._client.subscribe(events, room, since, epoch))
        return self._client.last_subscribe

    def unsubscribe(self) -> None:
        self._run(self._client.unsubscribe())

    def next_event(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next event, or ``None`` when the connection has ended. ``TimeoutError`` after ``timeout``."""
        async def one() -> Optional[Message]:
            try:
                return await self._client.events.next()
            except StopAsyncIteration:
                return None

        return self._run(one(), timeout if timeout is not None else self.timeout)

    def events(self, timeout: Optional[float] = None) -> Iterator[Message]:
        """Iterate over events until the connection ends (or no event came for ``timeout`` s)."""
        while True:
            try:
                event = self.next_event(timeout)
            except TimeoutError:
                return
            if event is None:
                return
            yield event

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        try:
            self._run(self._client.close(), 5)
        finally:
            self._stop_loop()

    def __enter__(self) -> "BlockingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(path: Optional[str] = None, client: str = CLIENT_NAME, timeout: float = 30.0) -> BlockingClient:
    """Connect to peerixd (blocking). See :func:`peerix_client.aio.connect`."""
    return BlockingClient(path, client, timeout)
