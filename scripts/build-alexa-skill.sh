#!/usr/bin/env bash
# Builds the Alexa skill Lambda (crate crates/alexa-skill, binary camgate-alexa-skill) into a
# deployment zip for the AWS Lambda `provided.al2023` runtime.
#
#   scripts/build-alexa-skill.sh [--target x86_64|aarch64] [-h|--help]
#
#   --target x86_64   (default; also: amd64, x86-64) -> target/lambda/camgate-alexa-skill.zip
#   --target aarch64  (also: arm64)                  -> target/lambda/camgate-alexa-skill-arm64.zip
#                     needs the aarch64-unknown-linux-gnu Rust standard library
#                     (`rustup target add aarch64-unknown-linux-gnu`)
#
# The zip holds one file, `bootstrap` (mode 0755), at its root: upload it with the matching
# architecture (x86_64 / arm64) and runtime provided.al2023, handler name irrelevant.
#
# Why zig: al2023 ships glibc 2.34, older than the build machine's (Debian 12: 2.36), and a binary
# linked against a newer glibc fails to start there. cargo-zigbuild links with `zig cc` against
# glibc 2.34 stubs (target suffix `.2.34`), so the result runs on 2.34 and anything newer. The
# script then checks the binary with scripts/check-glibc.sh (objdump -T) and fails if any symbol
# needs GLIBC_2.35 or newer.
#
# Tools (installed on first run, reused afterwards; the script is safe to run again):
#   - cargo-zigbuild from crates.io (`cargo install --locked`) unless already on PATH;
#   - zig from the PyPI package `ziglang`, pip-installed with `--target` into
#     $CARGO_TARGET_DIR/tools/ (no venv, no system site-packages: works as root and as a normal user,
#     and Debian's PEP 668 "externally-managed" guard does not apply to --target installs).
# Debian 12 packages needed: build-essential (host cc for build scripts and for building
# cargo-zigbuild), python3-pip, binutils (objdump; part of build-essential), ca-certificates;
# `zip` is optional (python3's zipfile is used without it).
#
# Environment:
#   CARGO_TARGET_DIR        build dir (default: target/alexa-skill, apart from the workspace's
#                           target/ so this build never waits on, or invalidates, other builds)
#   ZIGLANG_VERSION         PyPI ziglang version (default 0.15.2)
#   CARGO_ZIGBUILD_VERSION  cargo-zigbuild version to install when missing (default 0.24.1;
#                           empty = latest)
#   PYTHON                  python interpreter with pip (default: python3)
set -euo pipefail

ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.15.2}
CARGO_ZIGBUILD_VERSION=${CARGO_ZIGBUILD_VERSION-0.24.1}
PYTHON=${PYTHON:-python3}
GLIBC_MAX=2.34 # glibc of the provided.al2023 runtime
PACKAGE=camgate-alexa-skill

usage() { sed -n '2,37s/^# \{0,1\}//p' "$0"; }
die() {
  echo "build-alexa-skill: error: $*" >&2
  exit 1
}
log() { echo "==> $*"; }

# --- arguments ----------------------------------------------------------------------------------
arch=x86_64
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --target) [ $# -ge 2 ] || die "--target needs a value (x86_64 or aarch64)"; arch=$2; shift 2 ;;
    --target=*) arch=${1#--target=}; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$arch" in
  x86_64 | x86-64 | amd64) arch=x86_64; zip_name=$PACKAGE.zip ;;
  aarch64 | arm64) arch=aarch64; zip_name=$PACKAGE-arm64.zip ;;
  *) die "unsupported --target '$arch' (use x86_64 or aarch64)" ;;
esac
rust_target=$arch-unknown-linux-gnu

# --- paths --------------------------------------------------------------------------------------
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" # so rustup picks the workspace's toolchain, and relative paths below are the repo's
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/alexa-skill}
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR=$root/$CARGO_TARGET_DIR ;; esac
lambda_dir=$root/target/lambda
zip_path=$lambda_dir/$zip_name
start=$SECONDS

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Debian: apt-get install python3-pip)"

# --- 1. the target's Rust standard library ------------------------------------------------------
# zig provides the C side (glibc stubs, crt files, linker) but not Rust's std for the target.
# Ask the rustc that cargo will use where the target's libraries live, and look for std there.
rustc_bin=${RUSTC:-rustc}
libdir=$("$rustc_bin" --print target-libdir --target "$rust_target" 2>/dev/null || true)
if ! compgen -G "$libdir/libstd-*.rlib" >/dev/null; then
  installed=""
  command -v rustup >/dev/null 2>&1 && installed=$(rustup target list --installed 2>/dev/null | paste -sd ' ' -)
  die "the Rust standard library for $rust_target is not installed
  (sysroot: $("$rustc_bin" --print sysroot 2>/dev/null)${installed:+; installed targets: $installed}).
  Install it with:  rustup target add $rust_target
  (rustup downloads it from the Rust project's servers), then run this script again."
fi

# --- 2. cargo-zigbuild (crates.io) ---------------------------------------------------------------
cargo_bin_dir=${CARGO_HOME:-$HOME/.cargo}/bin
case ":$PATH:" in *":$cargo_bin_dir:"*) ;; *) PATH=$cargo_bin_dir:$PATH ;; esac
if ! command -v cargo-zigbuild >/dev/null 2>&1; then
  log "installing cargo-zigbuild ${CARGO_ZIGBUILD_VERSION:-(latest)} from crates.io"
  # Built in cargo's own temporary dir (not this build's target dir), installed to $cargo_bin_dir.
  env -u CARGO_TARGET_DIR cargo install --locked cargo-zigbuild \
    ${CARGO_ZIGBUILD_VERSION:+--version "$CARGO_ZIGBUILD_VERSION"}
