#!/usr/bin/env bash
# Tests the camgate .deb on this machine, as root (CI runs it from .ci/run):
#   1. builds the package with scripts/build-deb.sh (or takes the one given: test-deb.sh FILE.deb);
#   2. lintian: no error, and no warning that is not overridden (with its reason) in
#      packaging/debian/lintian-overrides;
#   3. installs it with apt-get and checks the user and groups, owners and modes, the conffiles,
#      the man page and completions, the configuration validating as the camgate user (also with
#      a systemd credential), `systemd-analyze verify` and an exposure <= 2.0 for camgate.service
#      and camgate@front.service;
#   4. an upgrade (reinstall) keeps an edited conffile and restores the modes;
#   5. remove keeps the configuration and the user; purge leaves nothing of camgate behind.
# systemd is not PID 1 here: the units are never started, and the maintainer scripts must cope.
# Prints "test-deb: N passed, M failed" and exits non-zero if anything failed. Safe to run again:
# a camgate package left installed by an earlier run is purged first.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "test-deb: run as root (it installs and purges the package)" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
# check DESCRIPTION COMMAND...: one test, passes when COMMAND succeeds.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
step() { printf '\n=== test-deb: %s\n' "$*"; }

# owner:group and octal mode of a path, e.g. "root:camgate 640".
# quiet COMMAND...: COMMAND with its standard output dropped (errors still show).
quiet() { "$@" >/dev/null; }

perm() { stat -c '%U:%G %a' "$1" 2>/dev/null || echo missing; }
check_perm() {
  local path=$1 want=$2 got
  got=$(perm "$path")
  if [ "$got" = "$want" ]; then ok "$path is $want"; else bad "$path is $got, want $want"; fi
}

# lacks PATTERN TEXT: TEXT does not contain PATTERN.
lacks() { ! grep -q -- "$1" <<<"$2"; }

not_installed() {
  ! dpkg-query -W -f='${db:Status-Status}' camgate 2>/dev/null | grep -q '^installed$'
}

purge_if_installed() {
  if dpkg-query -W -f='${db:Status-Status}' camgate 2>/dev/null | grep -qv '^not-installed$'; then
    apt-get purge -y -q camgate >/dev/null
  fi
}

