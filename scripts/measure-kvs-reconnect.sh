#!/usr/bin/env bash
# KVS master reconnects over 50 faults of mixed kinds (GO_AWAY, RECONNECT_ICE_SERVER, TCP drop,
# 1011 close), against the KVS emulator, for two camgate builds side by side:
#   scripts/measure-kvs-reconnect.sh /path/to/old/camgate [/path/to/new/camgate]
# The second defaults to this tree's release build. KVS_FAULT_SPACING_MS (default 3000) is the
# quiet time between the master being back and the next fault.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: scripts/measure-kvs-reconnect.sh OLD_CAMGATE [NEW_CAMGATE]}
[ -n "${2:-}" ] || cargo build --release --bin camgate
new=${2:-$PWD/target/release/camgate}
for bin in "$old" "$new"; do
  echo "binary $bin"
  CAMGATE_BIN=$bin cargo test --test kvs_faults -- \
    --ignored --exact measure_reconnects_over_fifty_mixed_faults --nocapture --test-threads 1 2>&1 |
    grep -o 'MEASURE.*'
done
