#!/usr/bin/env python3
"""Regenerates the committed seed corpora under fuzz/seeds/ from the captured
Peerix sessions in shared/peerix-vectors (default: /work/shared/peerix-vectors).

    python3 seeds.py [VECTORS_DIR]

packet_open      <- nats_messages[].payload_b64
control_decode   <- datachannel_frames (control channel, label ""), non-truncated
frame_decode     <- datachannel_frames (user channels), non-truncated
reassembler_feed <- per sender and channel, the frames of <= 255 bytes in
                    order, each prefixed by its length byte (the target's format)
"""
import base64, glob, hashlib, json, os, shutil, sys

here = os.path.dirname(os.path.abspath(__file__))
vectors = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/peerix-vectors"
out = os.path.join(here, "seeds")
targets = ["packet_open", "control_decode", "frame_decode", "reassembler_feed"]
for t in targets:
    shutil.rmtree(os.path.join(out, t), ignore_errors=True)
    os.makedirs(os.path.join(out, t))


def put(target, data):
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


for path in sorted(glob.glob(os.path.join(vectors, "*.json"))):
    d = json.load(open(path))
    for m in d.get("nats_messages", []):
        put("packet_open", base64.b64decode(m["payload_b64"]))
    for sender, frames in d.get("datachannel_frames", {}).items():
        streams = {}
        for fr in frames:
            if fr.get("truncated") or fr.get("kind") != "binary":
                continue
            data = base64.b64decode(fr["data_b64"])
            if fr["label"] == "":
                put("control_decode", data)
            else:
                put("frame_decode", data)
                if len(data) <= 255:
                    streams.setdefault(fr["label"], bytearray()).extend(bytes([len(data)]) + data)
        for s in streams.values():
            put("reassembler_feed", bytes(s))

# The captured signal frames are all truncated (SDP > 4096 bytes), so add a
# few small, complete control messages of each shape (§6.2).
def varint(n):
    b = bytearray()
    while True:
        if n < 0x80:
            b.append(n)
            return bytes(b)
        b.append((n & 0x7F) | 0x80)
        n >>= 7


def control(event, js):
    js = js.encode()
    return b"\x08" + varint(event) + b"\x12" + varint(len(js)) + js


for js in [
    '[{"type":"offer","sdp":"v=0\\r\\no=- 1 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n"},["chat"]]',
    '[{"type":"answer","sdp":"v=0\\r\\n"}]',
    '[{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}]',
]:
    put("control_decode", control(1, js))
put("control_decode", control(2, '{"label":"chat","ordered":false,"maxRetransmits":3,"protocol":""}'))

for t in targets:
    files = os.listdir(os.path.join(out, t))
    size = sum(os.path.getsize(os.path.join(out, t, f)) for f in files)
    print(f"{t}: {len(files)} files, {size} bytes")
