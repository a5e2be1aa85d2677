#!/usr/bin/env bash
# Passthrough first frame with the GOP cache, before vs after, in one run.
#
# An in-process RTSP camera (gst-rtsp-server, 320x240@30, x264 with an IDR every 4 s) is
# passed through the daemon in local mode; 8 viewers join one after the other at 0.5, 1.5,
# 2.5 and 3.5 s into the GOP and the time from the WHEP offer to their first decoded frame is
# printed (tests/gop_cache.rs `measure_passthrough_first_frame`).
#
#   scripts/measure-gop.sh BEFORE_BIN [AFTER_BIN]
#
# BEFORE_BIN is a camgate binary without the cache (e.g. a release build of main), or `off`:
# AFTER_BIN itself with webrtc.gop_cache_kb = 0. AFTER_BIN defaults to this tree's release
# build. With `--browser`, instead measures how Chromium plays
# a viewer joining mid-GOP with AFTER_BIN (tests/browser/gop-playout.mjs; needs
# `npm ci --prefix tests/browser` and /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
browser=false
if [[ ${1:-} == --browser ]]; then browser=true; shift; fi
before=${1:?usage: scripts/measure-gop.sh [--browser] BEFORE_BIN [AFTER_BIN]}
after=${2:-}
if [[ -z $after ]]; then
  cargo build --release --locked --quiet --bin camgate
  after=${CARGO_TARGET_DIR:-target}/release/camgate
fi
cargo test --locked --quiet --test gop_cache --no-run

run() {
  CAMGATE_BIN=$2 cargo test --locked --quiet --test gop_cache "$3" -- --ignored --nocapture \
    2>/dev/null | grep -E '^(RESULT|run:)' | sed "s/^/$1 /"
}

if $browser; then
  run after "$after" measure_browser_playout
else
  if [[ $before == off ]]; then
    CAMGATE_MEASURE_GOP_CACHE_KB=0 run cache-off "$after" measure_passthrough_first_frame
  else
    run before "$before" measure_passthrough_first_frame
  fi
  run after "$after" measure_passthrough_first_frame
fi
