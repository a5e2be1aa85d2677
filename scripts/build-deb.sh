#!/usr/bin/env bash
# Builds the camgate Debian package: target/debian/camgate_<version>_<arch>.deb.
#
#   scripts/build-deb.sh                          for this machine's architecture
#   scripts/build-deb.sh --target TRIPLE          cross-build from x86_64 for
#                                                 aarch64-unknown-linux-gnu (arm64) or
#                                                 armv7-unknown-linux-gnueabihf (armhf)
#   scripts/build-deb.sh --target TRIPLE --until-std
#                                                 cross: make (or reuse) the sysroot, check that
#                                                 pkg-config, the cross linker and dpkg-shlibdeps
#                                                 work inside it, then stop where the Rust standard
#                                                 library of TRIPLE is needed; exits 0 (CI's step)
#   --no-build                                    package the binary already built
#                                                 (target/[TRIPLE/]release/camgate)
#
# How the package is made (packaging/README.md says why): packaging/debian/ is a small debian/
# tree (control, changelog, copyright, conffiles, maintainer scripts, lintian overrides); this
# script stages the files, lets dpkg-shlibdeps compute the library dependencies and
# dpkg-gencontrol write DEBIAN/control, and builds the .deb with dpkg-deb (no root, no fakeroot).
#
# Cross builds use Debian's cross compiler (gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf) and a
# sysroot under target/sysroot/<arch>-<suite>/ holding the target's GStreamer -dev packages. The
# sysroot is made once from the packages debootstrap downloads (--download-only, so no qemu and
# no chroot: every .deb is unpacked with dpkg-deb, and a dpkg database is written next to them so
# that dpkg-shlibdeps can map the target's libraries to packages), and reused afterwards.
#
# Environment:
#   CAMGATE_DEBIAN_MIRROR   Debian mirror for the sysroot (default: this machine's apt source)
#   CAMGATE_DEBIAN_SUITE    Debian suite of the sysroot (default: bookworm)
#   CAMGATE_HOST_BIN        a camgate that runs here, for the man pages and completions of a
#                           cross build (default: target/release/camgate, built if missing)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; }

target=""
until_std=0
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=${2:?--target needs a triple}; shift 2 ;;
    --target=*) target=${1#--target=}; shift ;;
    --until-std) until_std=1; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-deb: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if [ "$until_std" = 1 ] && [ -z "$target" ]; then
  echo "build-deb: --until-std is for cross builds (--target TRIPLE)" >&2
  exit 2
fi

say() { printf 'build-deb: %s\n' "$*" >&2; }
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }

# Debian packages that provide a command, for the error message when it is missing.
need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found: apt-get install $pkg (or scripts/install-deps.sh --test)"
}
need cargo "Rust 1.94.1 or newer"
need dpkg-deb dpkg
need dpkg-gencontrol dpkg-dev
need dpkg-shlibdeps dpkg-dev
need dpkg-parsechangelog dpkg-dev
need gzip gzip

# --- What to build -----------------------------------------------------------------------------
deb_src=packaging/debian
version=$(dpkg-parsechangelog -l "$deb_src/changelog" -S Version)
cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
# A native package: the Debian version is the crate version (plus ~suffixes for rebuilds).
case "$version" in
  "$cargo_version"|"$cargo_version"[~+]*) ;;
  *) die "packaging/debian/changelog is at $version but Cargo.toml at $cargo_version: add a changelog entry (dch -v $cargo_version)" ;;
esac
# Reproducible: file dates in the .deb come from the changelog entry. Only dpkg-deb gets it:
# some crates' build scripts watch SOURCE_DATE_EPOCH, and cargo would rebuild them rather than
# share the developer's `cargo build --release`.
source_date=$(dpkg-parsechangelog -l "$deb_src/changelog" -S Timestamp)

if [ -z "$target" ]; then
  arch=$(dpkg --print-architecture)
  gnu=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
  strip="strip"
  bin=target/release/camgate
else
  case "$target" in
    aarch64-unknown-linux-gnu) arch=arm64; gnu=aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) arch=armhf; gnu=arm-linux-gnueabihf ;;
    *) die "unsupported target '$target': aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf" ;;
  esac
  need "$gnu-gcc" "gcc-$gnu"
  need debootstrap debootstrap
  need pkg-config pkg-config
  strip=$gnu-strip
  bin=target/$target/release/camgate
fi
out=target/debian/camgate_${version}_${arch}.deb

# --- Cross: the target sysroot ------------------------------------------------------------------
suite=${CAMGATE_DEBIAN_SUITE:-bookworm}
# What the build links against (gstreamer, -app, -video, -base, glib, gobject) and the C library.
sysroot_pkgs=libc6-dev,libgstreamer1.0-dev,libgstreamer-plugins-base1.0-dev

