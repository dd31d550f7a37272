"""The lab's kernel: Debian's ``linux-image-amd64`` package, downloaded with ``apt-get download``
and unpacked with ``dpkg -x`` into a cache directory (never installed on this machine).

``python -m bootstrapperd.lab.vm.kernel`` fetches it (``scripts/setup.sh`` does, so tests and the
demo find it); the cache is ``$BOOTSTRAPPERD_LAB_CACHE`` or ``~/.cache/bootstrapperd/lab``.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The modules the initramfs needs for a virtio NIC and disk, in load (dependency) order.
MODULES = (
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
    "drivers/block/virtio_blk",
)
META_PACKAGE = "linux-image-amd64"


class KernelError(RuntimeError):
    pass


@dataclass(frozen=True)
class Kernel:
    root: Path  # the unpacked package
    version: str  # e.g. 6.1.0-26-amd64

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    def module(self, name: str) -> bytes:
        """A module's object code (decompressed when the package ships it compressed)."""
        base = self.root / "lib" / "modules" / self.version / "kernel" / name
        for suffix, read in ((".ko", Path.read_bytes), (".ko.xz", _read_xz)):
            path = base.with_name(base.name + suffix)
            if path.is_file():
                return read(path)
        raise KernelError(f"the kernel {self.version} has no module {name} under {self.root}")

    def modules(self) -> dict[str, bytes]:
        """Every module the lab's initramfs loads, by file name (``virtio_net.ko``), in order."""
        return {Path(name).name + ".ko": self.module(name) for name in MODULES}


def _read_xz(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes())


def cache_dir() -> Path:
    configured = os.environ.get("BOOTSTRAPPERD_LAB_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "bootstrapperd" / "lab"


def find_kernel(cache: Path | None = None) -> Kernel | None:
    """The newest unpacked kernel in the cache, or None."""
    found = []
    for vmlinuz in (cache or cache_dir()).glob("kernel-*/boot/vmlinuz-*"):
        found.append(Kernel(vmlinuz.parent.parent, vmlinuz.name.removeprefix("vmlinuz-")))
    found.sort(key=lambda k: [int(p) if p.isdigit() else p for p in re.split(r"[.-]", k.version)])
    return found[-1] if found else None


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise KernelError(
            f"{argv[0]} is not installed (a Debian or Ubuntu machine is needed)"
        ) from exc
    if result.returncode != 0:
        raise KernelError(f"{' '.join(argv)} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def kernel_package() -> str:
    """The versioned package ``linux-image-amd64`` depends on (linux-image-6.1.0-…-amd64)."""
    listing = _run(["apt-cache", "depends", META_PACKAGE])
    for line in listing.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\d\S*)", line)
        if match:
            return match.group(1)
    raise KernelError(f"apt-cache depends {META_PACKAGE} names no kernel package:\n{listing}")


def ensure_kernel(cache: Path | None = None) -> Kernel:
    """The cached kernel, downloading and unpacking it first when there is none."""
    cache = cache or cache_dir()
    kernel = find_kernel(cache)
    if kernel is not None:
        return kernel
    package = kernel_package()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        work = Path(tmp)
        _run(["apt-get", "download", package], cwd=work)
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise KernelError(f"apt-get download {package} left no .deb")
        unpacked = work / "root"
        _run(["dpkg", "-x", str(debs[0]), str(unpacked)])
        target = cache / f"kernel-{package.removeprefix('linux-image-')}"
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)  # complete or absent: never half a kernel in the cache
    kernel = find_kernel(cache)
    if kernel is None:
        raise KernelError(f"{package} holds no /boot/vmlinuz-*")
    kernel.modules()  # every module the initramfs needs is there
    return kernel


def main() -> int:
    try:
        kernel = ensure_kernel()
    except KernelError as exc:
        print(f"lab kernel: {exc}", file=sys.stderr)
        return 1
    print(f"lab kernel: {kernel.version} in {kernel.root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
