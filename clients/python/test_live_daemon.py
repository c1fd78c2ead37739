"""The Python client against two real peerixd processes (local driver) over the real socket.

Needs the workspace binaries (`cargo build --workspace --bins`); PEERIX_BIN_DIR overrides where
they are looked up. Fails (does not skip) when they are missing, so CI cannot pass vacuously.
"""

import asyncio
import os
import pathlib
import subprocess
import tempfile
import time

import peerix_client

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("PEERIX_BIN_DIR", ROOT / "target" / "debug"))


def start_daemon(tmp: pathlib.Path, name: str) -> subprocess.Popen:
    exe = BIN / "peerixd"
    assert exe.exists(), f"{exe} missing: run `cargo build --workspace --bins` first"
    log = open(tmp / f"{name}.log", "wb")
    proc = subprocess.Popen(
        [str(exe), "--socket", str(tmp / f"{name}.sock"), "--local-dir", str(tmp / "local"), "--no-system-config"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.time() + 20
    while not (tmp / f"{name}.sock").exists():
        assert proc.poll() is None, (tmp / f"{name}.log").read_text()
        assert time.time() < deadline, "daemon did not start"
        time.sleep(0.02)
    return proc


async def next_event(events, name, timeout=15.0):
    async def loop():
        async for ev in events:
            if ev["name"] == name:
                return ev
        raise AssertionError(f"event stream ended before {name}")

    return await asyncio.wait_for(loop(), timeout)


def test_two_daemons_exchange_text_and_bytes():
    with tempfile.TemporaryDirectory(prefix="peerix-py-") as d:
        tmp = pathlib.Path(d)
        procs = [start_daemon(tmp, "a"), start_daemon(tmp, "b")]
        try:

            async def scenario():
                a = await peerix_client.connect(str(tmp / "a.sock"))
                b = await peerix_client.connect(str(tmp / "b.sock"))
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
                res = await a.send_bytes("py", payload, label="chat")
                assert all(p["ok"] for p in res["peers"]), res
                got = b""
                while True:
                    ev = await next_event(b_events, "channel:message")
                    got += ev["data"]["data"]
                    if ev["data"]["final"]:
                        break
                assert got == payload
                try:
                    await a.request("no-such-op")
                    raise AssertionError("unknown op accepted")
                except peerix_client.PeerixError as e:
                    assert e.code == "UNKNOWN_OP"
                await a.close()
                await b.close()

            asyncio.run(scenario())
        finally:
            for p in procs:
                p.kill()
                p.wait()
