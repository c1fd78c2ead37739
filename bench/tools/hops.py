#!/usr/bin/env python3
"""Per-message thread hand-offs on the full path, daemon side.

Starts two peerixd (BIN/peerixd) on the local driver, connects them, opens label "rtt"
from A, then does N round trips like peerix-bench's RTT row (A sends 16 B to B, B's client
echoes, A waits for echo and its own send reply). Snapshots every daemon thread's
voluntary/nonvoluntary context switches and schedstat run time before and after the N
round trips and prints per-round-trip deltas per thread name.

usage: hops.py BIN_DIR [N] [--strace] [--perf OUT]   (needs the `msgpack` Python module)
"""
import asyncio, os, sys, tempfile, time, subprocess, statistics, shutil, signal

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python", "src"))
import peerix_client  # noqa: E402


def threads(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = open(f"/proc/{pid}/task/{tid}/status").read()
            sch = open(f"/proc/{pid}/task/{tid}/schedstat").read().split()
        except FileNotFoundError:
            continue
        d = dict(l.split(":\t", 1) for l in st.strip().split("\n") if ":\t" in l)
        out[tid] = (d["Name"].strip(), int(d["voluntary_ctxt_switches"]),
                    int(d["nonvoluntary_ctxt_switches"]), int(sch[0]))
    return out


def delta(a, b, n):
    rows = {}
    for tid, (name, v, nv, ns) in b.items():
        v0, nv0, ns0 = (a[tid][1], a[tid][2], a[tid][3]) if tid in a else (0, 0, 0)
        key = name if not name.startswith("tokio-runtime") else "tokio-worker"
        r = rows.setdefault(key, [0, 0, 0, 0])
        r[0] += 1; r[1] += v - v0; r[2] += nv - nv0; r[3] += ns - ns0
    return {k: (c, v / n, nv / n, ns / n / 1e3) for k, (c, v, nv, ns) in rows.items()}


async def main():
    bindir = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 and not sys.argv[2].startswith("-") else 500
    do_strace = "--strace" in sys.argv
    tmp = tempfile.mkdtemp(prefix="hops")
    local = os.path.join(tmp, "local"); os.mkdir(local, 0o700)
    procs = []
    for name in ("a", "b"):
        sock = os.path.join(tmp, f"{name}.sock")
        p = subprocess.Popen([os.path.join(bindir, "peerixd"), "--socket", sock, "--local-dir", local,
                              "--no-system-config"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(tmp, f"{name}.log"), "w"))
        procs.append((p, sock))
    for _ in range(200):
        if all(os.path.exists(s) for _, s in procs):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    a = await peerix_client.connect(procs[0][1]); b = await peerix_client.connect(procs[1][1])
    ea = await a.subscribe(["*"], room="bench"); eb = await b.subscribe(["*"], room="bench")
    ida = (await a.join("bench"))["id"]; idb = (await b.join("bench"))["id"]

    async def wait(ev, pred):
        while True:
            m = await ev.next(timeout=30)
            if pred(m):
                return m
    await wait(ea, lambda m: m["name"] == "connection:connected")
    await wait(eb, lambda m: m["name"] == "connection:connected")
    await a.open("bench", "rtt")
    await wait(ea, lambda m: m["name"] == "channel:open" and m["data"].get("label") == "rtt")
    await wait(eb, lambda m: m["name"] == "channel:open" and m["data"].get("label") == "rtt")

    async def echo():
        while True:
            m = await eb.next(timeout=60)
            if m["name"] == "channel:message" and m["data"].get("label") == "rtt":
                asyncio.ensure_future(b.send_text("bench", m["data"]["data"], label="rtt", to=ida))
    et = asyncio.ensure_future(echo())

    async def one(i):
        text = f"{i:016}"
        t0 = time.perf_counter()
        s = asyncio.ensure_future(a.send_text("bench", text, label="rtt", to=idb))
        await wait(ea, lambda m: m["name"] == "channel:message" and m["data"].get("data") == text)
        await s
        return (time.perf_counter() - t0) * 1e3
    for i in range(50):
        await one(i)
    await asyncio.sleep(0.5)
    pids = {"A": procs[0][0].pid, "B": procs[1][0].pid, "client": os.getpid()}
    st = []
    if do_strace:
        for k in ("A", "B"):
            st.append(subprocess.Popen(["strace", "-f", "-c", "-o", os.path.join(tmp, f"strace-{k}"), "-p",
                                        str(pids[k])], stderr=subprocess.DEVNULL))
        await asyncio.sleep(1.0)
    perf = None
    if "--perf" in sys.argv:
        out = sys.argv[sys.argv.index("--perf") + 1]
        perf = subprocess.Popen(["perf", "sched", "record", "-o", out, "-p", f"{pids['A']},{pids['B']}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1.0)
    before = {k: threads(p) for k, p in pids.items()}
    t0 = time.time()
    lat = [await one(1000 + i) for i in range(n)]
    wall = time.time() - t0
    after = {k: threads(p) for k, p in pids.items()}
    if perf:
        perf.send_signal(signal.SIGINT); perf.wait()
    for s in st:
        s.send_signal(signal.SIGINT); s.wait()
    et.cancel()
    lat.sort()
    print(f"n={n} wall={wall:.2f}s load={open('/proc/loadavg').read().split()[0]} "
          f"rtt p50={statistics.median(lat):.3f} p95={lat[int(.95*n)]:.3f} p99={lat[int(.99*n)]:.3f} ms")
    print(f"{'proc':6} {'thread':16} {'n':>3} {'vol/rt':>8} {'invol/rt':>9} {'cpu us/rt':>10}")
    for k in pids:
        for name, (c, v, nv, us) in sorted(delta(before[k], after[k], n).items()):
            if v + nv > 0.01 or us > 1:
                print(f"{k:6} {name:16} {c:3} {v:8.2f} {nv:9.2f} {us:10.1f}")
    if do_strace:
        for k in ("A", "B"):
            print(f"--- strace -f -c daemon {k} (per {n} round trips)")
            print(open(os.path.join(tmp, f"strace-{k}")).read())
    await a.close(); await b.close()
    for p, _ in procs:
        p.terminate(); p.wait()
    shutil.rmtree(tmp, ignore_errors=True)

asyncio.run(main())
