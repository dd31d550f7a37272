"""The lab's stand-in OS: busybox initramfs images that do, in seconds, what Flatcar does in the
real boot path: the live system that installs, and the system installed on the disk.

The live system's ``/init`` loads the virtio modules, gets a DHCP lease, resolves its own name and
the names it is told to through the DNS server DHCP gave it, reports what it found to the
bootstrapper, then downloads and runs the ``install.sh`` the bootstrapper serves (the server is
taken from the ``ignition.config.url=`` or ``cloud-config-url=`` kernel argument, as the real OS
would). The ``flatcar-install`` it provides takes Flatcar's options, downloads
``<-b>/<-V>/flatcar_production_image.bin.bz2`` (a bootable disk: see release.py), writes it to
the disk (``-d``) and writes the config (``-i``/``-c``) at :data:`CONFIG_OFFSET` of the disk,
past the end of the image, behind a one-line header (Flatcar puts it into the OEM partition;
the stand-in image has none). Signatures of the image are not checked inside the VM: pack
checked them on the way into bsroot.

The installed system (the initramfs syslinux boots from the image) gets a DHCP lease the same
way, says which release it is and which config it finds on its disk, and reports that to the
bootstrapper with ``event=note``. There is no kernel command line from the bootstrapper on a
boot from the disk, and the image is the same for every machine, so the server is the DHCP
server that gave the lease (option 54, the server identifier), on HTTP's port 80: bootstrapperd
answers DHCP from the address it serves HTTP on.

Every step prints a line starting with :data:`MARK` on the serial console; the machine powers
off at the end, success or not.
"""

from __future__ import annotations

import gzip
import stat
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from .kernel import Kernel

MARK = "LAB"
# Where the stand-in flatcar-install writes the machine's config: past the end of the install
# image (about 11 MiB: the kernel, the installed OS's initramfs, syslinux), which must end there.
CONFIG_OFFSET = 32 << 20
CONFIG_HEADER = b"BOOTSTRAPPERD-LAB-CONFIG"
DISK_SIZE = 40 << 20  # a sparse file: the image, the config, and room
INSTALLED_MARK = "installed-os booted from disk"  # the installed OS's first console line
BUSYBOX = Path("/bin/busybox")  # busybox-static
# install.sh makes the machine's keys and certificate requests with openssl (Flatcar's live
# system has it): the host's binary and the shared libraries it needs go in as they are.
OPENSSL = Path("/usr/bin/openssl")

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc's hook: configure the interface, the default route and the resolver; keep the lease.
case "$1" in
  bound|renew)
    ip addr flush dev "$interface" scope global
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "${router:-}" ] && ip route replace default via "${router%% *}" dev "$interface"
    : >/etc/resolv.conf
    for server in ${dns:-}; do echo "nameserver $server" >>/etc/resolv.conf; done
    [ -n "${domain:-}" ] && echo "search $domain" >>/etc/resolv.conf
    {
      echo "ip=$ip"; echo "hostname=${hostname:-}"; echo "domain=${domain:-}"
      echo "dns='${dns:-}'"; echo "router='${router:-}'"; echo "lease=${lease:-}"
      echo "serverid=${serverid:-}"
    } >/run/lease.env ;;
  deconfig) ip addr flush dev "$interface" scope global ;;
esac
exit 0
"""

PROLOGUE = """#!/bin/busybox sh
# bootstrapperd lab: the stand-in @WHICH@ (see bootstrapperd/lab/vm/initramfs.py).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp
say() { echo "@MARK@ $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
finish() { say "end $1"; sync; poweroff -f; sleep 5; }
"""

# The network, as both systems bring it up: the modules, the first interface, a DHCP lease.
NETWORK = """for module in $(cat /etc/lab/modules); do
  insmod "/lib/modules/$module" || say "insmod $module failed"
done
ip link set lo up
IF=""
for _ in $(seq 50); do
  IF=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
  [ -n "$IF" ] && break
  sleep 0.1
done
[ -n "$IF" ] || finish "no-network-interface"
ip link set "$IF" up
MAC=$(cat "/sys/class/net/$IF/address")
udhcpc -i "$IF" -f -q -n -t 10 -T 2 -s /etc/udhcpc/default.script \\
  || finish "no-dhcp-lease"
. /run/lease.env
say "lease ip=$ip hostname=$hostname domain=$domain dns=$dns mac=$MAC"
"""

INIT = (
    PROLOGUE.replace("@WHICH@", "live OS")
    + 'say "initramfs"\n'
    + NETWORK
    + """
SERVER=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ignition.config.url=*|cloud-config-url=*)
      SERVER=$(echo "${arg#*=}" | sed -n 's#^\\(https*://[^/]*\\).*#\\1#p') ;;
  esac
