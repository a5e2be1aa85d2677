#!/usr/bin/env bash
# Sets up camgate on a fresh Debian 12 / Ubuntu machine and runs it on its built-in defaults:
# local mode, moving test pattern, viewer page at the URL it prints. Extra arguments go to
# `camgate run` (e.g. --config config/camgate.toml, --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked
exec ./target/release/camgate run "$@"
