#!/usr/bin/env bash
# Measures the daemon in local mode (release build): RSS with 0 and with N viewers, and CPU
# with N viewers of the default 1280x720@30 test pattern; viewers come from
# examples/whep_load.rs (receive-only, no decoding, so the CPU goes to the daemon).
#   scripts/measure-local.sh [viewers=10] [seconds=20]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}; secs=${2:-20}; port=18090
cargo build --release --locked --quiet --bin camgate --example whep_load

CAMGATE__WEBRTC__HOST_ADDRESSES=127.0.0.1 CAMGATE__WEBRTC__MAX_VIEWERS=$((n + 1)) \
  ./target/release/camgate run --listen 127.0.0.1:$port >/tmp/camgate-measure.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
hz=$(getconf CLK_TCK)

sleep 5
rss0=$(rss); t0=$(ticks)
sleep 10
cpu0=$(awk -v a="$t0" -v b="$(ticks)" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz / 10 * 100}')

./target/release/examples/whep_load http://127.0.0.1:$port/whep "$n" "$((secs + 5))" >/tmp/camgate-load.log 2>&1 &
load=$!
for _ in $(seq 300); do grep -q READY /tmp/camgate-load.log 2>/dev/null && break; sleep 0.1; done
sleep 2
t1=$(ticks); sleep "$secs"; t2=$(ticks); rss1=$(rss)
wait $load || true

echo "daemon, 1280x720@30 test pattern, x264enc, release build, $(nproc) cores"
echo "RSS with 0 viewers:  $((rss0 / 1024)) MiB"
echo "RSS with $n viewers: $((rss1 / 1024)) MiB"
echo "CPU with 0 viewers:  ${cpu0} % of one core (capture + encode + packetize)"
awk -v a="$t1" -v b="$t2" -v hz="$hz" -v s="$secs" -v n="$n" 'BEGIN {printf "CPU with %d viewers: %.1f %% of one core\n", n, (b - a) / hz / s * 100}'
grep -E "viewer 0:|median" /tmp/camgate-load.log || true