done
[ -n "$SERVER" ] || finish "no-config-url-on-the-kernel-command-line"
say "server $SERVER"

resolved=""
for name in "$hostname.$domain" $(cat /etc/lab/resolve); do
  address=$(nslookup "$name" 2>/dev/null \\
    | awk '/^Name:/ { seen = 1 } seen && /^Address/ { print $NF; exit }')
  resolved="$resolved,$name:${address:-none}"
done
say "resolved ${resolved#,}"
wget -q -O /dev/null --post-data "event=note&message=resolved$resolved" \\
  "$SERVER/api/v1/nodes/$MAC/report" || say "report failed"

wget -q -O /tmp/install.sh "$SERVER/install.sh" || finish "install.sh-download-failed"
say "install.sh"
if DISK=/dev/vda NOREBOOT=1 sh /tmp/install.sh; then
  # As install.sh would: reboot into the installed system. QEMU run with -no-reboot (every
  # lab machine but those that reboot) quits instead, as at a power-off.
  say "end installed"; sync; reboot -f; sleep 5
fi
finish "install-failed"
"""
)

INSTALLED_INIT = (
    PROLOGUE.replace("@WHICH@", "installed OS, booted from the disk")
    + """VERSION=$(cat /etc/lab/version)
say "@INSTALLED@ version=$VERSION"
"""
    + NETWORK
    + """
# What flatcar-install left past the image: "@HEADER@ <kind> <size>".
CONFIG=$(dd if=/dev/vda bs=1048576 skip=@OFFSET_MIB@ count=1 2>/dev/null | head -n 1 \\
  | awk '$1 == "@HEADER@" { print $2 }')
say "config ${CONFIG:-none}"
# No kernel command line from the bootstrapper on a boot from the disk: the DHCP server is it.
[ -n "$serverid" ] || finish "no-dhcp-server-identifier"
SERVER="http://$serverid"
say "server $SERVER"
message=$(echo "@INSTALLED@ version=$VERSION config=${CONFIG:-none}" | sed 's/ /+/g; s/=/%3D/g')
wget -q -O /dev/null --post-data "event=note&message=$message" \\
  "$SERVER/api/v1/nodes/$MAC/report" || finish "report-failed"
say "reported"
finish "installed-os"
"""
)

FLATCAR_INSTALL = """#!/bin/sh
# Stand-in for Flatcar's flatcar-install (same options): writes the release's image onto the
# disk and the machine's config at a fixed offset past it (see bootstrapperd/lab/vm/initramfs.py).
set -eu
DISK=""; CHANNEL=""; VERSION=""; BASE=""; CONFIG=""; KIND=""
while getopts "d:C:V:b:i:c:" opt; do
  case "$opt" in
    d) DISK=$OPTARG ;; C) CHANNEL=$OPTARG ;; V) VERSION=$OPTARG ;; b) BASE=$OPTARG ;;
    i) CONFIG=$OPTARG; KIND=ignition ;; c) CONFIG=$OPTARG; KIND=cloud-config ;;
    *) echo "flatcar-install: unknown option" >&2; exit 2 ;;
  esac
done
[ -n "$DISK" ] && [ -n "$BASE" ] && [ -n "$VERSION" ] && [ -r "$CONFIG" ] \\
  || { echo "flatcar-install: -d, -b, -V and -i or -c are required" >&2; exit 2; }
url="$BASE/$VERSION/flatcar_production_image.bin.bz2"
echo "@MARK@ flatcar-install $url channel=$CHANNEL -> $DISK"
wget -q -O /tmp/image.bin.bz2 "$url"
bunzip2 -c /tmp/image.bin.bz2 >/tmp/image.bin
rm /tmp/image.bin.bz2
image=$(wc -c </tmp/image.bin)
if [ "$image" -gt @OFFSET@ ]; then
  echo "flatcar-install: the image ($image bytes) reaches the config at @OFFSET@" >&2
  exit 1
fi
dd if=/tmp/image.bin of="$DISK" bs=65536 conv=fsync 2>/dev/null
rm /tmp/image.bin
size=$(wc -c <"$CONFIG")
{ echo "@HEADER@ $KIND $size"; cat "$CONFIG"; } \\
  | dd of="$DISK" bs=1048576 seek=@OFFSET_MIB@ conv=fsync 2>/dev/null
