"""A BIOS-bootable disk image, built as a plain file: no root, no mounts, no loop devices (tests
build images in parallel).

The layout is a PC's: syslinux's MBR code and a DOS partition table (``sfdisk`` on the file),
one active FAT16 partition at :data:`PARTITION_START` (``mkfs.fat --offset``), the files copied
in with mtools (``mcopy -i file@@offset``), and syslinux installed into the partition
(``syslinux --offset --install``, which writes its boot sector, ``ldlinux.sys`` and
``ldlinux.c32`` through mtools too). The firmware runs the MBR code, which loads the active
partition's boot sector, which loads syslinux, which reads ``syslinux.cfg``.

Every value a tool would take from the clock or the random generator is fixed (volume ID, disk
ID, file times through ``SOURCE_DATE_EPOCH``), so the same files give the same image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..netlab import LabError

SECTOR = 512
PARTITION_START = 1 << 20  # where partitioning tools put the first partition (2048 sectors)
PARTITION_TYPE = 0x0E  # FAT16, LBA
MIN_FILESYSTEM = 4 << 20  # FAT16 needs 4085 clusters at least
SLACK = 512 << 10  # room for the FATs, the root directory and syslinux's own files
CLUSTER = 4 << 10  # rounding for the space of each file (mkfs.fat's clusters are smaller)
DISK_ID = "0x1ab0d15c"
VOLUME_ID = "1ab0d15c"
VOLUME_LABEL = "LAB-OS"
EPOCH = "1577836800"  # 2020-01-01: the time of every file on the partition
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
SBIN = (Path("/usr/sbin"), Path("/sbin"))  # mkfs.fat and sfdisk, outside a user's PATH
# Each tool and the Debian package it comes in.
TOOLS = (
    ("sfdisk", "fdisk"),
    ("mkfs.fat", "dosfstools"),
    ("mcopy", "mtools"),
    ("syslinux", "syslinux"),
)


class DiskError(LabError):
    """The image cannot be built here (a tool is missing or failed): one line, for the operator."""


def _which(tool: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *map(str, SBIN)])
    return shutil.which(tool, path=path)


def missing_packages() -> list[str]:
    """The Debian packages building a disk image needs and this machine lacks."""
    missing = [package for tool, package in TOOLS if _which(tool) is None]
    if not MBR_CODE.is_file():
        missing.append("syslinux-common")
    return missing


def _run(argv: list[str], stdin: bytes = b"") -> None:
    tool = _which(argv[0]) or argv[0]
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": EPOCH}
    result = subprocess.run(
        [tool, *argv[1:]], input=stdin, capture_output=True, env=env, timeout=120, check=False
    )
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise DiskError(f"{' '.join(argv)} failed: {' '.join(output.split())}")


def filesystem_size(files: Mapping[str, bytes]) -> int:
    """The partition's size for ``files``: whole MiBs, with room for FAT16 and syslinux."""
    needed = sum(-(-len(data) // CLUSTER) * CLUSTER for data in files.values()) + SLACK
    return max(MIN_FILESYSTEM, -(-needed // (1 << 20)) * (1 << 20))


def sectors_per_cluster(size: int) -> int:
    """The smallest cluster that keeps a FAT16 of ``size`` bytes under its 65524 clusters."""
    sectors = 1
    while size // (sectors * SECTOR) > 65_000:
        sectors *= 2
    return sectors


def bootable_disk(files: Mapping[str, bytes], syslinux_cfg: str) -> bytes:
    """The disk image: ``files`` (name → bytes, in the partition's root directory) and
    ``syslinux.cfg`` beside them."""
    missing = missing_packages()
    if missing:
        raise DiskError(
            f"the lab's bootable disk image needs missing Debian packages: {', '.join(missing)} "
            "(run scripts/setup.sh)"
        )
    contents = {**files, "syslinux.cfg": syslinux_cfg.encode()}
    size = filesystem_size(contents)
    first = PARTITION_START // SECTOR
    with tempfile.TemporaryDirectory(prefix="bootstrapperd-disk-") as tmp:
        work = Path(tmp)
        image = work / "disk.raw"
        with image.open("wb") as handle:
            handle.truncate(PARTITION_START + size)
        table = (
            f"label: dos\nlabel-id: {DISK_ID}\nstart={first}, type={PARTITION_TYPE:x}, bootable\n"
        )
        _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(image)], table.encode())
        _run(
            [
                *("mkfs.fat", "--invariant", "-F", "16", "-s", str(sectors_per_cluster(size))),
                *(f"--offset={first}", "-h", str(first)),
                *("-i", VOLUME_ID, "-n", VOLUME_LABEL, str(image), str(size >> 10)),
            ]
        )
        drive = f"{image}@@{PARTITION_START}"
        sources = []
        for name, data in contents.items():
            source = work / "files" / name
            source.parent.mkdir(exist_ok=True)
            source.write_bytes(data)
            sources.append(str(source))
        _run(["mcopy", "-i", drive, *sources, "::/"])
        _run(["syslinux", "--offset", str(PARTITION_START), "--install", str(image)])
        with image.open("r+b") as handle:
            handle.write(MBR_CODE.read_bytes()[:440])  # the code, not the table after it
        return image.read_bytes()
