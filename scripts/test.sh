#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian 12 / Ubuntu machine and runs them all.
#   scripts/test.sh            install system packages (apt, needs root or sudo), Node deps, run tests
#   SKIP_APT=1 scripts/test.sh the same without the apt step
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_APT:-0}" != 1 ]; then
  bash scripts/install-deps.sh --test
fi
# playwright-core drives Debian's /usr/bin/chromium; it never downloads a browser.
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
# tests/publish_janus.rs: simple-whip-server and its npm dependencies (a no-op when present).
bash scripts/setup-whip-server.sh

# The property tests' case count: a brief run by default, more with PROPTEST_CASES=10000.
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
cargo test --workspace --all-targets --locked
