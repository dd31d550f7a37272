"""The lab's stand-in install image is a BIOS-bootable disk: syslinux's MBR code, one bootable
FAT partition holding syslinux, its configuration, the lab's kernel and the installed OS's
initramfs. Read back here with the MBR's own layout and mtools, independently of the builder."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest

from bootstrapperd.lab.vm import disk, initramfs, release
from bootstrapperd.lab.vm.kernel import Kernel, find_kernel
from tests.conftest import need

VERSION = "4242.1.0"
FILES = {"vmlinuz": b"a stand-in kernel\n" * 1000, "initrd.img": b"a stand-in initrd\n" * 3000}
CFG = "DEFAULT os\nLABEL os\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n"


def _need_tools() -> None:
    missing = disk.missing_packages()
    need(not missing, f"missing Debian packages: {', '.join(missing)}")


def _need_kernel() -> Kernel:
    _need_tools()
    kernel = find_kernel()
    need(kernel is not None, "no lab kernel (python -m bootstrapperd.lab.vm.kernel fetches it)")
    assert kernel is not None
    return kernel


def _entries(image: bytes) -> list[tuple[int, int, int, int]]:
    """The MBR's used partition entries: (status, type, first sector, sectors)."""
    assert image[510:512] == b"\x55\xaa", "no MBR signature"
    entries = []
    for index in range(4):
        entry = image[446 + 16 * index : 446 + 16 * (index + 1)]
        status, kind = entry[0], entry[4]
        first, sectors = struct.unpack("<II", entry[8:16])
        if kind:
            entries.append((status, kind, first, sectors))
    return entries


def _fat(tmp_path: Path, image: bytes) -> str:
    """The mtools drive spec of the image's first partition (written to ``tmp_path``)."""
    path = tmp_path / "image.raw"
    path.write_bytes(image)
    first = _entries(image)[0][2]
    return f"{path}@@{first * 512}"


def _listing(drive: str) -> set[str]:
    result = subprocess.run(
        ["mdir", "-a", "-b", "-i", drive, "::/"],
        capture_output=True,
        text=True,
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    return {line.rsplit("/", 1)[-1].lower() for line in result.stdout.split()}


def _read(drive: str, name: str) -> bytes:
    return subprocess.run(
        ["mcopy", "-n", "-i", drive, f"::/{name}", "-"],
        capture_output=True,
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    ).stdout


def _cpio_files(archive: bytes) -> dict[str, bytes]:
    """The regular files of a gzipped newc archive, by name."""
    data = gzip.decompress(archive)
    files: dict[str, bytes] = {}
    offset = 0
    while True:
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + name_size - 1].decode()
        data_start = name_start + name_size + (-(110 + name_size) % 4)
        if name == "TRAILER!!!":
            return files
        if mode & 0o170000 == 0o100000:
            files[name] = data[data_start : data_start + size]
        offset = data_start + size + (-size % 4)


def test_the_image_has_an_mbr_with_syslinux_code_and_one_bootable_partition() -> None:
    _need_tools()
    image = disk.bootable_disk(FILES, CFG)
    assert image[:440] == disk.MBR_CODE.read_bytes()[:440]
    entries = _entries(image)
    assert len(entries) == 1
    status, kind, first, sectors = entries[0]
    assert status == 0x80  # the active partition mbr.bin boots
    assert kind == 0x0E  # FAT16, LBA
    assert first * 512 == disk.PARTITION_START
    assert (first + sectors) * 512 == len(image)  # the image ends where the partition does


def test_the_partition_is_fat_with_syslinux_and_its_configuration(tmp_path: Path) -> None:
    _need_tools()
    image = disk.bootable_disk(FILES, CFG)
    start = disk.PARTITION_START
    boot_sector = image[start : start + 512]
    assert boot_sector[510:512] == b"\x55\xaa"
    assert boot_sector[54:62] == b"FAT16   "
    assert b"SYSLINUX" in boot_sector  # syslinux's boot sector, not mkfs.fat's
    hidden = struct.unpack("<I", boot_sector[28:32])[0]
    assert hidden * 512 == start  # where the file system is on the disk, for the boot sector
    drive = _fat(tmp_path, image)
    assert _listing(drive) >= {"ldlinux.sys", "ldlinux.c32", "syslinux.cfg", *FILES}
    assert _read(drive, "syslinux.cfg").decode() == CFG
    for name, data in FILES.items():
        assert _read(drive, name) == data


