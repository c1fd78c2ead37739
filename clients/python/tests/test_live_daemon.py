"""The Python client against two real peerixd processes (local driver) over the real socket."""

import asyncio

import peerix_client
from peerix_client.blocking import connect as blocking_connect

from conftest import next_event


def test_two_daemons_exchange_text_and_bytes(daemons):
    a_sock, b_sock = daemons.start("a"), daemons.start("b")

    async def scenario():
        a = await peerix_client.connect(a_sock)
        b = await peerix_client.connect(b_sock)
        b_events = await b.subscribe(["connection", "channel"], room="py")
        await a.join("py", metadata={"name": "python-a"})
        await b.join("py")
        ev = await next_event(b_events, "connection:connected")
        assert ev["data"]["metadata"] == {"name": "python-a"}
        await a.open("py", "chat")
        await next_event(b_events, "channel:open")
        res = await a.send_text("py", "hello from python", label="chat")
        assert all(p["ok"] for p in res["peers"]), res
        ev = await next_event(b_events, "channel:message")
        assert ev["data"]["data"] == "hello from python"
        assert ev["data"]["type"] == "text"
        payload = bytes(range(256)) * 4096  # 1 MiB: streamed by the client
        progress = []
        res = await a.send_bytes("py", payload, label="chat", chunk=256 * 1024, on_progress=progress.append)
        assert all(p["ok"] for p in res["peers"]), res
        assert progress and progress[-1]["done"], progress
        got = b""
        while True:
            ev = await next_event(b_events, "channel:message")
            got += ev["data"]["data"]
            if ev["data"]["final"]:
                break
        assert got == payload
        res = await a.send_batch("py", ["b0", "b1", "b2"], type="text", label="chat")
        assert res["count"] == 3 and all(p["ok"] and p["delivered"] == 3 for p in res["peers"]), res
        for k in range(3):
            ev = await next_event(b_events, "channel:message")
            assert ev["data"]["data"] == f"b{k}", ev
        try:
            await a.send_batch("py", [], label="chat")
            raise AssertionError("empty batch accepted")
        except peerix_client.PeerixError as e:
            assert e.code == "BAD_REQUEST", e
        try:
            await a.request("no-such-op")
            raise AssertionError("unknown op accepted")
        except peerix_client.PeerixError as e:
            assert e.code == "UNKNOWN_OP"
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_blocking_wrapper(daemons):
    """The blocking client does the same without an event loop of its own."""
    a_sock, b_sock = daemons.start("a"), daemons.start("b")
    with blocking_connect(a_sock) as a, blocking_connect(b_sock) as b:
        b.subscribe(["connection:connected", "channel:message"], room="blk")
        # A room-wide send goes to the peers connected at the sender: wait for both sides
        # (B's daemon may see the connection up before A's does).
        a.subscribe(["connection:connected"], room="blk")
        a.join("blk")
        b.join("blk")
        for c in (b, a):
            ev = c.next_event(timeout=15)
            assert ev is not None and ev["name"] == "connection:connected", ev
        a.open("blk", "chat")
        res = a.send_json("blk", {"k": [1, 2]}, label="chat")  # waits for the channel to open
        assert res["peers"] and all(p["ok"] for p in res["peers"]), res
        ev = b.next_event(timeout=15)
        assert ev is not None and ev["name"] == "channel:message" and ev["data"]["data"] == {"k": [1, 2]}, ev
        st = a.status()
        assert any(r["room"] == "blk" for r in st["rooms"]), st
        try:
            a.leave("never-joined")
            raise AssertionError("leave of a room never joined succeeded")
        except peerix_client.PeerixError as e:
            assert e.code == "NOT_JOINED"


def test_share_frame_unshare(daemons):
    """share answers with the ingest port and track ids; frame feeds only IPC tracks."""
    sock = daemons.start("a")

    async def scenario():
        a = await peerix_client.connect(sock)
        await a.join("py-share")
        res = await a.share("py-share", "cam", [{"codec": "vp8", "rtp": "127.0.0.1:0"},
                                                {"codec": "opus"}])
        video, audio = res["tracks"]
        assert video["kind"] == "video" and video["codec"] == "video/VP8", res
        assert video["rtp"].startswith("127.0.0.1:") and not video["rtp"].endswith(":0"), res
        assert audio["kind"] == "audio" and "rtp" not in audio, res
        await a.frame("py-share", audio["track"], b"\xfc\xff\xfe", 20_000)
        try:
            await a.frame("py-share", video["track"], b"\x00", 33_333)
            raise AssertionError("frame accepted on an RTP track")
        except peerix_client.PeerixError as e:
            assert e.code == "BAD_REQUEST", e
        try:
            await a.share("py-share", "x", [{"codec": "mp3"}])
            raise AssertionError("unknown codec accepted")
        except peerix_client.PeerixError as e:
            assert e.code == "BAD_REQUEST" and "vp8" in str(e), e
        assert await a.unshare("py-share", "cam") is True
        assert await a.unshare("py-share", "cam") is False
        await a.close()

    asyncio.run(scenario())
