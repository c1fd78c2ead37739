#!/usr/bin/env python3
"""Regenerates the committed seed corpora under fuzz/seeds/ from the hex
example frames in ../PROTOCOL.md.

frame_decoder  <- each client frame (hello/request) alone, all of them
                  concatenated, and the concatenation with split lengths;
                  prefixed with the target's control byte (see the target)
decode_daemon  <- payload (without the 4-byte length) of each daemon frame
"""
import hashlib, os, re, shutil

here = os.path.dirname(os.path.abspath(__file__))
doc = open(os.path.join(here, "..", "PROTOCOL.md")).read()
out = os.path.join(here, "seeds")
for t in ("frame_decoder", "decode_daemon"):
    shutil.rmtree(os.path.join(out, t), ignore_errors=True)
    os.makedirs(os.path.join(out, t))


def put(target, data):
    with open(os.path.join(out, target, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


frames = []
for block in re.findall(r"```text\n(.*?)```", doc, re.S):
    lines = block.strip().splitlines()
    if not lines or not all(re.fullmatch(r"([0-9a-f]{2} ?)+", l.strip()) for l in lines):
        continue
    data = bytes.fromhex(" ".join(lines))
    if int.from_bytes(data[:4], "big") != len(data) - 4:
        continue
    frames.append(data)

client = []
for f in frames:
    m = re.search(rb"\xa4type([\xa0-\xbf])", f)
    kind = f[m.end(): m.end() + (m.group(1)[0] & 0x1F)].decode() if m else ""
    if kind in ("hello", "request"):
        client.append(f)
        put("frame_decoder", b"\x00" + f)
    else:
        put("decode_daemon", f[4:])
stream = b"".join(client)
put("frame_decoder", b"\x00" + stream)
put("frame_decoder", b"\x03\x01\x07\x40" + stream)

for t in ("frame_decoder", "decode_daemon"):
    files = os.listdir(os.path.join(out, t))
    print(f"{t}: {len(files)} files, {sum(os.path.getsize(os.path.join(out, t, f)) for f in files)} bytes")
