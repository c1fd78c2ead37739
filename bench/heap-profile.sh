#!/usr/bin/env bash
# Heap profile or RSS of one daemon with 32 connected peers and 32 empty rooms (BENCHMARKS.md,
# issue 9). Usage: bench/heap-profile.sh BIN_DIR [heaptrack|plain] [OUT]
#   BIN_DIR holds peerixd and peerix; for heaptrack build them without mimalloc:
#   cargo build --release -p peerixd -p peerix-client --features peerixd/system-allocator
# Prints the daemon's RSS (KiB) at start, with 32 peers and with 32 more empty rooms; with
# heaptrack writes OUT.zst (read with heaptrack_print).
set -euo pipefail
B=$1; MODE=${2:-plain}; OUT=${3:-/tmp/peerixd-heap}
D=$(mktemp -d)
trap 'pkill -f "$D/" 2>/dev/null || true; rm -rf "$D"' EXIT
for i in 0 1 2 3 4 5 6 7; do
  "$B/peerixd" --socket "$D/p$i.sock" --local-dir "$D/local" --no-system-config 2>"$D/p$i.log" &
done
if [ "$MODE" = heaptrack ]; then
  heaptrack -o "$OUT" "$B/peerixd" --socket "$D/r0.sock" --local-dir "$D/local" --no-system-config \
    2>"$D/r0.log" >/dev/null &
else
  "$B/peerixd" --socket "$D/r0.sock" --local-dir "$D/local" --no-system-config 2>"$D/r0.log" &
fi
sleep 3
P=$(pgrep -f "$D/r0.sock" | while read -r p; do
  [ "$(readlink "/proc/$p/exe")" = "$(readlink -f "$B/peerixd")" ] && echo "$p"; done)
rss() { awk '/VmRSS/{print $2}' "/proc/$P/status"; }
echo "rss at start: $(rss)"
for k in $(seq 1 32); do
  "$B/peerix" --socket "$D/p$((k % 8)).sock" join "rss-$k" >/dev/null
  "$B/peerix" --socket "$D/r0.sock" join "rss-$k" >/dev/null
  sleep 0.3
done
sleep 4
echo "rss with 32 peers: $(rss)"
for k in $(seq 1 32); do "$B/peerix" --socket "$D/r0.sock" join "empty-$k" >/dev/null; done
sleep 2
echo "rss with 32 more empty rooms: $(rss)"
kill -TERM "$P"; sleep 3
