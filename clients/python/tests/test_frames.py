"""Tests of the Python client's framing against PROTOCOL.md's example frames
and of the client against a FAKE in-test daemon (not peerixd)."""

import asyncio
import os
import re
import tempfile

import pytest

import peerix_client as pc

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "ipc-proto", "PROTOCOL.md")


def doc_frames():
    text = open(DOC, encoding="utf-8").read()
    frames = {}
    for m in re.finditer(r"<!-- frame:([a-z0-9-]+) -->.*?```text\n(.*?)```", text, re.S):
        frames[m.group(1)] = bytes.fromhex("".join(m.group(2).split()))
    return frames


FRAMES = doc_frames()

CLIENT_EXAMPLES = {
    "hello": pc.hello_message("peerix-cli/0.1.0"),
    "request-status": pc.request_message(1, "status"),
    "request-join": pc.request_message(2, "join", {"room": "lobby", "metadata": {"name": "bot"}}),
    "request-subscribe": pc.request_message(4, "subscribe", {"events": ["channel:message"], "room": "lobby"}),
    "request-send-text": pc.request_message(5, "send", pc.send_args("lobby", "hi", "text")),
    "request-send-stream-start": pc.request_message(
        6, "send", pc.send_args("lobby", b"", "bytes", "files", "peerB", {"name": "a.bin"}, more=True, progress=True)
    ),
    "request-send-chunk": pc.request_message(7, "send", pc.chunk_args(2, b"\x01\x02\x03", False)),
    "request-send-batch": pc.request_message(7, "send", pc.batch_args("lobby", ["a", "b"], "text")),
}


def test_doc_has_all_examples():
    assert len(FRAMES) >= 15
    for name in CLIENT_EXAMPLES:
        assert name in FRAMES


@pytest.mark.parametrize("name", sorted(CLIENT_EXAMPLES))
def test_client_frames_match_doc(name):
    assert pc.encode_frame(CLIENT_EXAMPLES[name]) == FRAMES[name]


def test_daemon_frames_decode_and_reencode():
    for name, frame in FRAMES.items():
        dec = pc.FrameDecoder()
        dec.push(frame)
        msg = pc.decode_body(dec.next_frame())
        assert dec.next_frame() is None
        assert pc.encode_frame(msg) == frame, name
    ev = pc.decode_body(FRAMES["event-message"][4:])
    assert ev["data"]["data"] == b"\x01\x02\x03"
    assert ev["data"]["final"] is True


def test_decoder_limits_and_malformed():
    dec = pc.FrameDecoder(max_frame=8)
    dec.push(b"\x00\x00\x00\x09")
    with pytest.raises(pc.PeerixError) as e:
        dec.next_frame()
    assert e.value.code == "FRAME_TOO_LARGE"
    with pytest.raises(pc.PeerixError) as e:
        pc.decode_body(b"\xc1")
    assert e.value.code == "MALFORMED_FRAME"
    with pytest.raises(pc.PeerixError):
        pc.decode_body(b"\x90")


async def fake_daemon(reader, writer):
    """FAKE daemon for client tests only: handshake, status, subscribe + one event."""
    dec = pc.FrameDecoder()
    while True:
        data = await reader.read(65536)
        if not data:
            return
        dec.push(data)
        while (body := dec.next_frame()) is not None:
            msg = pc.decode_body(body)
            if msg["type"] == "hello":
                out = [{"type": "welcome", "version": 1, "daemon": "fake", "id": "me", "capabilities": [],
                        "max_frame": pc.DEFAULT_MAX_FRAME}]
            elif msg["op"] == "subscribe":
                out = [{"type": "reply", "id": msg["id"], "ok": True, "result": {}},
                       {"type": "event", "seq": 1, "name": "channel:message", "room": "lobby",
                        "data": {"peer": "p", "id": "p", "label": "default", "type": "text", "data": "yo",
                                 "transfer": 1, "offset": 0, "final": True}}]
            elif msg["op"] == "leave":
                out = [{"type": "reply", "id": msg["id"], "ok": False,
                        "error": {"code": "NOT_JOINED", "message": "nope"}}]
            else:
                out = [{"type": "reply", "id": msg["id"], "ok": True, "result": {"op": msg["op"]}}]
            for m in out:
                writer.write(pc.encode_frame(m))
            await writer.drain()


def test_client_against_fake_daemon():
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "fake.sock")
            server = await asyncio.start_unix_server(fake_daemon, path)
            async with server:
                client = await pc.connect(path)
                assert client.machine_id == "me"
                a, b = await asyncio.gather(client.status(), client.request("peers", {"room": "x"}))
                assert a == {"op": "status"} and b == {"op": "peers"}
                with pytest.raises(pc.PeerixError) as e:
                    await client.leave("x")
                assert e.value.code == "NOT_JOINED"
                events = await client.subscribe(["channel:message"])
                ev = await events.__anext__()
                assert ev["data"]["data"] == "yo"
                await client.close()
            with pytest.raises(pc.NotRunningError):
                await pc.connect(os.path.join(d, "missing.sock"))

    asyncio.run(main())
