"""The container images of a cluster, pulled over the registry API into ``bsroot/images/``.

Two archives: ``registry.tar`` holds the registry image itself (what ``serve`` loads into a
Docker engine to run the registry), ``cluster.tar`` every image the nodes run. Each is one tar
(OCI layout plus Docker's manifest.json: ``docker load`` and the daemon's pusher both read it)
in which a layer shared by several images is stored once.

Layers are kept between runs in a blob cache outside the bsroot (``--cache``, default
``~/.cache/bootstrapperd/blobs``), so the bsroot holds each layer once. A re-run asks the
registries only for the manifests (a tag may have moved); when every image still resolves to
the digest its archive holds, nothing is downloaded or rewritten. A blob missing from the cache
but present in the previous archive is copied out of it rather than fetched again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import aiohttp

from ..bsroot.layout import Bsroot
from ..download.fetcher import Fetcher
from ..model import ClusterModel, RegistryMode
from ..model.images import cluster_images
from ..oci.archive import ArchiveError, ImageArchive, write_archive
from ..oci.client import RegistryClient
from ..oci.manifest import PulledImage, ResolvedImage, blob_path

__all__ = ["CLUSTER_ARCHIVE", "REGISTRY_ARCHIVE", "ImagesError", "default_cache", "pack_images"]

CLUSTER_ARCHIVE = "cluster.tar"
REGISTRY_ARCHIVE = "registry.tar"


class ImagesError(Exception):
    """Images that could not be packed, each named with its reason."""


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bootstrapperd" / "blobs"


def archives_for(model: ClusterModel) -> dict[str, list[str]]:
    """Archive name → the original references it holds."""
    cluster = sorted(set(cluster_images(model).values()))
    groups: dict[str, list[str]] = {}
    if model.registry.mode in (RegistryMode.AUTO, RegistryMode.DOCKER):
        groups[REGISTRY_ARCHIVE] = [model.registry.image]
        cluster = [ref for ref in cluster if ref != model.registry.image]
    if cluster:
        groups[CLUSTER_ARCHIVE] = cluster
    return groups


async def pack_images(
    session: aiohttp.ClientSession,
    fetcher: Fetcher,
    model: ClusterModel,
    bsroot: Bsroot,
    registries: Mapping[str, str],
    cache: Path | None,
    say: Callable[[str], None],
) -> list[Path]:
    client = RegistryClient(session, endpoints=registries)
    blob_dir = cache or default_cache()
    groups = archives_for(model)
    written: list[Path] = []
    failures: list[str] = []
    for name, originals in groups.items():
        target = bsroot.images / name
        try:
            written.append(await _pack_archive(client, fetcher, target, originals, blob_dir, say))
        except ImagesError as exc:
            failures.append(str(exc))
    # An archive pack no longer makes (an image list emptied) must not be pushed on site.
    for stale in bsroot.images.glob("*.tar"):
        if stale.name not in groups:
            stale.unlink()
            say(f"removed {stale} (no longer in the description)")
    if failures:
        raise ImagesError("; ".join(failures))
    return written


async def _pack_archive(
    client: RegistryClient,
    fetcher: Fetcher,
    target: Path,
    originals: list[str],
    blob_dir: Path,
    say: Callable[[str], None],
) -> Path:
    resolved = await asyncio.gather(*(client.resolve(o) for o in originals), return_exceptions=True)
    _raise_failures(originals, resolved)
    images = [r for r in resolved if isinstance(r, ResolvedImage)]
    previous = _open_previous(target)
    if previous is not None and _holds(previous, images):
        for image in images:
            say(f"have {image.original} ({image.digest[:19]})")
        return target
    if previous is not None:
        _reuse_blobs(previous, images, blob_dir)
    pulled = await asyncio.gather(
        *(client.pull(image, blob_dir, fetcher) for image in images),
        return_exceptions=True,
    )
    _raise_failures([i.original for i in images], pulled)
    done = [p for p in pulled if isinstance(p, PulledImage)]
    try:
        archive = await asyncio.to_thread(write_archive, target, done)
    except (ArchiveError, OSError) as exc:
        raise ImagesError(f"{target.name}: {exc}") from None
    say(
        f"wrote {target}: {archive.images} images, {archive.blobs} blobs, "
        f"{archive.size / (1 << 20):.1f} MiB"
    )
    return target


def _raise_failures(originals: list[str], results: Sequence[object]) -> None:
    """One ImagesError naming every image whose resolve or pull raised."""
    failures = [
        f"{original}: {result}"
        for original, result in zip(originals, results, strict=True)
        if isinstance(result, BaseException)
    ]
    if failures:
        raise ImagesError(", ".join(failures))


def _open_previous(target: Path) -> ImageArchive | None:
    if not target.exists():
        return None
    try:
        return ImageArchive.open(target)
    except ArchiveError:
        return None  # unreadable: rebuilt from scratch


def _holds(archive: ImageArchive, images: list[ResolvedImage]) -> bool:
    have = {(i.original, i.digest) for i in archive.images}
    want = {(i.original, i.digest) for i in images}
    return have == want and all(archive.has_blob(b.digest) for i in images for b in i.blobs)


def _reuse_blobs(archive: ImageArchive, images: list[ResolvedImage], blob_dir: Path) -> None:
    """Copy out of the previous archive the blobs the cache lacks (the pull re-hashes them)."""
    for image in images:
        for blob in image.blobs:
            dest = blob_path(blob_dir, blob.digest)
            if dest.exists() or not archive.has_blob(blob.digest):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.reuse")
            with archive.open_blob(blob.digest) as src, tmp.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)