echo "@MARK@ flatcar-install wrote the image and $size bytes of $KIND"
"""


def _substitute(text: str) -> str:
    return (
        text.replace("@MARK@", MARK)
        .replace("@HEADER@", CONFIG_HEADER.decode())
        .replace("@OFFSET_MIB@", str(CONFIG_OFFSET >> 20))
        .replace("@OFFSET@", str(CONFIG_OFFSET))
        .replace("@INSTALLED@", INSTALLED_MARK)
    )


def installer_script() -> str:
    """The stand-in ``flatcar-install``, as the live system carries it."""
    return _substitute(FLATCAR_INSTALL)


class Cpio:
    """An archive in the kernel's initramfs format (cpio "newc"), built in memory."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(encoded), 0)
        header = b"070701" + b"".join(b"%08x" % value for value in fields)
        self._ino += 1
        self._parts += [header, encoded, b"\0" * (-(len(header) + len(encoded)) % 4)]
        self._parts += [data, b"\0" * (-len(data) % 4)]

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def shared_libraries(program: Path) -> list[Path]:
    """The shared libraries ``program`` loads (the dynamic loader included), as ldd says."""
    listing = subprocess.run(
        ["ldd", str(program)], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in listing.splitlines():
        words = line.split()
        path = words[words.index("=>") + 1] if "=>" in words else (words[0] if words else "")
        if path.startswith("/"):
            found.append(Path(path))
    return found


def _add_program(cpio: Cpio, program: Path, made: set[str]) -> None:
    """``program`` as ``bin/<name>`` and its libraries at their own paths."""
    cpio.file(f"bin/{program.name}", program.read_bytes(), 0o755)
    for library in shared_libraries(program):
        parts = library.parts[1:]  # without the root
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                made.add(directory)
                cpio.directory(directory)
        cpio.file("/".join(parts), library.read_bytes(), 0o755)


def _base(kernel: Kernel) -> tuple[Cpio, Mapping[str, bytes]]:
    """What both systems carry: busybox, the virtio modules, udhcpc's hook; and the modules."""
    if not BUSYBOX.is_file():
        raise FileNotFoundError(f"{BUSYBOX} is missing (Debian package busybox-static)")
    modules: Mapping[str, bytes] = kernel.modules()
    cpio = Cpio()
    for directory in ("bin", "dev", "etc", "etc/lab", "etc/udhcpc", "lib", "lib/modules"):
        cpio.directory(directory)
    for directory in ("proc", "sys", "run", "tmp", "mnt", "root"):
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cpio.file("etc/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
    cpio.file("etc/lab/modules", "".join(f"{name}\n" for name in modules).encode())
    return cpio, modules


def _finish(cpio: Cpio, modules: Mapping[str, bytes]) -> bytes:
    for name, data in modules.items():
        cpio.file(f"lib/modules/{name}", data)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def build_initramfs(kernel: Kernel, resolve: Iterable[str] = ()) -> bytes:
    """The live system's gzipped initramfs; ``resolve`` are names (besides its own) each
    machine looks up."""
    cpio, modules = _base(kernel)
    if not OPENSSL.is_file():
        raise FileNotFoundError(f"{OPENSSL} is missing (Debian package openssl)")
    _add_program(cpio, OPENSSL, {"bin", "dev", "etc", "lib", "lib/modules"})
    cpio.file("init", _substitute(INIT).encode(), 0o755)
    cpio.file("bin/flatcar-install", installer_script().encode(), 0o755)
    cpio.file("etc/lab/resolve", "".join(f"{name}\n" for name in resolve).encode())
    return _finish(cpio, modules)


def build_installed_initramfs(kernel: Kernel, version: str) -> bytes:
    """The installed system's gzipped initramfs (it goes into the install image): release
    ``version``, which reports itself and powers off."""
    cpio, modules = _base(kernel)
    cpio.file("init", _substitute(INSTALLED_INIT).encode(), 0o755)
    cpio.file("etc/lab/version", f"{version}\n".encode())
    return _finish(cpio, modules)


def write_disk(path: Path, size: int = DISK_SIZE) -> Path:
    """A blank raw disk for a machine."""
    with path.open("wb") as disk:
        disk.truncate(size)
    return path


def write_config(disk: Path, kind: str, config: bytes) -> None:
    """Write ``config`` to ``disk`` as the stand-in flatcar-install does (for tests that start
    from an installed disk)."""
    with disk.open("r+b") as handle:
        handle.seek(CONFIG_OFFSET)
        handle.write(b"%s %s %d\n" % (CONFIG_HEADER, kind.encode(), len(config)) + config)


def read_config(disk: Path) -> tuple[str, bytes] | None:
    """What the stand-in flatcar-install wrote after the image: (kind, config), or None."""
    with disk.open("rb") as handle:
        handle.seek(CONFIG_OFFSET)
        header = handle.readline(200)
        fields = header.split()
        if len(fields) != 3 or fields[0] != CONFIG_HEADER or not fields[2].isdigit():
            return None
        return fields[1].decode(), handle.read(int(fields[2]))