# The Debian mirror this machine's apt uses (deb822 or one-line format), unless given.
debian_mirror() {
  if [ -n "${CAMGATE_DEBIAN_MIRROR:-}" ]; then
    echo "$CAMGATE_DEBIAN_MIRROR"
    return
  fi
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/\{0,1\}$/\1/p' | head -n1)
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]].*/\2/p' \
          | head -n1)
  fi
  [ -n "$m" ] || die "no Debian mirror in /etc/apt/sources*: set CAMGATE_DEBIAN_MIRROR"
  echo "$m"
}

# Unpacks the downloaded packages into the sysroot (merged /usr, as debootstrap makes it for
# bookworm) and writes a dpkg database for them (status, file lists with the sysroot prefix,
# shlibs/symbols files), so that `dpkg-shlibdeps --admindir=<sysroot>/var/lib/dpkg` finds which
# package ships each target library and which version to depend on. No maintainer script runs.
unpack_sysroot() {
  local sysroot=$1 debs=$2 db=$1/var/lib/dpkg
  mkdir -p "$sysroot/usr/bin" "$sysroot/usr/sbin" "$sysroot/usr/lib"
  for d in bin sbin lib; do ln -sfn "usr/$d" "$sysroot/$d"; done
  rm -rf "$db"
  mkdir -p "$db/info" "$db/updates" "$db/triggers"
  : >"$db/status"
  : >"$db/available"
  echo 1 >"$db/info/format"        # multiarch-qualified info file names (pkg:arch.list)
  echo "$arch" >"$db/arch"
  local deb ctl pkg ma parch key tmp f
  for deb in "$debs"/*.deb; do
    ctl=$(dpkg-deb -f "$deb")
    pkg=$(sed -n 's/^Package: //p' <<<"$ctl")
    ma=$(sed -n 's/^Multi-Arch: //p' <<<"$ctl")
    parch=$(sed -n 's/^Architecture: //p' <<<"$ctl")
    key=$pkg
    [ "$ma" = same ] && key="$pkg:$parch"
    { printf '%s\n' "$ctl"; echo "Status: install ok installed"; echo; } >>"$db/status"
    # Unpack, listing what was unpacked. Paths under /lib, /bin, /sbin are also listed under
    # /usr, where the linker and dpkg-shlibdeps find them.
    dpkg-deb --fsys-tarfile "$deb" \
      | tar -C "$sysroot" -x -v --keep-directory-symlink \
          --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' \
          --exclude='./usr/share/locale/*' --exclude='./usr/share/info/*' \
      | sed -e 's#^\./#/#' -e 's#/$##' -e '/^$/d' \
      | sed -e 'p' -e 's#^/\(lib\|bin\|sbin\)\(/\|$\)#/usr/\1\2#' \
      | sed -e "s#^#$sysroot#" | sort -u >"$db/info/$key.list"
    tmp=$(mktemp -d)
    dpkg-deb --ctrl-tarfile "$deb" | tar -C "$tmp" -x --wildcards './shlibs' './symbols' 2>/dev/null || true
    for f in shlibs symbols; do
      if [ -f "$tmp/$f" ]; then cp "$tmp/$f" "$db/info/$key.$f"; fi
    done
    rm -rf "$tmp"
  done
}

# Makes target/sysroot/<arch>-<suite>/ unless a complete one is there (the stamp file names the
# package set it was made with, so changing sysroot_pkgs makes a new one).
make_sysroot() {
  local sysroot=$1 stamp=$1/.camgate-sysroot
  local want="$suite $arch $sysroot_pkgs"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "reusing the $arch sysroot $sysroot"
    return
  fi
  local mirror start debs
  mirror=$(debian_mirror)
  start=$(date +%s)
  say "making the $arch sysroot $sysroot from $suite ($mirror): downloading with debootstrap"
  rm -rf "$sysroot" "$sysroot.debs"
  debs=$sysroot.debs
  mkdir -p "$debs"
  # --download-only: resolve and fetch (and verify against the archive keyring) the minimal base
  # plus the -dev packages; nothing is run, so no qemu or chroot is needed.
  debootstrap --arch="$arch" --variant=minbase --download-only --include="$sysroot_pkgs" \
    "$suite" "$debs" "$mirror" >"$debs.log" 2>&1 \
    || die "debootstrap failed (last lines below; full log $debs.log)"$'\n'"$(tail -n 15 "$debs.log")"
  local fetched
  fetched=$(date +%s)
  say "downloaded $(find "$debs/var/cache/apt/archives" -name '*.deb' | wc -l) packages ($(du -sh "$debs" | cut -f1)) in $(( fetched - start )) s; unpacking"
  unpack_sysroot "$sysroot" "$debs/var/cache/apt/archives"
  rm -rf "$debs" "$debs.log"
  echo "$want" >"$stamp"
  say "sysroot ready in $(( $(date +%s) - start )) s (unpacked in $(( $(date +%s) - fetched )) s; $(du -sh "$sysroot" | cut -f1))"
}

# pkg-config for the target: only the sysroot's .pc files, paths prefixed with the sysroot.
use_sysroot_pkg_config() {
  local sysroot=$1
  export PKG_CONFIG_SYSROOT_DIR=$sysroot
  export PKG_CONFIG_LIBDIR=$sysroot/usr/lib/$gnu/pkgconfig:$sysroot/usr/share/pkgconfig
  export PKG_CONFIG_PATH=""
  export PKG_CONFIG_ALLOW_CROSS=1
}

# Proves the sysroot before the long Rust build: pkg-config resolves every library gstreamer-rs
# links to inside it, the cross gcc links a GStreamer program against it (as it will link
# camgate), and dpkg-shlibdeps computes that program's dependencies from it.
check_sysroot() {
  local sysroot=$1 libs="gstreamer-1.0 gstreamer-base-1.0 gstreamer-app-1.0 gstreamer-video-1.0 glib-2.0 gobject-2.0"
  local flags version tmp
  # shellcheck disable=SC2086 # libs is a word list
  flags=$(pkg-config --cflags --libs $libs) || die "pkg-config cannot resolve GStreamer in $sysroot"
  version=$(pkg-config --modversion gstreamer-1.0)
  local f
  for f in $flags; do
    case "$f" in
      -I*|-L*) case "${f#-?}" in "$sysroot"/*) ;; *) die "pkg-config points outside the sysroot: $f" ;; esac ;;
    esac
  done
  say "pkg-config: gstreamer-1.0 $version from the sysroot: $flags"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/debian/probe/usr/bin"
  cat >"$tmp/probe.c" <<'EOF'
#include <gst/gst.h>
#include <gst/app/gstappsink.h>
int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  return gst_app_sink_get_type() == 0;
}
EOF
  # shellcheck disable=SC2086 # flags is a word list
  "$gnu-gcc" --sysroot="$sysroot" -o "$tmp/debian/probe/usr/bin/probe" "$tmp/probe.c" $flags \
    || die "$gnu-gcc cannot link against GStreamer in $sysroot"
  printf 'Source: probe\n\nPackage: probe\nArchitecture: any\n' >"$tmp/debian/control"
  local deps
  deps=$(cd "$tmp" && DEB_HOST_ARCH=$arch dpkg-shlibdeps -O --admindir="$sysroot/var/lib/dpkg" \
           -l"$sysroot/usr/lib/$gnu" debian/probe/usr/bin/probe 2>/dev/null) \
    || die "dpkg-shlibdeps cannot resolve the sysroot's libraries"
  local machine
  machine=$(readelf -h "$tmp/debian/probe/usr/bin/probe" | sed -n 's/^ *Machine: *//p')
  say "cross link OK (an ELF for $machine); dpkg-shlibdeps: ${deps#shlibs:Depends=}"
  rm -rf "$tmp"
}

