#!/usr/bin/env bash
# Soak run (issue 10; not part of the default CI run): release builds of the daemon, then
#  1. tests/tests/soak.rs: SOAK_CYCLES (10,000) join/leave cycles with an acked message each and
#     SOAK_CHURNS (1,000) client churns against one daemon, printing its RSS/fds/threads;
#  2. every fuzz target of peerix-wire and peerix-ipc-proto for FUZZ_SECS (60) seconds each
#     (cargo-fuzz is installed if missing; see FUZZING.md).
# Usage: scripts/soak.sh [--no-fuzz | --fuzz-only]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nats-server >/dev/null || { echo "soak: nats-server is needed (apt install nats-server)" >&2; exit 1; }

if [ "${1:-}" != "--fuzz-only" ]; then
  cargo build --release -p peerixd -p peerix-client
  PEERIX_BIN_DIR="$PWD/target/release" cargo test --release -p peerix-system-tests --test soak -- \
    --ignored --nocapture
fi

[ "${1:-}" = "--no-fuzz" ] && exit 0
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
secs="${FUZZ_SECS:-60}"
export RUSTC_BOOTSTRAP=1
run_fuzz() { # dir target-dir targets...
  local dir=$1 tgt=$2; shift 2
  (cd "$dir" && for t in "$@"; do
    mkdir -p "corpus/$t"
    CARGO_TARGET_DIR="$tgt" cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -print_final_stats=1 2>&1 |
      grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==[0-9]+==ERROR)|SUMMARY" |
      sed "s/^/fuzz $t: /"
  done)
}
run_fuzz daemon/wire/fuzz "$PWD/target/fuzz-wire" packet_open control_decode frame_decode reassembler_feed
run_fuzz ipc-proto/fuzz "$PWD/target/fuzz-ipc" frame_decoder decode_daemon
