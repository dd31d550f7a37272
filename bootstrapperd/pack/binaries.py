"""Kubernetes binaries and iPXE boot files for the bsroot.

Kubernetes publishes every binary at ``<base>/<version>/bin/linux/amd64/<name>`` with its
sha256 in ``<name>.sha256``; the binary is accepted only when it hashes to that. Versions are
immutable, so a binary whose hash matches the ``.sha256`` kept beside it is not fetched again.

iPXE comes from the distribution's ``ipxe`` package when the laptop has it (the same files
``bootstrapperd serve`` would otherwise lack), else from a configured URL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from ..bsroot.layout import write_atomically
from ..bsroot.manifest import sha256_file
from ..download.fetcher import Fetcher, FetchError

__all__ = [
    "IPXE_FILES",
    "IPXE_PACKAGE_DIRS",
    "KUBERNETES_BINARIES",
    "BinaryError",
    "fetch_ipxe",
    "fetch_kubernetes",
]

# kubelet runs on every node (the templates fetch it); kubectl is for the operator on masters
# and on the bootstrapper (the admin certificate is made for it).
KUBERNETES_BINARIES = ("kubelet", "kubectl")
IPXE_FILES = ("undionly.kpxe", "ipxe.efi")
IPXE_PACKAGE_DIRS = (Path("/usr/lib/ipxe"), Path("/usr/share/ipxe"))
_SHA256 = re.compile(r"^([0-9a-f]{64})\b")


class BinaryError(Exception):
    """A binary that cannot be packed; the message names it and the reason."""


async def fetch_kubernetes(
    fetcher: Fetcher,
    base: str,
    version: str,
    root: Path,
    names: Sequence[str] = KUBERNETES_BINARIES,
) -> list[Path]:
    """Each binary at ``root/<version>/<name>`` (mode 0755) with ``<name>.sha256`` beside it."""
    directory = root / version
    written: list[Path] = []
    for name in names:
        dest = directory / name
        sum_path = directory / f"{name}.sha256"
        if dest.exists() and sum_path.exists():
            known = _parse_sum(sum_path.read_text("ascii", "replace"))
            if known is not None and sha256_file(dest) == known:
                written += [dest, sum_path]
                continue
        url = f"{base.rstrip('/')}/{version}/bin/linux/amd64/{name}"
        try:
            published = await fetcher.fetch_bytes(url + ".sha256", label=f"{name}.sha256")
        except FetchError as exc:
            raise BinaryError(f"{name} {version}: no published checksum: {exc}") from None
        expected = _parse_sum(published.decode("ascii", "replace"))
        if expected is None:
            raise BinaryError(f"{name} {version}: {url}.sha256 holds no sha256")
        try:
            await fetcher.fetch(url, dest, sha256=expected, label=f"{name} {version}", mode=0o755)
        except FetchError as exc:
            raise BinaryError(str(exc)) from None
        write_atomically(sum_path, f"{expected}  {name}\n".encode())
        written += [dest, sum_path]
    return written


def _parse_sum(text: str) -> str | None:
    match = _SHA256.match(text.strip().lower())
    return match.group(1) if match else None


async def fetch_ipxe(
    fetcher: Fetcher,
    base: str,
    tftpboot: Path,
    *,
    package_dirs: Sequence[Path] = IPXE_PACKAGE_DIRS,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """``undionly.kpxe`` (BIOS) and ``ipxe.efi`` (UEFI) into ``tftpboot``."""
    written: list[Path] = []
    for name in IPXE_FILES:
        dest = tftpboot / name
        local = next((d / name for d in package_dirs if (d / name).is_file()), None)
        if local is not None:
            data = local.read_bytes()
            if not dest.exists() or sha256_file(dest) != hashlib.sha256(data).hexdigest():
                write_atomically(dest, data)
                log(f"copied {name} from {local}")
            written.append(dest)
            continue
        if dest.exists() and dest.stat().st_size > 0:
            # No published checksum to compare against: a file already fetched is kept.
            written.append(dest)
            continue
        try:
            await fetcher.fetch(f"{base.rstrip('/')}/{name}", dest, verify=_ipxe_check(name))
        except FetchError as exc:
            raise BinaryError(
                f"{name}: {exc} (or install the distribution's ipxe package)"
            ) from None
        written.append(dest)
    return written


def _ipxe_check(name: str) -> Callable[[Path], None]:
    """Refuse what cannot be an iPXE binary (an HTML error page served with 200, say)."""

    def check(path: Path) -> None:
        head = path.read_bytes()[:2]
        size = path.stat().st_size
        if name.endswith(".efi") and head != b"MZ":
            raise BinaryError(f"{name} is not an EFI executable")
        if size < 1024:
            raise BinaryError(f"{name} is {size} bytes: not an iPXE binary")

    return check
