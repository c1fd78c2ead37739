#!/usr/bin/env bash
# Builds and runs the peerixd benchmark; installs what the run needs (nats-server for the NATS
# figures, fonts-dejavu-core for the plots' text) when missing. Arguments go to peerix-bench,
# e.g. `bench/run.sh --quick` or `bench/run.sh --only throughput,rtt`.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nats-server >/dev/null || need+=(nats-server)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q && $SUDO apt-get install -y -q "${need[@]}"
fi
cargo build --release -p peerix-bench -p peerixd -p peerix-client
exec target/release/peerix-bench --json bench/results.json "$@"