def test_the_same_input_makes_the_same_image() -> None:
    """pack signs the image once, but a rebuilt release must not differ for no reason."""
    _need_tools()
    assert disk.bootable_disk(FILES, CFG) == disk.bootable_disk(FILES, CFG)
    assert disk.bootable_disk(FILES, CFG) != disk.bootable_disk(FILES, CFG + "# other\n")


def test_the_partition_grows_with_its_files() -> None:
    _need_tools()
    big = {**FILES, "vmlinuz": bytes(range(256)) * (24 << 10)}  # 6 MiB
    image = disk.bootable_disk(big, CFG)
    _, _, first, sectors = _entries(image)[0]
    assert sectors * 512 > 6 << 20
    assert len(image) == (first + sectors) * 512


def test_missing_tools_are_named_by_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(disk, "SBIN", ())
    monkeypatch.setattr(disk, "MBR_CODE", Path("/nonexistent/mbr.bin"))
    assert set(disk.missing_packages()) == {
        "fdisk",
        "dosfstools",
        "mtools",
        "syslinux",
        "syslinux-common",
    }
    with pytest.raises(disk.DiskError, match="missing Debian packages: "):
        disk.bootable_disk(FILES, CFG)


def test_the_release_image_boots_the_lab_kernel_into_the_installed_os(tmp_path: Path) -> None:
    kernel = _need_kernel()
    image = release.disk_image(VERSION, kernel)
    drive = _fat(tmp_path, image)
    cfg = _read(drive, "syslinux.cfg").decode()
    lines = [line.split() for line in cfg.splitlines()]
    assert ["KERNEL", "/vmlinuz"] in lines
    assert ["INITRD", "/initrd.img"] in lines
    append = next(words for words in lines if words[:1] == ["APPEND"])
    assert "console=ttyS0,115200n8" in append
    assert _read(drive, "vmlinuz") == kernel.vmlinuz.read_bytes()
    installed = _cpio_files(_read(drive, "initrd.img"))
    init = installed["init"].decode()
    assert f'echo "{initramfs.MARK} $* uptime=' in init  # say: the console marker
    assert 'say "installed-os booted from disk version=$VERSION"' in init
    assert "/api/v1/nodes/$MAC/report" in init
    assert installed["etc/lab/version"].decode().strip() == VERSION
    assert "bin/flatcar-install" not in installed  # the installed OS installs nothing
    assert "virtio_net.ko" in " ".join(installed)


def test_the_config_and_the_image_do_not_overlap(tmp_path: Path) -> None:
    """flatcar-install writes the image at 0 and the config at CONFIG_OFFSET of the disk: the
    image must end before it, and the disk must hold both."""
    kernel = _need_kernel()
    image = release.disk_image(VERSION, kernel)
    assert len(image) <= initramfs.CONFIG_OFFSET < initramfs.DISK_SIZE
    target = initramfs.write_disk(tmp_path / "disk.raw")
    with target.open("r+b") as handle:
        handle.write(image)
    initramfs.write_config(target, "ignition", b'{"ignition": {}}')
    assert initramfs.read_config(target) == ("ignition", b'{"ignition": {}}')
    assert target.read_bytes()[: len(image)] == image
    assert target.stat().st_size == initramfs.DISK_SIZE


def test_an_image_too_big_for_the_disk_layout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = _need_kernel()
    monkeypatch.setattr(release, "CONFIG_OFFSET", 4 << 20)
    with pytest.raises(disk.DiskError, match="CONFIG_OFFSET"):
        release.disk_image(VERSION, kernel)


def test_flatcar_install_writes_the_config_where_it_is_read() -> None:
    script = initramfs.installer_script()
    assert f"seek={initramfs.CONFIG_OFFSET >> 20}" in script
    assert f'"$image" -gt {initramfs.CONFIG_OFFSET} ]' in script  # an image reaching it: refused
