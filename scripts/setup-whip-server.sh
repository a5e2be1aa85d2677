#!/usr/bin/env bash
# Installs meetecho's simple-whip-server (the WHIP front of Janus) for tests/publish_janus.rs:
# the Debian package's JavaScript, unpacked (its Debian dependencies clash with the Node.js
# the tests use for Chromium), and its few npm dependencies next to it.
#   setup-whip-server.sh [DIR]    default: $CAMGATE_WHIP_SERVER_DIR or ~/.cache/camgate-test/simple-whip-server
# (where tests/support/janus.rs looks). Needs no root: apt-get download and npm only.
# Safe to run again: does nothing when DIR is complete.
set -euo pipefail

dir="${1:-${CAMGATE_WHIP_SERVER_DIR:-$HOME/.cache/camgate-test/simple-whip-server}}"
if [ -f "$dir/src/server.js" ] && [ -d "$dir/node_modules/express" ] && [ -d "$dir/node_modules/websocket" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm not found: scripts/install-deps.sh --test" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt-get download writes to the current directory; _apt needs to be able to write there.
chmod 777 "$work"
(cd "$work" && apt-get download -q simple-whip-server)
dpkg-deb -x "$work"/simple-whip-server_*.deb "$work/x"

mkdir -p "$dir"
cp -r "$work/x/usr/share/simple-whip-server/." "$dir/"
# src/config.js is a link to /etc/simple-whip-server/config.js; each test writes its own.
rm -f "$dir/src/config.js"
# The dependencies the server requires (src/server.js, src/whip-janus.js), pinned to the
# majors the packaged code was written for.
cd "$dir"
[ -f package.json ] || echo '{"name":"camgate-test-whip-server","private":true}' > package.json
npm install --no-audit --no-fund --loglevel=error \
  express@4 cors@2 body-parser@1 colors@1.4.0 debug@4 async@3 websocket@1
echo "simple-whip-server ready in $dir"
