"""Real peerixd processes for the Python client's tests.

They need the workspace binaries (`cargo build --workspace --bins`); PEERIX_BIN_DIR overrides
where they are looked up. A missing binary fails the test (it never skips), so CI cannot pass
vacuously."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(os.environ.get("PEERIX_BIN_DIR", ROOT / "target" / "debug"))


class Daemons:
    """Starts daemons sharing one `local` signaling directory; kills them at the end."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        self.procs: List[subprocess.Popen[bytes]] = []

    def start(self, name: str, *extra: str) -> str:
        exe = BIN / "peerixd"
        assert exe.exists(), f"{exe} missing: run `cargo build --workspace --bins` first"
        sock = self.tmp / f"{name}.sock"
        log = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [str(exe), "--socket", str(sock), "--local-dir", str(self.tmp / "local"), "--no-system-config", *extra],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.procs.append(proc)
        deadline = time.time() + 20
        while not sock.exists():
            assert proc.poll() is None, (self.tmp / f"{name}.log").read_text()
            assert time.time() < deadline, "daemon did not start"
            time.sleep(0.02)
        return str(sock)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with tempfile.TemporaryDirectory(prefix="peerix-py-") as d:
        ds = Daemons(pathlib.Path(d))
        try:
            yield ds
        finally:
            ds.stop()


async def next_event(events: Any, name: str, timeout: float = 15.0,
                     where: Callable[[Dict[str, Any]], bool] = lambda ev: True) -> Dict[str, Any]:
    """The next event called `name` (and matching `where`), skipping others."""

    async def loop() -> Dict[str, Any]:
        async for ev in events:
            if ev["name"] == name and where(ev):
                return dict(ev)
        raise AssertionError(f"event stream ended before {name}")

    return await asyncio.wait_for(loop(), timeout)
