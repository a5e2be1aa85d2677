#!/usr/bin/env bash
# Installs the system packages camgate needs on Debian 12 / Ubuntu 22.04+.
#   install-deps.sh          build + run (GStreamer dev libs and plugins)
#   install-deps.sh --test   also what the test suite needs (RTSP server lib, Chromium, Node,
#                            coturn as a loopback TURN server, Prometheus and python3-venv
#                            for the /metrics consumers), CI's Lambda zip build
#                            (pip, for zig from PyPI: scripts/build-alexa-skill.sh), and the
#                            Debian package's build and test (dpkg-dev, lintian, systemd-analyze,
#                            man; scripts/test-deb.sh) and cross-build (debootstrap, the arm64
#                            cross compiler; scripts/build-deb.sh --target ...), and Janus, the
#                            SFU tests/publish_janus.rs publishes to (its WHIP front,
#                            simple-whip-server, is set up by scripts/setup-whip-server.sh,
#                            which scripts/test.sh runs)
# Runs apt-get as root (or through sudo). Safe to run again.
set -euo pipefail

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

pkgs=(
  build-essential pkg-config curl ca-certificates
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-x
  gstreamer1.0-alsa gstreamer1.0-pulseaudio
)
if [ "$want_test" = 1 ]; then
  pkgs+=(gstreamer1.0-rtsp libgstrtspserver-1.0-dev chromium iproute2 procps coturn
    python3-pip prometheus python3-venv)
  # openh264enc (in gstreamer1.0-plugins-bad) needs this library; named so that
  # tests/media_capture.rs's openh264 test has what it needs spelled out.
  pkgs+=(libopenh264-7)
  # The .deb: build (dpkg-dev, binutils' strip), lint, install (adduser for the postinst), check
  # (systemd-analyze from systemd, man from man-db). Cross-build: debootstrap and the archive
  # keyring for the sysroots, Debian's cross compilers (they bring their binutils).
  pkgs+=(dpkg-dev binutils lintian adduser systemd man-db debootstrap debian-archive-keyring
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf)
  # Tests start their own turnserver on 127.0.0.1 (tests/support/turn.rs). Debian enables a
  # system-wide one on 0.0.0.0:3478 when coturn is installed; keep it off unless it was here.
  dpkg -s coturn >/dev/null 2>&1 || new_coturn=1
  # The same for Prometheus: tests/metrics.rs runs its own on a loopback port, and Debian's
  # package enables a system-wide one on :9090.
  dpkg -s prometheus >/dev/null 2>&1 || new_prometheus=1
  # The WHIP tests' SFU: tests/publish_janus.rs starts its own Janus in a network namespace.
  # Debian starts a system-wide one on :8088/:8188 when janus is installed; keep it off.
  pkgs+=(janus)
  dpkg -s janus >/dev/null 2>&1 || new_janus=1
  # Node is only needed to drive Chromium with playwright-core; keep the one the machine has.
  command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
fi

$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}"

if [ "${new_coturn:-0}" = 1 ] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now coturn.service || true
fi
if [ "${new_prometheus:-0}" = 1 ] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus.service || true
fi
if [ "${new_janus:-0}" = 1 ] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now janus.service || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust 1.94.1 or newer (https://rustup.rs), then run this again" >&2
  exit 1
fi
