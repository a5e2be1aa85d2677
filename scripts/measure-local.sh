#!/usr/bin/env bash
# Measures the daemon in local mode (release build): RSS with 0 and with N viewers, and CPU
# with N viewers of the default 1280x720@30 test pattern, twice in one run:
#   video  audio.source = "none", viewers offer video only (the baseline)
#   audio  audio.source = "test" (Opus-encoded tone), viewers offer Opus + video
# so the cost of audio (one Opus encoder + fan-out to N viewers) shows next to video's.
# Viewers come from examples/whep_load.rs (receive-only, no decoding, so the CPU goes to the
# daemon).
#   scripts/measure-local.sh [viewers=10] [seconds=20]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}; secs=${2:-20}; port=18090
cargo build --release --locked --quiet --bin camgate --example whep_load

hz=$(getconf CLK_TCK)
declare -A CPU0 CPUN RSS0 RSSN

measure() {
  local name=$1 audio_source=$2 load_flags=$3
  CAMGATE__WEBRTC__HOST_ADDRESSES=127.0.0.1 CAMGATE__WEBRTC__MAX_VIEWERS=$((n + 1)) \
    CAMGATE__AUDIO__SOURCE=$audio_source CAMGATE__AUDIO__TALKBACK=false \
    ./target/release/camgate run --listen 127.0.0.1:$port >"/tmp/camgate-measure-$name.log" 2>&1 &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 100); do curl -fs http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
  ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
  sleep 5
  RSS0[$name]=$(rss); local t0; t0=$(ticks)
  sleep 10
  CPU0[$name]=$(awk -v a="$t0" -v b="$(ticks)" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz / 10 * 100}')
  # shellcheck disable=SC2086
  ./target/release/examples/whep_load http://127.0.0.1:$port/whep "$n" "$((secs + 5))" $load_flags \
    >"/tmp/camgate-load-$name.log" 2>&1 &
  local load=$!
  for _ in $(seq 300); do grep -q READY "/tmp/camgate-load-$name.log" 2>/dev/null && break; sleep 0.1; done
  sleep 2
  local t1 t2; t1=$(ticks); sleep "$secs"; t2=$(ticks); RSSN[$name]=$(rss)
  wait $load || true
  CPUN[$name]=$(awk -v a="$t1" -v b="$t2" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.1f", (b - a) / hz / s * 100}')
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  trap - EXIT
}

measure video none ""
measure audio test "--audio"

echo "daemon, 1280x720@30 test pattern, x264enc, release build, $(nproc) cores, $n viewers"
for name in video audio; do
  echo "[$name] RSS 0 viewers: $((RSS0[$name] / 1024)) MiB, $n viewers: $((RSSN[$name] / 1024)) MiB"
  echo "[$name] CPU 0 viewers: ${CPU0[$name]} % of one core (capture + encode + packetize), $n viewers: ${CPUN[$name]} %"
  grep -E "viewer 0:|median" "/tmp/camgate-load-$name.log" || true
done
awk -v v0="${CPU0[video]}" -v a0="${CPU0[audio]}" -v vn="${CPUN[video]}" -v an="${CPUN[audio]}" -v n="$n" 'BEGIN {
  printf "audio adds %.1f %% of a core with 0 viewers (Opus encode of the test tone) and %.1f %% with %d viewers (encode + fan-out); with %d viewers audio+video costs %.2fx video alone\n", a0 - v0, an - vn, n, n, (vn > 0 ? an / vn : 0)
}'
