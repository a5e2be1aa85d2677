#!/usr/bin/env bash
# Checks that an ELF binary needs no glibc newer than a given version.
#
#   scripts/check-glibc.sh <binary> <max-version>     e.g. scripts/check-glibc.sh bootstrap 2.34
#
# Reads the versioned dynamic symbols (`objdump -T`, binutils) and compares every GLIBC_x.y[.z]
# version against <max-version>. Prints the highest version the binary requires; exits 1 and lists
# the offending symbols if any needs a newer glibc (or GLIBC_PRIVATE, which ties the binary to one
# exact glibc build). Exits 2 on usage errors or if the binary cannot be read.
#
# objdump from Debian's binutils only knows the host's architectures; for a foreign ELF (an aarch64
# binary on an x86_64 host) it falls back to `readelf`, which reads any ELF. Both come from binutils.
set -euo pipefail

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }

if [ $# -ne 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  usage
  [ $# -eq 1 ] && { [ "$1" = "-h" ] || [ "$1" = "--help" ]; } && exit 0
  exit 2
fi
bin=$1
max=$2

if [ ! -f "$bin" ]; then
  echo "check-glibc: no such file: $bin" >&2
  exit 2
fi
if ! [[ $max =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]]; then
  echo "check-glibc: max-version must look like 2.34, got '$max'" >&2
  exit 2
fi

# One "VERSION SYMBOL" pair per line, for every dynamic symbol versioned GLIBC_*.
if ! command -v objdump >/dev/null 2>&1 && ! command -v readelf >/dev/null 2>&1; then
  echo "check-glibc: objdump/readelf not found (Debian package: binutils)" >&2
  exit 2
fi
if dump=$(objdump -T "$bin" 2>/dev/null); then
  # objdump -T lines end in: ... [(]GLIBC_2.34[)] symbol_name
  pairs=$(printf '%s\n' "$dump" |
    sed -nE 's/.*[ (](GLIBC_[A-Z0-9_.]+)\)?[[:space:]]+([^[:space:]]+)$/\1 \2/p')
elif dump=$(readelf -W --dyn-syms "$bin" 2>/dev/null); then
  # readelf lines end in: symbol_name@GLIBC_2.17 (3)   or   symbol_name@@GLIBC_2.17
  pairs=$(printf '%s\n' "$dump" |
    sed -nE 's/.*[[:space:]]([^[:space:]@]+)@@?(GLIBC_[A-Z0-9_.]+).*/\2 \1/p')
else
  echo "check-glibc: neither objdump -T nor readelf could read $bin (not an ELF binary?)" >&2
  exit 2
fi

if [ -z "$pairs" ]; then
  echo "check-glibc: $bin has no GLIBC-versioned symbols (static or non-glibc binary): OK"
  exit 0
fi

versions=$(printf '%s\n' "$pairs" | awk '{print $1}' | sed -n 's/^GLIBC_\([0-9][0-9.]*\)$/\1/p' | sort -uV)
highest=$(printf '%s\n' "$versions" | tail -n1)
echo "check-glibc: $bin requires GLIBC ${highest:-none} (limit $max)"

# Offending: any numeric version sorting above $max, and GLIBC_PRIVATE.
bad_versions=()
while IFS= read -r v; do
  [ -n "$v" ] || continue
  if [ "$v" != "$max" ] && [ "$(printf '%s\n%s\n' "$v" "$max" | sort -V | tail -n1)" = "$v" ]; then
    bad_versions+=("GLIBC_$v")
  fi
done <<<"$versions"
if printf '%s\n' "$pairs" | grep -q '^GLIBC_PRIVATE '; then
  bad_versions+=("GLIBC_PRIVATE")
fi

if [ ${#bad_versions[@]} -gt 0 ]; then
  echo "check-glibc: FAIL: $bin needs a glibc newer than $max; offending symbols:" >&2
  for v in "${bad_versions[@]}"; do
    printf '%s\n' "$pairs" | awk -v v="$v" '$1 == v { printf "  %s@%s\n", $2, $1 }' | sort -u >&2
  done
  exit 1
fi
echo "check-glibc: OK: no symbol needs a glibc newer than $max"
