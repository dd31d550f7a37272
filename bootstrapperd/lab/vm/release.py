"""A local release mirror for the lab: the OS vendor's layout (``<channel>/amd64-usr/<version>/``
with detached OpenPGP signatures and ``current``) and dl.k8s.io's (``<version>/bin/linux/amd64/``
with ``.sha256`` files), written to a directory that ``bootstrapperd-pack`` reads through
``file://`` URLs, signed by a key made for the lab (gpg, ed25519)."""

from __future__ import annotations

import bz2
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BOARD = "amd64-usr"
IMAGE_HEADER = b"BOOTSTRAPPERD-LAB-IMAGE"


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


def disk_image(version: str, size: int = 1 << 20) -> bytes:
    """The stand-in install image: a header naming the version, then bytes derived from it."""
    header = IMAGE_HEADER + b" " + version.encode() + b"\n"
    block = b""
    counter = 0
    chunks = [header]
    total = len(header)
    while total < size:
        block = hashlib.sha256(block + version.encode() + counter.to_bytes(8, "big")).digest()
        chunks.append(block)
        total += len(block)
        counter += 1
    return b"".join(chunks)[:size]


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
