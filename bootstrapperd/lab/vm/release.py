"""A local release mirror for the lab: the OS vendor's layout (``<channel>/amd64-usr/<version>/``
with detached OpenPGP signatures and ``current``) and dl.k8s.io's (``<version>/bin/linux/amd64/``
with ``.sha256`` files), written to a directory that ``bootstrapperd-pack`` reads through
``file://`` URLs, signed by a key made for the lab (gpg, ed25519).

The release's install image (``flatcar_production_image.bin.bz2``) is a BIOS-bootable disk
(disk.py): syslinux boots the lab's kernel with the installed system's initramfs (initramfs.py),
so a machine the stand-in ``flatcar-install`` installed boots from its disk into the release it
got, and reports itself."""

from __future__ import annotations

import bz2
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .disk import DiskError, bootable_disk
from .initramfs import CONFIG_OFFSET, build_installed_initramfs
from .kernel import Kernel, ensure_kernel

BOARD = "amd64-usr"
# The installed system's boot: the kernel's console on the serial port (the lab's console log),
# and a machine that stops, instead of hanging, if the kernel cannot go on.
SYSLINUX_CFG = """\
# bootstrapperd lab: the stand-in OS {version}, installed (bootstrapperd/lab/vm/release.py)
SERIAL 0 115200
DEFAULT installed
PROMPT 0
TIMEOUT 0
LABEL installed
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0,115200n8 panic=-1
"""


@dataclass(frozen=True)
class ReleaseKey:
    """An OpenPGP signing key made for the lab or a test (ed25519, no passphrase)."""

    home: Path  # GNUPGHOME holding the secret key
    armored: bytes
    fingerprint: str

    @classmethod
    def create(cls, directory: Path, name: str = "Test Release Signer") -> ReleaseKey:
        home = directory / "gnupg"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {**os.environ, "GNUPGHOME": str(home)}
        subprocess.run(
            [
                *("gpg", "--batch", "--passphrase", "", "--quick-gen-key"),
                *(f"{name} <t@test>", "ed25519", "sign", "never"),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        armored = subprocess.run(
            ["gpg", "--armor", "--export"], env=env, check=True, capture_output=True
        ).stdout
        listing = subprocess.run(
            ["gpg", "--with-colons", "--list-keys"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        return cls(home, armored, fingerprint)

    def sign(self, data: bytes) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data"
            path.write_bytes(data)
            subprocess.run(
                ["gpg", "--batch", "--detach-sign", "-o", f"{path}.sig", str(path)],
                env={**os.environ, "GNUPGHOME": str(self.home)},
                check=True,
                capture_output=True,
            )
            return Path(f"{path}.sig").read_bytes()

    def close(self) -> None:
        """Stop the gpg-agent that gpg started for this key's home (it would outlive us)."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            check=False,
        )

    def __enter__(self) -> ReleaseKey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def version_txt(os_name: str, version: str) -> bytes:
    prefix = os_name.upper()
    return f"{prefix}_BUILD=1\n{prefix}_VERSION={version}\n{prefix}_VERSION_ID={version}\n".encode()


def disk_image(version: str, kernel: Kernel | None = None) -> bytes:
    """The stand-in install image: a disk that boots ``kernel`` (the lab's, by default) into
    the installed system of release ``version``. It must end before :data:`CONFIG_OFFSET`,
    where the stand-in ``flatcar-install`` puts the machine's config."""
    kernel = kernel or ensure_kernel()
    files = {
        "vmlinuz": kernel.vmlinuz.read_bytes(),
        "initrd.img": build_installed_initramfs(kernel, version),
    }
    image = bootable_disk(files, SYSLINUX_CFG.format(version=version))
    if len(image) > CONFIG_OFFSET:
        raise DiskError(
            f"the install image ({len(image)} bytes) reaches CONFIG_OFFSET ({CONFIG_OFFSET}), "
            "where the machine's config goes: raise CONFIG_OFFSET in lab/vm/initramfs.py"
        )
    return image


@dataclass(frozen=True)
class StandInRelease:
    version: str
    kernel: bytes
    initramfs: bytes
    image: bytes  # uncompressed: what must end up on each machine's disk

    def files(self, os_name: str = "flatcar") -> dict[str, bytes]:
        return {
            f"{os_name}_production_pxe.vmlinuz": self.kernel,
            f"{os_name}_production_pxe_image.cpio.gz": self.initramfs,
            f"{os_name}_production_image.bin.bz2": bz2.compress(self.image, 1),
        }


def write_mirror(
    root: Path,
    key: ReleaseKey,
    release: StandInRelease,
    channel: str,
    kubernetes: Mapping[str, Mapping[str, bytes]] | None = None,
    os_name: str = "flatcar",
) -> Path:
    """The mirror tree under ``root``; returns ``root``. ``kubernetes``: version → name → bytes."""
    base = root / channel / BOARD
    directory = base / release.version
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in release.files(os_name).items():
        (directory / name).write_bytes(data)
        (directory / f"{name}.sig").write_bytes(key.sign(data))
    (directory / "version.txt").write_bytes(version_txt(os_name, release.version))
    (base / "current").mkdir(exist_ok=True)
    (base / "current" / "version.txt").write_bytes(version_txt(os_name, release.version))
    for version, binaries in (kubernetes or {}).items():
        bin_dir = root / "kubernetes" / version / "bin" / "linux" / "amd64"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name, data in binaries.items():
            (bin_dir / name).write_bytes(data)
            (bin_dir / f"{name}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    (root / "signing-key.asc").write_bytes(key.armored)
    return root


def stand_in_binary(name: str, version: str) -> bytes:
    """A stand-in for a Kubernetes binary: a script that says what it stands for."""
    return f"#!/bin/sh\necho 'bootstrapperd lab stand-in for {name} {version}'\n".encode()