if [ -n "$target" ]; then
  sysroot=$root/target/sysroot/$arch-$suite
  make_sysroot "$sysroot"
  use_sysroot_pkg_config "$sysroot"
  check_sysroot "$sysroot"

  # The step these build machines cannot do: Rust's standard library for the target.
  libdir=$("${RUSTC:-rustc}" --print target-libdir --target "$target")
  if ! compgen -G "$libdir/libstd-*.rlib" >/dev/null; then
    msg="stopped: the Rust standard library for $target is not installed; run \`rustup target add $target\`, then run this again"
    if [ "$until_std" = 1 ]; then
      say "sysroot, pkg-config, cross linker and dpkg-shlibdeps are ready; $msg"
      exit 0
    fi
    die "$msg"
  fi
  if [ "$until_std" = 1 ]; then
    say "sysroot ready and the Rust standard library for $target is installed: run without --until-std to build"
    exit 0
  fi
  triple_env=$(echo "$target" | tr 'a-z-' 'A-Z_')
  export "CARGO_TARGET_${triple_env}_LINKER=$gnu-gcc"
  # Link against the sysroot's C library and GStreamer (the -L paths come from pkg-config).
  export "CARGO_TARGET_${triple_env}_RUSTFLAGS=-C link-arg=--sysroot=$sysroot"
  export "CC_${target//-/_}=$gnu-gcc"
  export "CXX_${target//-/_}=$gnu-g++"
  export "AR_${target//-/_}=$gnu-ar"