# --- Build -------------------------------------------------------------------------------------
step "build"
if [ $# -ge 1 ]; then
  deb=$1
else
  deb=$(bash scripts/build-deb.sh | tail -n1)
fi
[ -f "$deb" ] || { echo "test-deb: no package at '$deb'" >&2; exit 1; }
# apt-get takes a file only as a path with a slash in it.
case "$deb" in
  /*) pkgfile=$deb ;;
  *) pkgfile=./$deb ;;
esac
deb_bytes=$(stat -c %s "$deb")
installed_kib=$(dpkg-deb -f "$deb" Installed-Size)
echo "package: $deb ($deb_bytes bytes, Installed-Size $installed_kib KiB)"
dpkg-deb -f "$deb" Depends Recommends Suggests

# --- lintian -----------------------------------------------------------------------------------
step "lintian"
# The gate: --fail-on makes errors and warnings fail; overridden tags do not count. (Combined
# with --show-overrides, lintian 2.116 also fails on overridden warnings, so the listing below,
# with the overrides and their reasons, is a second run.)
if lintian --fail-on error,warning "$deb"; then
  ok "lintian: no errors, no warnings that are not overridden"
else
  bad "lintian"
fi
lint_out=$(mktemp)
lintian --show-overrides --info --display-info "$deb" >"$lint_out" 2>&1 || true
grep -v '^N: *$' "$lint_out" || true
for level in E W I O; do
  printf '%s: %s  ' "$level" "$(grep -c "^$level: " "$lint_out" || true)"
done
echo
rm -f "$lint_out"

# --- Install -----------------------------------------------------------------------------------
step "install"
purge_if_installed
check "apt-get install $pkgfile" apt-get install -y -q "$pkgfile"
check "dpkg says installed" test "$(dpkg-query -W -f='${db:Status-Status}' camgate)" = installed

step "user and groups"
if entry=$(getent passwd camgate); then
  ok "user camgate exists ($entry)"
  IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
  check "camgate is a system user (uid $uid < 1000)" test "$uid" -lt 1000
  check "home is /var/lib/camgate" test "$home" = /var/lib/camgate
  check "no login shell ($shell)" test "$shell" = /usr/sbin/nologin
  check "primary group is camgate" test "$(getent group "$gid" | cut -d: -f1)" = camgate
else
  bad "user camgate exists"
fi
groups=" $(id -nG camgate 2>/dev/null) "
for g in video render audio; do
  if getent group "$g" >/dev/null; then
    check "camgate is in group $g" grep -q " $g " <<<"$groups"
  else
    echo "note: no group $g on this machine (it belongs to udev); the postinst skipped it"
  fi
done

step "files, owners, modes"
check_perm /usr/bin/camgate "root:root 755"
check_perm /etc/camgate "root:camgate 750"
check_perm /etc/camgate/camgate.toml "root:camgate 640"
check_perm /etc/camgate/camgate.env "root:camgate 640"
check_perm /lib/systemd/system/camgate.service "root:root 644"
check_perm /lib/systemd/system/camgate@.service "root:root 644"
for f in /usr/share/doc/camgate/README.md /usr/share/doc/camgate/README.packaging.md \
  /usr/share/doc/camgate/copyright /usr/share/doc/camgate/changelog.gz \
  /usr/share/man/man1/camgate.1.gz /usr/share/man/man1/camgate-check-config.1.gz \
  /usr/share/bash-completion/completions/camgate /usr/share/zsh/vendor-completions/_camgate \
  /usr/share/fish/vendor_completions.d/camgate.fish; do
  check_perm "$f" "root:root 644"
done
check "conffiles are the config and the env file" \
  test "$(dpkg-query -W -f='${Conffiles}' camgate | awk 'NF {print $1}' | sort | tr '\n' ' ')" \
  = "/etc/camgate/camgate.env /etc/camgate/camgate.toml "
check "the man page documents check-config" \
  bash -c 'MANWIDTH=100 man -l /usr/share/man/man1/camgate.1.gz 2>/dev/null | grep -q check-config'
check "the bash completion parses and completes subcommands" \
  bash -c 'bash -n /usr/share/bash-completion/completions/camgate && grep -q check-config /usr/share/bash-completion/completions/camgate'
check "the hidden generate command stays out of the completions" \
  bash -c '! grep -q generate /usr/share/bash-completion/completions/camgate'
check "unit enabled for boot (deb-systemd-helper, without a running systemd)" \
  test -L /etc/systemd/system/multi-user.target.wants/camgate.service

step "maintainer scripts where systemd runs (stubbed systemctl, private /run)"
# systemd is not running here, so the scripts' start/restart/stop branch is exercised with
# systemctl and deb-systemd-invoke replaced by stubs that log their arguments (and report one
# running camgate@front instance), and /run/systemd/system made in a private mount namespace.
stubs=$(mktemp -d)
for cmd in systemctl deb-systemd-invoke; do
  cat >"$stubs/$cmd" <<EOF
#!/bin/sh
echo "$cmd \$*" >>"$stubs/calls"
case "\$*" in *list-units*) echo "camgate@front.service loaded active running camgate (front)" ;; esac
exit 0
EOF
  chmod +x "$stubs/$cmd"
done
# maint SCRIPT ARGS...: the installed maintainer script, as if systemd were PID 1; prints the calls.
maint() {
  : >"$stubs/calls"
  unshare -m sh -c 'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec "$@"' \
    _ env PATH="$stubs:$PATH" "/var/lib/dpkg/info/camgate.$1" "${@:2}" >/dev/null
  tr '\n' ';' <"$stubs/calls"
}
calls=$(maint postinst configure "")
echo "install: $calls"
check "install starts camgate.service" grep -q 'deb-systemd-invoke start camgate.service;' <<<"$calls"
calls=$(maint postinst configure 0.1.0)
echo "upgrade: $calls"
check "upgrade restarts camgate.service and the running camgate@front" \
  grep -q 'invoke restart camgate.service;.*invoke restart camgate@front.service;' <<<"$calls"
calls=$(maint prerm remove)
echo "remove: $calls"
check "remove stops camgate.service and camgate@front" \
  grep -q 'invoke stop camgate.service;.*invoke stop camgate@front.service;' <<<"$calls"
calls=$(maint prerm upgrade 0.1.0)
check "an upgrade does not stop the service in prerm" test -z "$calls"
rm -rf "$stubs"

step "configuration"
check "camgate check-config as the camgate user" \
  quiet runuser -u camgate -- camgate check-config --config /etc/camgate/camgate.toml
check "other users cannot read the configuration" \
  bash -c '! runuser -u nobody -- cat /etc/camgate/camgate.toml >/dev/null 2>&1'
# A LoadCredential= credential named after a variable acts as that variable (the secret is masked).
creds=$(mktemp -d)
printf '0.0.0.0:18080\n' >"$creds/CAMGATE__HTTP__LISTEN"
printf 'rtsp-s3cret\n' >"$creds/CAMGATE__SOURCE__PASSWORD"
printf 'viewer\n' >"$creds/CAMGATE__SOURCE__USERNAME"
printf 'deb-test-token-0123456789\n' >"$creds/CAMGATE__HTTP__TOKENS"
chown -R camgate "$creds"
cred_out=$(runuser -u camgate -- env CREDENTIALS_DIRECTORY="$creds" \
  camgate check-config --config /etc/camgate/camgate.toml 2>&1 || true)
echo "$cred_out" | grep -E '^(listen|username|password) ' || true
check "a systemd credential sets http.listen" grep -q '0.0.0.0:18080' <<<"$cred_out"
check "a credential's secret is not printed" lacks rtsp-s3cret "$cred_out"
check "a credential's token is not printed" lacks deb-test-token-0123456789 "$cred_out"
check "a non-loopback listener with a token passes check-config" grep -q '^tokens = ' <<<"$cred_out"
rm -rf "$creds"

step "systemd units"
check "systemd-analyze verify camgate.service" \
  systemd-analyze verify /lib/systemd/system/camgate.service
check "systemd-analyze verify camgate@front.service" \
  systemd-analyze verify camgate@front.service
for unit in camgate.service camgate@front.service; do
  file=/lib/systemd/system/${unit/@front/@}
  # The table (what is and is not sandboxed), then the score.
  systemd-analyze security --offline=true "$file" 2>/dev/null | grep -v '^✓' || true
  score=$(systemd-analyze security --offline=true "$file" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
  check "exposure of $unit ($score) <= 2.0" \
    quiet systemd-analyze security --offline=true --threshold=20 "$file"
done
# The template's sandbox is the main unit's (the hardening block, "Identity" down, is the same
# but for the instance's directories).
check "camgate@.service has the same hardening as camgate.service" \
  diff <(sed -n '/^# --- Identity/,$p' /lib/systemd/system/camgate.service) \
  <(sed -n '/^# --- Identity/,$p' /lib/systemd/system/camgate@.service \
    | sed 's#^\(StateDirectory\|LogsDirectory\)=camgate/%i$#\1=camgate#')

# --- Upgrade -----------------------------------------------------------------------------------
step "upgrade keeps an edited conffile"
echo '# edited by test-deb' >>/etc/camgate/camgate.toml
chmod 0644 /etc/camgate/camgate.toml
# An instance configuration the admin adds gets the same owner and mode on the next configure.
install -m 0644 /etc/camgate/camgate.toml /etc/camgate/front.toml
check "reinstall (dpkg -i over the installed version)" dpkg -i "$deb"
check "the edit survived" grep -q '^# edited by test-deb' /etc/camgate/camgate.toml
check_perm /etc/camgate/camgate.toml "root:camgate 640"
check_perm /etc/camgate/front.toml "root:camgate 640"
check "front.toml validates as camgate" \
  quiet runuser -u camgate -- camgate check-config --config /etc/camgate/front.toml

# --- Remove, purge -----------------------------------------------------------------------------
step "remove"
# What a running system would have made: the unit's state and log directories, an enabled
# instance and a drop-in.
install -d -o camgate -g camgate -m 0750 /var/lib/camgate /var/log/camgate
ln -sf /lib/systemd/system/camgate@.service \
  /etc/systemd/system/multi-user.target.wants/camgate@front.service
install -d /etc/systemd/system/camgate.service.d
printf '[Service]\nEnvironment=X=1\n' >/etc/systemd/system/camgate.service.d/override.conf
uid=$(id -u camgate)
check "apt-get remove" apt-get remove -y -q camgate
check "the binary is gone" test ! -e /usr/bin/camgate
check "remove keeps the configuration" test -f /etc/camgate/camgate.toml
check "remove keeps the user" getent passwd camgate

step "purge"
check "apt-get purge" apt-get purge -y -q camgate
check "user camgate is gone" bash -c '! getent passwd camgate'
check "group camgate is gone" bash -c '! getent group camgate'
for path in /etc/camgate /var/lib/camgate /var/log/camgate \
  /etc/systemd/system/camgate.service.d \
  /etc/systemd/system/multi-user.target.wants/camgate.service \
  /etc/systemd/system/multi-user.target.wants/camgate@front.service; do
  check "$path is gone" test ! -e "$path" -a ! -L "$path"
done
# Nothing owned by camgate's old uid, nothing named camgate outside dpkg's own records.
left=$( {
  find /etc /var /run /tmp -xdev -uid "$uid" 2>/dev/null
  find /etc /var/lib /var/log /run /usr/bin /usr/share /lib/systemd -xdev -name '*camgate*' \
    -not -path '/var/lib/dpkg/*' 2>/dev/null
} || true)
if [ -z "$left" ]; then
  ok "nothing of camgate is left (files of its uid $uid, or named camgate)"
else
  bad "left behind after purge:"
  echo "$left"
fi
check "dpkg forgot the package" not_installed

echo
echo "package $deb_bytes bytes, Installed-Size $installed_kib KiB; took $(( $(date +%s) - start )) s"
echo "test-deb: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
