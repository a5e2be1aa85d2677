#!/usr/bin/env bash
# How long a viewer waits for its picture, in one run, for two camgate builds and an aiortc
# WHEP master: offer -> answer, offer -> connected (ICE + DTLS) and offer -> first decoded
# frame, median of N sequential viewers each (examples/first_frame.rs: the same webrtc-crate
# viewer, decoding with GStreamer, for all three).
#   scripts/measure-first-frame.sh OLD_BIN NEW_BIN [viewers=10] [gap_ms=1000]
# OLD_BIN and NEW_BIN are release builds of camgate (e.g. /work/before/camgate and
# target/release/camgate); either may be "-" to skip it. Both run in local mode on the default
# 1280x720@30 test pattern (x264enc), video only, bound to 127.0.0.1; the aiortc master
# (scripts/aiortc-whep.py, installed into a venv from PyPI on first use) sends a 1280x720@30
# pattern with its own libx264 encoder per viewer.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: $0 OLD_BIN NEW_BIN [viewers] [gap_ms]}; new=${2:?usage: $0 OLD_BIN NEW_BIN [viewers] [gap_ms]}
n=${3:-10}; gap=${4:-1000}; port=18190; aport=18191
target=${CARGO_TARGET_DIR:-target}
venv=${AIORTC_VENV:-$target/aiortc-venv}
cargo build --release --locked --quiet --example first_frame
viewer=$target/release/examples/first_frame

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import aiortc, aiohttp' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet aiortc aiohttp
fi

declare -A RESULT
wait_up() {
  for _ in $(seq 150); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "server on port $1 did not come up" >&2; return 1
}
run_viewers() { # name url
  local log=/tmp/first-frame-$1.log
  "$viewer" "$2" "$n" "$gap" | tee "$log" || true
  RESULT[$1]=$(grep '^median' "$log" || echo "median: failed")
}
camgate() { # name binary
  [ "$2" = "-" ] && return 0
  CAMGATE__WEBRTC__HOST_ADDRESSES=127.0.0.1 CAMGATE__AUDIO__SOURCE=none CAMGATE__AUDIO__TALKBACK=false \
    "$2" run --listen 127.0.0.1:$port >"/tmp/first-frame-$1-daemon.log" 2>&1 &
  srv=$!
  trap 'kill $srv 2>/dev/null || true' EXIT
  wait_up $port
  sleep 2 # the pipeline is playing and the encoder past its first frames
  echo "== camgate $1 ($2)"
  run_viewers "camgate-$1" "http://127.0.0.1:$port/whep"
  kill $srv 2>/dev/null || true; wait $srv 2>/dev/null || true
  trap - EXIT
}

camgate old "$old"
camgate new "$new"

"$venv/bin/python" scripts/aiortc-whep.py --listen 127.0.0.1:$aport >/tmp/first-frame-aiortc-server.log 2>&1 &
apid=$!
trap 'kill $apid 2>/dev/null || true' EXIT
wait_up $aport
echo "== aiortc $("$venv/bin/python" -c 'import aiortc; print(aiortc.__version__)')"
run_viewers aiortc "http://127.0.0.1:$aport/whep"
kill $apid 2>/dev/null || true; wait $apid 2>/dev/null || true
trap - EXIT

echo
echo "loopback, release builds, $(nproc) cores, $n sequential viewers ${gap} ms apart, medians:"
for name in camgate-old camgate-new aiortc; do
  [ -n "${RESULT[$name]:-}" ] && printf '%-12s %s\n' "$name" "${RESULT[$name]#median of }"
done
exit 0
