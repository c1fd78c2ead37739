"""The client conformance scenario (clients/conformance/SCENARIO.md) with the Python client,
against two real peerixd processes."""

import asyncio
import uuid

import peerix_client
from peerix_client import PeerixError

from conftest import next_event


async def expect_code(code, coro):
    try:
        await coro
    except PeerixError as e:
        assert e.code == code, f"expected {code}, got {e.code}: {e.message}"
        return
    raise AssertionError(f"expected {code}, the request succeeded")


async def message(events, want_type, timeout=20.0):
    """One whole channel:message (parts joined by offset)."""
    ev = await next_event(events, "channel:message", timeout)
    d = ev["data"]
    assert d["type"] == want_type, d
    if d["final"]:
        return d["data"]
    assert d["offset"] == 0
    parts = [d["data"]]
    size = len(d["data"])
    while True:
        ev = await next_event(events, "channel:message", timeout)
        p = ev["data"]
        assert p["transfer"] == d["transfer"] and p["offset"] == size, p
        parts.append(p["data"])
        size += len(p["data"])
        if p["final"]:
            return b"".join(parts) if want_type == "bytes" else "".join(parts)


def test_conformance_scenario(daemons):
    a_sock, b_sock = daemons.start("a"), daemons.start("b")
    room = f"conf-{uuid.uuid4().hex[:8]}"

    async def scenario():
        # 1. Handshake.
        h = await peerix_client.connect(a_sock)
        w = h.welcome
        assert w["version"] == 1
        for cap in ("events", "progress", "streamed-send", "holds", "resume", "inbox"):
            assert cap in w["capabilities"], w
        assert isinstance(w["epoch"], int) and w["epoch"] != 0, w
        assert isinstance(w["max_frame"], int)

        # 2. Subscribe by group (B) and by name (A).
        b = await peerix_client.connect(b_sock)
        b_events = await b.subscribe(["connection", "channel"], room=room)
        e1 = await peerix_client.connect(a_sock)
        e1_events = await e1.subscribe(["channel:message", "connection:connected"], room=room)

        # 3. Join.
        joined = await h.join(room, metadata={"name": "conformance"})
        room_id = joined["id"]
        assert room_id != w["id"], (room_id, w["id"])
        st = await h.status()
        [entry] = [r for r in st["rooms"] if r["room"] == room]
        assert entry["id"] == room_id and entry["holders"] == 1, entry
        await b.join(room)
        ev = await next_event(b_events, "connection:connected")
        assert ev["data"]["peer"] == room_id and ev["data"]["metadata"] == {"name": "conformance"}, ev
        assert len(await b.peers(room)) == 1
        await next_event(e1_events, "connection:connected")

        # 4. Open.
        await h.open(room, "chat")
        ev = await next_event(b_events, "channel:open", where=lambda e: e["data"]["label"] == "chat")

        # 5. Each type, A -> B.
        big = bytes(i % 251 for i in range(3 * 1024 * 1024))
        sends = [
            ("text", "héllo", h.send_text(room, "héllo", label="chat")),
            ("json", {"n": 1, "list": [1, "two", None]},
             h.send_json(room, {"n": 1, "list": [1, "two", None]}, label="chat")),
            ("bytes", bytes(range(16)), h.send_bytes(room, bytes(range(16)), label="chat")),
            ("bytes", big, h.send_bytes(room, big, label="chat")),
        ]
        for want_type, want, send in sends:
            res = await send
            assert res["peers"] and all(p["ok"] for p in res["peers"]), res
            assert await message(b_events, want_type) == want

        # 6. B -> A, received by a subscription by name.
        res = await b.send_text(room, "back", label="chat")
        assert all(p["ok"] for p in res["peers"]), res
        assert await message(e1_events, "text") == "back"

        # 7. Resume after reconnect.
        pos = e1.position
        assert pos.epoch == w["epoch"] and pos.seq > 0
        await e1.close()
        for text in ("r1", "r2", "r3"):
            res = await b.send_text(room, text, label="chat")
            assert all(p["ok"] for p in res["peers"]), res
        e2 = await peerix_client.connect(a_sock)
        e2_events = await e2.resume(["channel:message"], pos, room=room)
        assert e2.last_subscribe.get("complete") is True, e2.last_subscribe
        seqs = []
        for text in ("r1", "r2", "r3"):
            ev = await next_event(e2_events, "channel:message")
            assert ev["data"]["data"] == text, ev
            seqs.append(ev["seq"])
        assert seqs == sorted(seqs) and seqs[0] > pos.seq and len(set(seqs)) == 3, seqs
        await b.send_text(room, "r4", label="chat")
        ev = await next_event(e2_events, "channel:message")
        assert ev["data"]["data"] == "r4" and ev["seq"] > seqs[-1], ev
        e3 = await peerix_client.connect(a_sock)
        e3_events = await e3.subscribe(["channel:message"], room=room, since=pos.seq, epoch=pos.epoch + 1)
        assert e3.last_subscribe.get("complete") is False, e3.last_subscribe
        first = await e3_events.next(10)
        assert first["name"] == "lagged", first
        await e3.close()

        # 8. Documented errors; the connection stays usable after each.
        await expect_code("UNKNOWN_OP", h.request("no-such-op"))
        await expect_code("NOT_JOINED", h.leave("never-joined"))
        await expect_code("NOT_JOINED", h.send_text("never-joined", "x"))
        await expect_code("NO_SUCH_PEER", h.send_text(room, "x", label="chat", to="nobody"))
        await expect_code("NO_SUCH_CHANNEL", h.close_channel(room, "never-opened"))
        await expect_code("BAD_REQUEST", h.request("send", {"room": room, "label": "chat", "data": "x"}))
        await expect_code("BAD_REQUEST", h.request("subscribe", {"events": ["Bad Pattern!"]}))
        assert (await h.status())["rooms"]

        # 9. Leave.
        await e2.subscribe(["room"])
        left = await h.leave(room)
        assert left["left"] is True, left
        ev = await next_event(b_events, "connection:closed")
        assert ev["data"]["peer"] == room_id
        ev = await next_event(e2_events, "room:left")
        assert ev["room"] == room, ev
        assert all(r["room"] != room for r in (await h.status())["rooms"])
        for c in (h, b, e2):
            await c.close()

    asyncio.run(scenario())
