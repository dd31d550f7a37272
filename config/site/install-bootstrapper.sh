#!/bin/bash
# Install and start bootstrapperd on this machine from the bsroot this script sits in, with no
# internet: bootstrapperd-pack put everything it needs into bsroot/bootstrapper/.
#
#   sudo ./install-bootstrapper.sh                 # the Python install (venv + systemd unit)
#   sudo ./install-bootstrapper.sh --container     # the container image (docker or podman)
#
# Options:
#   --container        install the container image (bootstrapper/bootstrapperd-image.tar) and
#                      bootstrapperd-container.service instead of the venv and bootstrapperd.service
#   --interface IF     serve on IF (written to /etc/default/bootstrapperd); default: the
#                      interface holding the description's bootstrapper address
#   --check            only check that this machine can run it; change nothing
#   --no-start         install and enable, but do not start or restart
#   --foreground       install, then run the daemon in the foreground as the unit would (as the
#                      bootstrapperd user with the unit's capabilities), for machines without
#                      systemd; Ctrl-C stops it
#
# It is idempotent: run again, it changes only what differs, and leaves a daemon that runs this
# bsroot's version with the same units alone. It refuses, saying why and changing nothing that
# serves, when this machine lacks what is needed: root, the Python the wheelhouse was packed for
# (or docker/podman with --container), the bootstrapper address on an interface, ports 67, 69,
# 53 and the HTTP port free.
#
# Exit status: 0 installed (and started), 1 refused or failed (the reason on stderr), 2 bad usage.
# Environment: BOOTSTRAPPERD_PREFIX, where the venv goes (default /opt/bootstrapperd).
set -euo pipefail
umask 022

prog=install-bootstrapper
say() { printf '%s: %s\n' "$prog" "$*"; }
refuse() { printf '%s: refused: %s\n' "$prog" "$*" >&2; exit 1; }
usage() { printf '%s: %s\nusage: %s [--container] [--interface IF] [--check] [--no-start] [--foreground]\n' "$prog" "$1" "$0" >&2; exit 2; }

form=python interface="" check=0 start=1 foreground=0
while [ $# -gt 0 ]; do
  case "$1" in
    --container) form=container ;;
    --interface)
      if [ $# -lt 2 ] || [ -z "$2" ]; then usage "--interface needs an interface name"; fi
      interface=$2; shift ;;
    --interface=*) interface=${1#--interface=}; [ -n "$interface" ] || usage "--interface needs an interface name" ;;
    --check) check=1 ;;
    --no-start) start=0 ;;
    --foreground) foreground=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown option $1" ;;
  esac
  shift
done
if [ -n "$interface" ] && ! [[ $interface =~ ^[A-Za-z0-9_.:@-]{1,15}$ ]]; then
  usage "--interface $interface is not an interface name"
fi

