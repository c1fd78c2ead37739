#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (nats-server, openssl for test certificates, the
# Python and Node client dependencies), builds every binary, then runs the Rust, Python and Node
# tests. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# Media tests (tests/tests/browser_media.rs) decode forwarded RTP with ffmpeg.
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
# Browser interop tests (tests/tests/browser_interop.rs) drive Debian's Chromium; never a downloaded one.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# The unit checks (tests/tests/units.rs): systemd-analyze verify/security, sysusers, tmpfiles.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# The network labs: tests/tests/netpaths*.rs (coturn for STUN/TURN, nftables for NAT and blocking)
# and tests/tests/lossy.rs (nftables loss and link cuts between namespaces), path_change*.rs (NAT rebinding).
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need_apt+=(nftables)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi

# Browser interop (tests/tests/browser_*.rs): playwright-core, esbuild and @nats-io/nats-core from
# the npm registry (no browser download); the page runs the real Peerix from ../shared/peerix-0.7.0.
(cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund)

# Layering is kept by the build: every crate declares only the dependencies it uses
# (cargo-machete fails on an unused one).
command -v cargo-machete >/dev/null 2>&1 || cargo install --locked cargo-machete
cargo machete --skip-target-dir

# The .deb test (tests/tests/install.rs) packs the built binaries with cargo-deb and installs the
# package into a scratch root. Pinned, without default features (no xz): ~3 CPU-minutes to build.
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb@3.8.0 --no-default-features
export PEERIX_REQUIRE_DEB=1

# The system tests start real daemons: build the binaries first.
# (with the daemon's fault injection, which only test builds carry; see daemon/Cargo.toml).
# Binaries and tests in one build: dev-dependencies change the features of shared crates, and a
# bins-only build would compile those crates a second time for the tests (~6 min on 2 cores).
cargo build --workspace --bins --tests --features peerixd/fault-injection
cargo test --workspace --no-fail-fast --features peerixd/fault-injection -- --test-threads=2

# The clients as their users install them: the Python package (editable, with its test and
# type-check extras) and the Node package (with its dev dependencies, for the type check).
python3 -m pip install -q -e "clients/python[test,typecheck]" >/dev/null
(cd clients/node && npm install --silent --no-audit --no-fund)
# Types are part of each package's API: mypy --strict on the Python package, tsc --strict on a
# usage file that must compile against index.d.ts (and misuse that must not).
(cd clients/python && python3 -m mypy)
(cd clients/node && npm run --silent typecheck)
# Python tests (including the three-language test, which also drives the Node client and the
# Rust CLI), then the Node tests.
(cd clients/python && python3 -m pytest -q)
(cd clients/node && node --test)
