#!/usr/bin/env bash
# Measures what publishing to an SFU costs the device: the daemon's CPU (release build,
# 1280x720@30 test pattern + test tone, x264enc) with one local WHEP viewer, without and then
# with publishing over WHIP to Janus (in a network namespace, behind simple-whip-server), in
# one run; also prints start → first frame decoded by a Janus subscriber and the republish
# time after a Janus crash (tests/publish_janus.rs). Needs root (ip netns), janus
# (scripts/install-deps.sh --test) and scripts/setup-whip-server.sh.
#   scripts/measure-publish.sh [seconds=20]
set -euo pipefail
cd "$(dirname "$0")/.."
export MEASURE_SECONDS=${1:-20}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --quiet --bin camgate
bash scripts/setup-whip-server.sh
export CAMGATE_BIN="$target/release/camgate"
cargo test --locked --quiet --test publish_janus -- --ignored --nocapture measure_publish_cost 2>&1 \
  | grep MEASURE
cargo test --locked --quiet --test publish_janus -- --nocapture publishes_to_janus 2>&1 \
  | grep MEASURE
