"""The OS release a cluster installs: which files, from where, verified by signature.

Layout on the release servers (and in bsroot's mirror, ``html/static/<os>/<channel>/``)::

    https://<channel>.release.flatcar-linux.net/amd64-usr/<version>/flatcar_production_pxe.vmlinuz
    …/current/version.txt     FLATCAR_VERSION=<version> (what ``current`` is today)

CoreOS used the same layout at ``<channel>.release.core-os.net`` with ``coreos_`` names. A
mirror base URL (``--mirror`` or ``os.mirror``) replaces ``https://<channel>.release.<host>``;
``{channel}`` in it is replaced by the channel, so one mirror can hold every channel.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..bsroot.layout import write_atomically
from ..download.fetcher import Fetcher, FetchError
from ..model.types import OSConfig
from .signing import SignatureError, SigningKey

__all__ = ["BOARD", "Release", "ReleaseError", "fetch_release", "parse_version_txt"]

BOARD = "amd64-usr"
RELEASE_HOSTS = {"flatcar": "release.flatcar-linux.net", "coreos": "release.core-os.net"}
# Signed files every machine needs: the PXE kernel and initrd (live system), the disk image.
SIGNED = ("production_pxe.vmlinuz", "production_pxe_image.cpio.gz", "production_image.bin.bz2")
_VERSION = re.compile(r"^\d+(\.\d+)*$")


class ReleaseError(Exception):
    """The release cannot be packed: the message names the file and the reason."""


@dataclass(frozen=True)
class Release:
    os: str
    channel: str
    version: str
    files: tuple[Path, ...]  # every file written (or found good) under the version directory
    fetched: int  # how many were downloaded by this run


def base_url(os_config: OSConfig, mirror: str | None) -> str:
    """The URL that holds ``<version>/<file>`` for this OS and channel."""
    base = mirror or os_config.mirror
    if base is None:
        base = f"https://{os_config.channel}.{RELEASE_HOSTS[os_config.name]}"
    return f"{base.replace('{channel}', os_config.channel).rstrip('/')}/{BOARD}"


def parse_version_txt(text: str, os_name: str) -> str:
    """The release version named by a ``version.txt`` (``FLATCAR_VERSION=…``)."""
    keys = ("FLATCAR_VERSION", "COREOS_VERSION") if os_name == "flatcar" else ("COREOS_VERSION",)
    values = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    for key in keys:
        version = values.get(key, "").strip().strip("\"'")
        if _VERSION.fullmatch(version):
            return version
    raise ReleaseError(f"version.txt names no {keys[0]}=<version>")


async def fetch_release(
    fetcher: Fetcher,
    os_config: OSConfig,
    mirror_root: Path,
    key: SigningKey,
    *,
    mirror: str | None = None,
    log: Callable[[str], None] = print,
) -> Release:
    """Resolve the version, download the release files into ``mirror_root/<os>/<channel>/``,
    verify every signed file against ``key`` before it takes its final name, point ``current``
    at the version (a relative symlink). A file already present and verified is not fetched."""
    base = base_url(os_config, mirror)
    channel_dir = mirror_root / os_config.name / os_config.channel
    version = os_config.version
    current_txt: bytes | None = None
    if version == "current":
        try:
            current_txt = await fetcher.fetch_bytes(
                f"{base}/current/version.txt", label="version.txt (current)"
            )
        except FetchError as exc:
            raise ReleaseError(f"cannot resolve 'current': {exc}") from None
        version = parse_version_txt(current_txt.decode("utf-8", "replace"), os_config.name)
        log(f"{os_config.name} {os_config.channel}: current is {version}")
    version_dir = channel_dir / version
    files: list[Path] = []
    fetched = 0
    prefix = os_config.name
    for suffix in SIGNED:
        name = f"{prefix}_{suffix}"
        got = await _fetch_signed(fetcher, f"{base}/{version}/{name}", version_dir / name, key)
        files += [version_dir / name, version_dir / f"{name}.sig"]
        fetched += got
    txt = version_dir / "version.txt"
    if current_txt is not None:
        write_atomically(txt, current_txt)
    elif not txt.exists():
        result = await fetcher.fetch(f"{base}/{version}/version.txt", txt, label="version.txt")
        fetched += result.downloaded > 0
    try:
        named = parse_version_txt(txt.read_text("utf-8", "replace"), os_config.name)
    except ReleaseError as exc:
        raise ReleaseError(f"{txt}: {exc}") from None
    if named != version:
        raise ReleaseError(f"{txt} names version {named}, not {version}")
    files.append(txt)
    _point_current(channel_dir, version)
    return Release(os_config.name, os_config.channel, version, tuple(files), fetched)


async def _fetch_signed(fetcher: Fetcher, url: str, dest: Path, key: SigningKey) -> int:
    """Fetch ``dest`` and its ``.sig``; 1 when the file was downloaded, 0 when it was good."""
    sig_path = dest.with_name(dest.name + ".sig")
    if dest.exists() and sig_path.exists():  # noqa: ASYNC240 (two stats of local files)
        # Release files never change once published: a local file its local signature
        # vouches for is the file, with no request at all.
        try:
            key.verify(dest, sig_path.read_bytes())
            return 0
        except SignatureError:
            pass
    try:
        signature = await fetcher.fetch_bytes(url + ".sig", label=f"{dest.name}.sig")
    except FetchError as exc:
        raise ReleaseError(f"{dest.name}: no signature: {exc}") from None

    def verify(path: Path) -> None:
        key.verify(path, signature, dest.name)

    try:
        result = await fetcher.fetch(url, dest, verify=verify, label=dest.name)
    except FetchError as exc:
        raise ReleaseError(str(exc)) from None
    # The signature is written only after the file it signs was accepted.
    write_atomically(sig_path, signature)
    return 1 if result.downloaded else 0


def _point_current(channel_dir: Path, version: str) -> None:
    link = channel_dir / "current"
    try:
        if os.readlink(link) == version:
            return
    except OSError:
        pass
    tmp = channel_dir / f".current.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(version, tmp)  # relative: the bsroot can be copied anywhere
    os.replace(tmp, link)
