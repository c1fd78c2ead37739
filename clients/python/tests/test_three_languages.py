"""Three applications, one per language, sharing one daemon's peer identity in one room.

The Python client and a Node client (clients/node/testlib/agent.js, driven over stdin/stdout) each
hold the room; the Rust CLI (`peerix events`, `peerix send`) subscribes and sends. A second
daemon, driven by the Python client, is the remote peer. Needs the workspace binaries and
`npm install` in clients/node."""

from __future__ import annotations

import asyncio
import itertools
import json
import pathlib
import uuid
from typing import Any, Dict, Optional

import peerix_client

from conftest import BIN, next_event

NODE_AGENT = pathlib.Path(__file__).resolve().parents[2] / "node" / "testlib" / "agent.js"


class NodeAgent:
    """The Node client in a child process."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.ids = itertools.count(1)
        self.replies: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self.events: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls) -> "NodeAgent":
        assert NODE_AGENT.exists(), NODE_AGENT
        proc = await asyncio.create_subprocess_exec(
            "node", str(NODE_AGENT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            msg = json.loads(line)
            if "event" in msg:
                self.events.put_nowait(msg["event"])
            elif "id" in msg and msg["id"] in self.replies:
                self.replies.pop(msg["id"]).set_result(msg)

    async def call(self, cmd: str, **args: Any) -> Any:
        id = next(self.ids)
        fut: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        self.replies[id] = fut
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": id, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(fut, 20)
        assert reply["ok"], reply
        return reply["result"]

    async def event(self, name: str, timeout: float = 15.0) -> Dict[str, Any]:
        async def loop() -> Dict[str, Any]:
            while True:
                ev = await self.events.get()
                if ev["name"] == name:
                    return ev
        return await asyncio.wait_for(loop(), timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.task.cancel()


class RustEvents:
    """`peerix --json events`: the Rust CLI as a subscriber, one JSON object per line."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    @classmethod
    async def start(cls, sock: str, room: str, patterns: str) -> "RustEvents":
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "peerix"), "--socket", sock, "--json", "events", "--room", room, "--filter", patterns,
            stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def event(self, name: str, timeout: float = 15.0, text: Optional[str] = None) -> Dict[str, Any]:
        assert self.proc.stdout is not None
        async def loop() -> Dict[str, Any]:
            while True:
                line = await self.proc.stdout.readline()
                assert line, "peerix events ended"
                ev = json.loads(line)
                if ev.get("name", ev.get("event")) == name and (text is None or ev.get("data") == text):
                    return dict(ev)
        return await asyncio.wait_for(loop(), timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def rust_send(sock: str, room: str, label: str, text: str) -> Dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "peerix"), "--socket", sock, "--json", "send", room, label, text, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out
    return dict(json.loads(out))


async def text_from(events: Any, text: str) -> Dict[str, Any]:
    return await next_event(events, "channel:message", where=lambda e: e["data"]["data"] == text)


def test_three_languages_share_one_identity(daemons: Any) -> None:
    a_sock, b_sock = daemons.start("a"), daemons.start("b")
    room = f"three-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        remote = await peerix_client.connect(b_sock)
        remote_events = await remote.subscribe(["connection", "channel"], room=room)
        py = await peerix_client.connect(a_sock)
        py_events = await py.subscribe(["channel:message", "room"], room=room)
        node = await NodeAgent.start()
        rust: Optional[RustEvents] = None
        try:
            await node.call("connect", socket=a_sock)
            await node.call("subscribe", events=["channel:message", "room"], room=room)
            rust = await RustEvents.start(a_sock, room, "channel:message,room")

            # Both apps hold the room; it is one peer to the remote.
            j1 = await py.join(room, metadata={"app": "python"})
            j2 = await node.call("join", room=room)
            assert j1["id"] == j2["id"] and j2["holders"] == 2, (j1, j2)
            remote_id = (await remote.join(room))["id"]
            ev = await next_event(remote_events, "connection:connected")
            assert ev["data"]["peer"] == j1["id"]
            await py.open(room, "chat")
            await next_event(remote_events, "channel:open", where=lambda e: e["data"]["label"] == "chat")
            await asyncio.sleep(0.5)
            peers = await remote.peers(room)
            assert [p["id"] for p in peers] == [j1["id"]], peers

            # One local app sends, the remote gets it once; the remote sends, all three apps get it.
            for who, send in (("python", py.send_text(room, "from-python", label="chat")),
                              ("node", node.call("send", room=room, label="chat", text="from-node")),
                              ("rust", rust_send(a_sock, room, "chat", "from-rust"))):
                res = await send
                assert [p["id"] for p in res["peers"]] == [remote_id], (who, res)
                assert all(p["ok"] for p in res["peers"]), (who, res)
                await text_from(remote_events, f"from-{who}")
            res = await remote.send_text(room, "from-remote", label="chat")
            assert all(p["ok"] for p in res["peers"]) and len(res["peers"]) == 1, res
            await text_from(py_events, "from-remote")
            ev = await node.event("channel:message")
            assert ev["data"]["data"] == "from-remote", ev
            await rust.event("channel:message", text="from-remote")

            # Python releases its hold: the room stays; Node and Rust go on receiving.
            left = await py.leave(room)
            assert left == {"left": False, "holders": 1}, left
            res = await remote.send_text(room, "after-python-left", label="chat")
            assert all(p["ok"] for p in res["peers"]), res
            ev = await node.event("channel:message")
            assert ev["data"]["data"] == "after-python-left", ev
            await rust.event("channel:message", text="after-python-left")
            assert (await remote.peers(room))[0]["state"] == "connected"

            # Node releases the last hold: the room is left; the remote sees the peer go and the
            # subscribers that are still there (Python, Rust) are told.
            left = await node.call("leave", room=room)
            assert left == {"left": True, "holders": 0}, left
            ev = await next_event(remote_events, "connection:closed")
            assert ev["data"]["peer"] == j1["id"]
            ev = await next_event(py_events, "room:left")
            assert ev["room"] == room and ev["data"]["reason"] == "released", ev
            await rust.event("room:left")
        finally:
            await node.stop()
            if rust is not None:
                await rust.stop()
            await py.close()
            await remote.close()

    asyncio.run(scenario())