bsroot=$(cd "$(dirname "$0")" && pwd -P)
site=$bsroot/bootstrapper
prefix=${BOOTSTRAPPERD_PREFIX:-/opt/bootstrapperd}
[[ $prefix == /* ]] || usage "BOOTSTRAPPERD_PREFIX=$prefix is not an absolute path"
units=/etc/systemd/system
defaults=/etc/default/bootstrapperd
user=bootstrapperd

[ -f "$bsroot/config/cluster-desc.yml" ] \
  || refuse "$bsroot has no config/cluster-desc.yml: run this script from the bsroot bootstrapperd-pack wrote"
[ -r "$site/site.env" ] \
  || refuse "$site/site.env is missing: this bsroot was packed without the bootstrapper (bootstrapperd-pack --no-bootstrapper); pack it again without that option"

# site.env: KEY=VALUE lines written by bootstrapperd-pack; read, never sourced.
VERSION="" PYTHON="" ARCH="" GLIBC="" IMAGE=""
while IFS='=' read -r key value; do
  case "$key" in
    VERSION) VERSION=$value ;; PYTHON) PYTHON=$value ;; ARCH) ARCH=$value ;;
    GLIBC) GLIBC=$value ;; IMAGE) IMAGE=$value ;;
  esac
done <"$site/site.env"
[ -n "$VERSION" ] || refuse "$site/site.env names no VERSION: pack the bsroot again"

[ "$(id -u)" = 0 ] || refuse "run it as root (it creates the $user user, writes $prefix and the systemd units, and binds ports 67, 69, 53 and 80)"

systemd_running() { [ -d /run/systemd/system ]; }
unit_for() { if [ "$1" = container ]; then echo bootstrapperd-container.service; else echo bootstrapperd.service; fi; }
other_form() { if [ "$1" = container ]; then echo python; else echo container; fi; }

# ---- what this machine must have ---------------------------------------------------------------

engine=""
if [ "$form" = python ]; then
  python=$(command -v python3 || true)
  [ -n "$python" ] || refuse "no python3 here: install Debian's python3 package (CPython $PYTHON) from the OS media, or use --container"
  have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$have" = "$PYTHON" ] \
    || refuse "python3 is $have but the wheelhouse was packed for CPython $PYTHON: pack again with --site-python $have, or use --container"
  machine=$(uname -m)
  [ "$machine" = "$ARCH" ] \
    || refuse "this machine is $machine but the wheelhouse was packed for $ARCH: pack again with --site-arch $machine"
  libc=$("$python" -c 'import os; print(os.confstr("CS_GNU_LIBC_VERSION") or "")' 2>/dev/null || true)
  libc=${libc#glibc }
  if [ -z "$libc" ] || [ "$(printf '%s\n%s\n' "$GLIBC" "$libc" | sort -V | head -n1)" != "$GLIBC" ]; then
    refuse "glibc here is ${libc:-not found} but the wheels may need $GLIBC: pack again with --site-glibc ${libc:-2.28}"
  fi
  "$python" -c 'import venv' 2>/dev/null || refuse "python3 has no venv module: install Debian's python3 package in full"
  compgen -G "$site/wheels/bootstrapperd-$VERSION-*.whl" >/dev/null \
    || refuse "$site/wheels holds no bootstrapperd $VERSION wheel: pack the bsroot again"
else
  if [ -z "$IMAGE" ] || [ ! -f "$site/bootstrapperd-image.tar" ]; then
    refuse "this bsroot carries no container image (it was packed where no image builder ran): run without --container"
  fi
  for candidate in docker podman; do
    if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
      engine=$(command -v "$candidate"); break
    fi
  done
  [ -n "$engine" ] || refuse "--container needs docker or podman installed and its engine running"
fi
for tool in setpriv useradd systemctl; do
  command -v "$tool" >/dev/null || refuse "$tool is missing (util-linux, passwd, systemd)"
done

unit=$(unit_for "$form")
other=$(unit_for "$(other_form "$form")")

# The unit as this bsroot and prefix need it (the shipped units name /srv/bsroot, /opt/bootstrapperd,
# /usr/bin/docker and bootstrapperd:latest).
render_unit() {
  sed -e "s|/srv/bsroot|$bsroot|g" -e "s|/opt/bootstrapperd|$prefix|g" \
      -e "s|/usr/bin/docker|${engine:-/usr/bin/docker}|g" -e "s|bootstrapperd:latest|${IMAGE:-bootstrapperd:latest}|g" \
      "$site/systemd/$unit"
}

installed_version() {
  if [ "$form" = python ]; then
    if [ -x "$prefix/bin/bootstrapperd" ]; then
      "$prefix/bin/bootstrapperd" --version 2>/dev/null | awk '{print $2}' || true
    fi
  else
    "$engine" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true
  fi
}

# Up to date and running: nothing to do (ports are ours, so preflight would refuse them).
if systemd_running && systemctl is-active --quiet "$unit" && [ "$foreground" = 0 ]; then
  if [ "$form" = python ] && [ "$(installed_version)" = "$VERSION" ] \
     && cmp -s <(render_unit) "$units/$unit"; then
    say "bootstrapperd $VERSION is installed and running ($unit); nothing to do"
    exit 0
  fi
fi

preflight() {
  local args=(preflight --bsroot "$bsroot")
  [ -z "$interface" ] || args+=(--interface "$interface")
  if [ "$form" = python ]; then
    "$prefix/bin/bootstrapperd" "${args[@]}"
  else
    "$engine" run --rm --network host --cap-add NET_ADMIN -v "$bsroot:$bsroot:ro" "$IMAGE" "${args[@]}"
  fi
}

# ---- install -------------------------------------------------------------------------------------

if [ "$check" = 1 ]; then
  if systemd_running && systemctl is-active --quiet "$unit"; then
    say "bootstrapperd is running here ($unit): the ports it holds are its own; nothing to check"
    exit 0
  fi
  # The checks that need bootstrapperd itself run from a scratch install, removed after.
  if [ "$form" = python ]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    prefix=$scratch/venv
  fi
fi

if [ "$form" = python ]; then
  if [ "$(installed_version)" != "$VERSION" ]; then
    # A daemon running the old venv is stopped first: the venv is replaced where it stands.
    if [ "$check" = 0 ] && systemd_running && systemctl is-active --quiet "$unit"; then
      say "stopping $unit to replace its install"
      systemctl stop "$unit"
    fi
    say "installing bootstrapperd $VERSION into $prefix from $site/wheels (no network)"
    rm -rf "$prefix"
    "$python" -m venv --without-pip "$prefix"
    pip=$(compgen -G "$site/wheels/pip-*.whl" | head -n1) || refuse "$site/wheels holds no pip wheel: pack again"
    # pip runs from its own wheel, so python3-venv's ensurepip is not needed; this machine's
    # pip settings (indexes, find-links, constraints) are not this install's.
    for variable in $(compgen -e); do
      case "$variable" in PIP_*) unset "$variable" ;; esac
    done
    export PIP_CONFIG_FILE=/dev/null
    "$prefix/bin/python" "$pip/pip" install --quiet --no-index --no-cache-dir \
      --disable-pip-version-check --find-links "$site/wheels" "bootstrapperd==$VERSION" \
      || refuse "pip could not install bootstrapperd $VERSION from $site/wheels (above: why)"
  else
    say "bootstrapperd $VERSION is already installed in $prefix"
  fi
else
  say "loading the image $IMAGE into $engine from $site/bootstrapperd-image.tar"
  "$engine" load -q -i "$site/bootstrapperd-image.tar" >/dev/null \
    || refuse "$engine load failed for $site/bootstrapperd-image.tar"
fi

if systemd_running && systemctl is-active --quiet "$unit"; then
  [ "$check" = 1 ] || { say "stopping $unit to check the ports it holds"; systemctl stop "$unit"; }
fi
if systemd_running && systemctl is-active --quiet "$other"; then
  refuse "$other (the other form) is running: stop and disable it first (systemctl disable --now $other)"
fi
say "checking this machine (bootstrapperd preflight)"
preflight || refuse "this machine cannot serve the bsroot yet: fix the above and run again"
if [ "$check" = 1 ]; then
  say "check passed: nothing was changed"
  exit 0
fi

getent group "$user" >/dev/null || groupadd --system "$user"
if ! getent passwd "$user" >/dev/null; then
  useradd --system --gid "$user" --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin --comment "bootstrapperd daemon" "$user"
  say "created the system user $user"
fi
# The daemon writes only state/ and tls/; the rest of bsroot stays root's and read-only to it.
mkdir -p "$bsroot/state" "$bsroot/tls"
chown -R "$user:$user" "$bsroot/state" "$bsroot/tls"
chmod 0750 "$bsroot/state" "$bsroot/tls"

mkdir -p "$units" "$(dirname "$defaults")"
if ! cmp -s <(render_unit) "$units/$unit"; then
  render_unit >"$units/$unit.tmp" && mv "$units/$unit.tmp" "$units/$unit"
  say "wrote $units/$unit"
fi
if [ ! -e "$defaults" ]; then
  cat >"$defaults" <<'EOF'
# bootstrapperd's settings (systemd reads this file: EnvironmentFile=). Every option of
# `bootstrapperd serve` has a BOOTSTRAPPERD_<NAME> variable; see `bootstrapperd serve --help`.
#BOOTSTRAPPERD_INTERFACE=eth1
#BOOTSTRAPPERD_LOG_LEVEL=info
EOF
  say "wrote $defaults"
fi
if [ -n "$interface" ]; then
  sed -i '/^BOOTSTRAPPERD_INTERFACE=/d' "$defaults"
  echo "BOOTSTRAPPERD_INTERFACE=$interface" >>"$defaults"
fi
systemctl disable --quiet "$other" 2>/dev/null || true
systemctl enable --quiet "$unit"
say "enabled $unit (it starts at boot)"

if [ "$foreground" = 1 ]; then
  say "running bootstrapperd in the foreground (Ctrl-C stops it)"
  set -a
  # shellcheck source=/dev/null
  . "$defaults"
  set +a
  if [ "$form" = container ]; then
    exec "$engine" run --rm --name bootstrapperd --network host --cap-add NET_ADMIN \
      -v "$bsroot:$bsroot" --env-file <(grep -E '^BOOTSTRAPPERD_[A-Z_]+=' "$defaults" || true) \
      "$IMAGE" serve --bsroot "$bsroot"
  fi
  # As the unit runs it: the user, its three capabilities and nothing more, no new privileges.
  ulimit -n 16384
  umask 0027
  caps=+net_bind_service,+net_admin,+net_raw
  exec setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs \
    --inh-caps=-all,$caps --ambient-caps=-all,$caps --bounding-set=-all,$caps \
    "$prefix/bin/bootstrapperd" serve --bsroot "$bsroot"
fi

if ! systemd_running; then
  say "systemd is not running on this machine: installed and enabled for its next boot; to run it now: $0 --foreground"
  exit 0
fi
systemctl daemon-reload
if [ "$start" = 0 ]; then
  say "installed; not started (--no-start): systemctl start $unit"
  exit 0
fi
# Type=notify: start returns once the daemon has bound every port and said READY=1.
if ! systemctl restart "$unit"; then
  journalctl -u "$unit" -n 20 --no-pager >&2 || true
  refuse "$unit did not start (its last log lines above)"
fi
say "bootstrapperd $VERSION is running ($unit); systemctl status $unit, journalctl -u $unit"
