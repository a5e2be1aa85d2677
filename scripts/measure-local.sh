#!/usr/bin/env bash
# Measures the daemon in local mode (release build): RSS with 0 and with N viewers, and CPU
# with 0 and with N viewers of the default 1280x720@30 test pattern, in two modes:
#   video  audio.source = "none", viewers offer video only (the baseline)
#   audio  audio.source = "test" (Opus-encoded tone), viewers offer Opus + video
# so the cost of audio (one Opus encoder + fan-out to N viewers) shows next to video's, and
# the cost of one viewer is (CPU with N - CPU with 0) / N.
# Viewers come from examples/whep_load.rs (receive-only, no decoding, so the CPU goes to the
# daemon).
#   scripts/measure-local.sh [viewers=10] [seconds=20]
# Comparing daemons in one run (the machine's load changes; interleaving spreads it evenly):
#   BINS="old=/path/to/camgate new=/path/to/other/camgate" ROUNDS=2 MODES=video \
#     scripts/measure-local.sh 10 20
# measures old, new, old, new, ... and prints every run. Without BINS it builds and measures
# this checkout's release build. The load generator is this checkout's whep_load for every
# daemon (LOAD_BIN overrides), so only the daemon differs.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}; secs=${2:-20}; port=18090
rounds=${ROUNDS:-1}; modes=${MODES:-"video audio"}
target=${CARGO_TARGET_DIR:-target}
if [[ -z ${BINS:-} || -z ${LOAD_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin camgate --example whep_load
fi
bins=${BINS:-"this=$target/release/camgate"}
load_bin=${LOAD_BIN:-$target/release/examples/whep_load}

hz=$(getconf CLK_TCK)
declare -A CPU0 CPUN RSS0 RSSN GOT

# measure KEY BINARY MODE
measure() {
  local key=$1 bin=$2 mode=$3 audio_source=none load_flags=""
  if [[ $mode == audio ]]; then audio_source="test"; load_flags="--audio"; fi
  # whep_load offers all its viewers at once from one address: no offer rate limit, and room
  # for all of them pending at once (else 429s, or the oldest pending ones dropped, would
  # make the per-viewer figure wrong).
  CAMGATE__WEBRTC__HOST_ADDRESSES=127.0.0.1 CAMGATE__WEBRTC__MAX_VIEWERS=$((n + 1)) \
    CAMGATE__WEBRTC__MAX_PENDING=$((n < 100 ? n + 1 : 100)) \
    CAMGATE__HTTP__OFFERS_PER_IP_PER_S=0 CAMGATE__AUDIO__SOURCE=$audio_source CAMGATE__AUDIO__TALKBACK=false \
    "$bin" run --listen 127.0.0.1:$port >"/tmp/camgate-measure-$key.log" 2>&1 &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 100); do curl -fs http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
  ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
  sleep 5
  RSS0[$key]=$(rss); local t0; t0=$(ticks)
  sleep 10
  CPU0[$key]=$(awk -v a="$t0" -v b="$(ticks)" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz / 10 * 100}')
  # shellcheck disable=SC2086
  "$load_bin" http://127.0.0.1:$port/whep "$n" "$((secs + 5))" $load_flags \
    >"/tmp/camgate-load-$key.log" 2>&1 &
  local load=$!
  for _ in $(seq 300); do grep -q READY "/tmp/camgate-load-$key.log" 2>/dev/null && break; sleep 0.1; done
  sleep 2
  local t1 t2; t1=$(ticks); sleep "$secs"; t2=$(ticks); RSSN[$key]=$(rss)
  wait $load || true
  CPUN[$key]=$(awk -v a="$t1" -v b="$t2" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.1f", (b - a) / hz / s * 100}')
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  trap - EXIT
  # Viewers that received media (a refused or failed one would skew the per-viewer figure).
  GOT[$key]=$(awk '/^viewer [0-9]+:/ && $3 > 0 {c++} END {print c + 0}' "/tmp/camgate-load-$key.log")
  if [[ ${GOT[$key]} -ne $n ]]; then echo "WARNING: $key: only ${GOT[$key]} of $n viewers got media"; fi
  local per
  per=$(awk -v a="${CPU0[$key]}" -v b="${CPUN[$key]}" -v n="${GOT[$key]}" 'BEGIN {printf "%.2f", n ? (b - a) / n : 0}')
  echo "$key: RSS 0 viewers $((RSS0[$key] / 1024)) MiB, $n viewers $((RSSN[$key] / 1024)) MiB;" \
    "CPU 0 viewers ${CPU0[$key]} %, $n viewers ${CPUN[$key]} % of one core; per viewer $per %"
  grep -E "viewer 0:|median" "/tmp/camgate-load-$key.log" || true
}

echo "daemon, 1280x720@30 test pattern, x264enc, release build, $(nproc) cores, $n viewers, ${secs} s"
declare -A SUM
for round in $(seq "$rounds"); do
  for mode in $modes; do
    for entry in $bins; do
      label=${entry%%=*}; bin=${entry#*=}
      measure "$label-$mode-$round" "$bin" "$mode"
      SUM[$label-$mode]=$(awk -v s="${SUM[$label-$mode]:-0}" -v a="${CPU0[$label-$mode-$round]}" \
        -v b="${CPUN[$label-$mode-$round]}" -v n="${GOT[$label-$mode-$round]}" 'BEGIN {print s + (n ? (b - a) / n : 0)}')
    done
  done
done
for mode in $modes; do
  for entry in $bins; do
    label=${entry%%=*}
    awk -v s="${SUM[$label-$mode]}" -v r="$rounds" -v l="$label" -v m="$mode" \
      'BEGIN {printf "[%s %s] mean CPU per viewer over %d rounds: %.2f %% of one core\n", l, m, r, s / r}'
  done
done
if [[ $modes == *video* && $modes == *audio* ]]; then
  for entry in $bins; do
    label=${entry%%=*}
    awk -v v0="${CPU0[$label-video-1]}" -v a0="${CPU0[$label-audio-1]}" -v vn="${CPUN[$label-video-1]}" \
      -v an="${CPUN[$label-audio-1]}" -v n="$n" -v l="$label" 'BEGIN {
      printf "[%s] audio adds %.1f %% of a core with 0 viewers (Opus encode of the test tone) and %.1f %% with %d viewers (encode + fan-out); with %d viewers audio+video costs %.2fx video alone\n", l, a0 - v0, an - vn, n, n, (vn > 0 ? an / vn : 0)
    }'
  done
fi
