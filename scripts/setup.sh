#!/usr/bin/env bash
# Set up everything bootstrapperd's demo and test suite need, on a fresh Debian 12 machine:
# the system tools (apt) and a virtual environment in .venv with the package and its dev tools.
# Idempotent: a second run installs nothing. Needs root (or sudo) only when apt packages are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# iproute2: network namespaces for the lab; curl: HTTP client in tests and the demo; the DHCP,
# DNS and TFTP clients for the protocol tests; shellcheck for install.sh; dnsmasq-base (the second
# DHCP server of the proxy-mode test, and the benchmarks' reference) and Kea with perfdhcp
# (kea-admin) for the DHCP benchmark; openssl to verify certificate chains; Debian's chromium for
# the status-page test (driven by Playwright, which is told to use it: nothing is downloaded);
# nginx-light, the HTTP benchmark's reference. For pack and the registry: gpgv (checks the OS
# images' signatures) and gpg (signs the tests' stand-in release), ipxe (the boot files pack
# copies), docker-registry (CNCF distribution: the registry serve runs, and the tests' source
# registry), docker.io (the registry's Docker mode and `docker load` of pack's archives; the
# tests start their own isolated engine, never the system's). For the VM boot tests, the demo and
# the boot benchmark: QEMU with its iPXE ROMs, OVMF (the UEFI run), cpio (the test initramfs),
# ndisc6 (rdisc6, a real router-advertisement client). For the packaging test: python3-venv
# (the image's venv) and systemd (systemd-analyze verify on the units). For the machines'
# life after install: openipmi (ipmi_sim, a real BMC for a QEMU VM), and syslinux,
# syslinux-common, mtools, dosfstools and fdisk (the lab's bootable install image, made
# without root or mounts); ignition (the real Ignition applies the served configs).
APT_PACKAGES=(
  iproute2 curl procps util-linux
  isc-dhcp-client busybox-static bind9-dnsutils tftp-hpa atftp shellcheck
  dnsmasq-base kea-admin kea-dhcp4-server dnsperf
  openssl chromium nginx-light
  gpg gpgv ipxe docker-registry docker.io
  qemu-system-x86 ipxe-qemu ovmf cpio ndisc6 python3-venv systemd
  openipmi syslinux syslinux-common mtools dosfstools fdisk ignition
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -c "install ok installed" >/dev/null \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
  "${SUDO[@]}" apt-get update -q
  # Servers installed as test tools (kea) must not start on this machine's own interfaces:
  # policy-rc.d forbids starting services for the duration of the install.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    own_policy=1
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
    "${missing[@]}" || status=$?
  [ "$own_policy" = 0 ] || "${SUDO[@]}" rm -f "$policy"
  [ "$status" = 0 ] || exit "$status"
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "setup: installing bootstrapperd and its dev tools into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  # The packaging test installs the package as the Containerfile does, with no network: it
  # takes the runtime dependencies and the build backend from this wheelhouse. The site install
  # test packs bsroot's own wheelhouse from it (pip's wheel included) with no index.
  rm -rf .venv/wheelhouse
  .venv/bin/python -m pip download -q -d .venv/wheelhouse . "hatchling>=1.18" pip
  rm -f .venv/.installed-* && touch "$stamp"
fi

# The VM lab's kernel (tests, demo, boot benchmark): Debian's linux-image-amd64, downloaded and
# unpacked into the user's cache (never installed). A no-op when it is already there.
.venv/bin/python -m bootstrapperd.lab.vm.kernel