fi

# --- Build -------------------------------------------------------------------------------------
if [ "$build" = 1 ]; then
  say "cargo build --release --locked ${target:+--target $target}"
  cargo build --release --locked ${target:+--target "$target"}
fi
[ -x "$bin" ] || die "$bin not built (run without --no-build)"

# The man pages and completions are the same on every architecture, so a cross build makes them
# with a camgate that runs here.
if [ -z "$target" ]; then
  gen=$bin
else
  gen=${CAMGATE_HOST_BIN:-target/release/camgate}
  if [ ! -x "$gen" ]; then
    say "building a host camgate for the man pages and completions"
    cargo build --release --locked
  fi
fi

# --- Stage -------------------------------------------------------------------------------------
# A throw-away debian/ tree: dpkg-gencontrol and dpkg-shlibdeps expect debian/control and
# debian/<package>/ relative to where they run.
work=target/debian/build-$arch
pkg=$work/debian/camgate
rm -rf "$work"
mkdir -p "$pkg/DEBIAN"
cp "$deb_src/control" "$deb_src/changelog" "$work/debian/"

umask 022
install -D -m 0755 "$bin" "$pkg/usr/bin/camgate"
# Like dh_strip: no symbols, no .comment/.note; the release profile's line tables go too.
"$strip" --remove-section=.comment --remove-section=.note "$pkg/usr/bin/camgate"

install -D -m 0644 systemd/camgate.service "$pkg/lib/systemd/system/camgate.service"
install -D -m 0644 systemd/camgate@.service "$pkg/lib/systemd/system/camgate@.service"

# Configuration and secrets: readable by root and (after postinst) group camgate only.
install -d -m 0750 "$pkg/etc/camgate"
install -m 0640 config/camgate.toml "$pkg/etc/camgate/camgate.toml"
install -m 0640 config/camgate.env "$pkg/etc/camgate/camgate.env"

doc=$pkg/usr/share/doc/camgate
install -D -m 0644 README.md "$doc/README.md"
install -m 0644 packaging/README.md "$doc/README.packaging.md"
install -m 0644 "$deb_src/copyright" "$doc/copyright"
# A native package's Debian changelog is installed as changelog.gz.
gzip -9nc "$deb_src/changelog" >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

man=$pkg/usr/share/man/man1
"$gen" generate man "$man"
gzip -9n "$man"/*.1
chmod 0644 "$man"/*.1.gz

install -d -m 0755 "$pkg/usr/share/bash-completion/completions" \
  "$pkg/usr/share/zsh/vendor-completions" "$pkg/usr/share/fish/vendor_completions.d"
"$gen" generate completions bash >"$pkg/usr/share/bash-completion/completions/camgate"
"$gen" generate completions zsh >"$pkg/usr/share/zsh/vendor-completions/_camgate"
"$gen" generate completions fish >"$pkg/usr/share/fish/vendor_completions.d/camgate.fish"

install -D -m 0644 "$deb_src/lintian-overrides" "$pkg/usr/share/lintian/overrides/camgate"

install -m 0644 "$deb_src/conffiles" "$pkg/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "$deb_src/$script" "$pkg/DEBIAN/$script"
done

# --- Control -----------------------------------------------------------------------------------
# Library dependencies from the binary's NEEDED entries and the libraries' symbols files (the
# sysroot's, in a cross build), then the control file with Installed-Size.
shlibdeps_args=()
if [ -n "$target" ]; then
  shlibdeps_args=(--admindir="$sysroot/var/lib/dpkg" -l"$sysroot/usr/lib/$gnu")
fi
(
  cd "$work"
  echo "misc:Depends=" >debian/substvars
  DEB_HOST_ARCH=$arch dpkg-shlibdeps "${shlibdeps_args[@]}" -Tdebian/substvars \
    debian/camgate/usr/bin/camgate
  DEB_HOST_ARCH=$arch dpkg-gencontrol -pcamgate -Pdebian/camgate -Tdebian/substvars \
    -fdebian/files
)

(
  cd "$pkg"
  find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum \
    >DEBIAN/md5sums
)
chmod 0644 "$pkg/DEBIAN/md5sums" "$pkg/DEBIAN/control"

mkdir -p target/debian
SOURCE_DATE_EPOCH=$source_date dpkg-deb --root-owner-group -Zxz --build "$pkg" "$out" >/dev/null
say "built $out ($(stat -c %s "$out") bytes; Installed-Size $(dpkg-deb -f "$out" Installed-Size) KiB)"
say "Depends: $(dpkg-deb -f "$out" Depends)"
echo "$out"