fi
log "$(cargo-zigbuild --version)"

# --- 3. zig (PyPI package ziglang) -------------------------------------------------------------
# Installed per version under the build dir; reused when the right version is already there.
zig_home=$CARGO_TARGET_DIR/tools/ziglang-$ZIGLANG_VERSION
zig_bin=$zig_home/ziglang/zig
if [ ! -x "$zig_bin" ] || [ "$("$zig_bin" version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
  log "installing zig $ZIGLANG_VERSION (PyPI: ziglang) into $zig_home"
  "$PYTHON" -m pip --version >/dev/null 2>&1 ||
    die "$PYTHON has no pip (Debian: apt-get install python3-pip)"
  rm -rf "$zig_home.tmp"
  PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location --no-deps --target "$zig_home.tmp" "ziglang==$ZIGLANG_VERSION"
  rm -rf "$zig_home"
  mv "$zig_home.tmp" "$zig_home"
  [ -x "$zig_bin" ] || die "ziglang $ZIGLANG_VERSION installed but $zig_bin is missing"
fi
log "zig $("$zig_bin" version) ($zig_bin)"
# cargo-zigbuild tries `python3 -m ziglang` before `zig`; a ziglang of another version in the user's
# Python would win. Point its Python probe at `false` (the probe then fails) and its zig at ours.
export CARGO_ZIGBUILD_PYTHON_PATH
CARGO_ZIGBUILD_PYTHON_PATH=$(command -v false)
export CARGO_ZIGBUILD_ZIG_PATH=$zig_bin

# --- 4. build -----------------------------------------------------------------------------------
# Release profile without debug info and with symbols stripped, only for this build (the
# workspace's release profile keeps line tables); small binary, small zip, faster cold start.
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_RELEASE_STRIP=symbols
log "cargo zigbuild --release --locked -p $PACKAGE --target $rust_target.$GLIBC_MAX (target dir $CARGO_TARGET_DIR)"
cargo zigbuild --release --locked -p "$PACKAGE" --target "$rust_target.$GLIBC_MAX"
# cargo-zigbuild drops the glibc suffix from the output directory name.
binary=$CARGO_TARGET_DIR/$rust_target/release/$PACKAGE
[ -x "$binary" ] || die "build finished but $binary is missing"

# --- 5. glibc check -----------------------------------------------------------------------------
log "checking glibc symbol versions (limit $GLIBC_MAX)"
"$root/scripts/check-glibc.sh" "$binary" "$GLIBC_MAX" ||
  die "$binary would not start on the provided.al2023 runtime (glibc $GLIBC_MAX); see above"

# Smoke test when the binary is for this machine: it must at least start.
if [ "$(uname -m)" = "$arch" ]; then
  log "smoke test: $("$binary" --version)"
fi

# --- 6. zip -------------------------------------------------------------------------------------
# Staged copy named `bootstrap`, zipped at the archive root with mode 0755. The zip is written next
# to its final name and moved into place, so a failed run never leaves a half-written zip.
stage=$CARGO_TARGET_DIR/lambda-stage/$arch
rm -rf "$stage"
mkdir -p "$stage" "$lambda_dir"
install -m 0755 "$binary" "$stage/bootstrap"
rm -f "$zip_path.tmp"
if command -v zip >/dev/null 2>&1; then
  (cd "$stage" && zip -q -X -9 "$zip_path.tmp" bootstrap) # Info-ZIP keeps the Unix mode bits
else
  "$PYTHON" - "$stage/bootstrap" "$zip_path.tmp" <<'EOF'
import sys, time, zipfile
src, dst = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=time.localtime()[:6])
info.create_system = 3                      # Unix, so external_attr holds a mode
info.external_attr = (0o100755 << 16)       # regular file, rwxr-xr-x
info.compress_type = zipfile.ZIP_DEFLATED
with open(src, "rb") as f, zipfile.ZipFile(dst, "w") as z:
    z.writestr(info, f.read(), compresslevel=9)
EOF
fi
# Check what Lambda will see: exactly one entry, `bootstrap`, executable.
"$PYTHON" - "$zip_path.tmp" <<'EOF' || die "zip check failed"
import stat, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
assert names == ["bootstrap"], f"unexpected zip entries: {names}"
mode = z.getinfo("bootstrap").external_attr >> 16
assert stat.S_IMODE(mode) == 0o755 and stat.S_ISREG(mode), f"bootstrap mode is {oct(mode)}"
EOF
mv -f "$zip_path.tmp" "$zip_path"

size=$(stat -c %s "$zip_path")
log "done in $((SECONDS - start)) s"
echo "zip:  $zip_path"
echo "size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f MiB", s / 1048576 }')); bootstrap $(stat -c %s "$binary") bytes"
echo "arch: $arch (Lambda architecture $([ "$arch" = aarch64 ] && echo arm64 || echo x86_64)), runtime provided.al2023"
