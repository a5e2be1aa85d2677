#!/usr/bin/env bash
# The attacks of issue #10 (cancelled offers, slow headers, candidate floods, /stats ids)
# against two camgate builds side by side, each with its defaults:
#   scripts/measure-attacks.sh /path/to/old/camgate [/path/to/new/camgate]
# The second defaults to this tree's release build. Prints one block per binary.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: scripts/measure-attacks.sh OLD_CAMGATE [NEW_CAMGATE]}
cargo build --release --bin camgate
new=${2:-$PWD/target/release/camgate}
for bin in "$old" "$new"; do
  CAMGATE_BIN=$bin cargo test --release --test local_security -- \
    --ignored --exact measure_attacks --nocapture --test-threads 1 2>&1 |
    grep -E '^(binary|cancelled|slow|trickle|anonymous)'
done
