"""One tar file holding many container images, as pack writes it under ``bsroot/images/`` and
serve's pusher reads it.

The tar is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) that is
also a ``docker save`` archive (``manifest.json``, ``repositories``), so ``docker load -i`` takes
it as it is. Every blob is stored once, as the registry served it (layers stay compressed);
layers shared between images appear once. ``index.json`` has one entry per image, annotated
with the image's full name (``io.containerd.image.name``), its tag
(``org.opencontainers.image.ref.name``) and the reference as the cluster description wrote it
(``org.bootstrapperd.original``), which names the image on the bootstrapper's registry.

Writing is deterministic (sorted members, fixed owner and time, sorted JSON) and atomic (a
temporary file beside the target, renamed over it). Reading never loads a layer into memory:
each blob is a region (offset, size) of the tar file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .client import MANIFEST_LIMIT
from .manifest import (
    Descriptor,
    PulledImage,
    RegistryError,
    manifest_media_type,
    parse_image_manifest,
    sha256_digest,
    unique_blobs,
)
from .reference import DIGEST_RE, ImageReference, parse_reference

OCI_LAYOUT = '{"imageLayoutVersion":"1.0.0"}'
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ANNOTATION_NAME = "io.containerd.image.name"
ANNOTATION_REF = "org.opencontainers.image.ref.name"
ANNOTATION_ORIGINAL = "org.bootstrapperd.original"
ANNOTATION_INDEX_DIGEST = "org.bootstrapperd.index-digest"
BLOB_DIR = "blobs/sha256"
MTIME = 946684800  # 2000-01-01: fixed for byte-identical archives; 0 makes GNU tar complain
_CHUNK = 1 << 20
_JSON_LIMIT = 64 << 20  # index.json / manifest.json / configs: far beyond any real one


class ArchiveError(Exception):
    """The archive is missing something or holds corrupt data; the message names the archive,
    the member and the image."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]


@dataclass(frozen=True)
class ArchivedImage:
    """One image in an archive: its manifest (bytes as pulled) and what it refers to."""

    original: str  # the reference as the cluster description wrote it
    reference: ImageReference
    digest: str
    manifest: bytes
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    index_digest: str | None = None  # the list/index the manifest was picked from, if any

    @property
    def name(self) -> str:
        """Full normalized reference (``docker.io/library/busybox:latest``)."""
        return str(self.reference)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return unique_blobs((self.config, *self.layers))


@dataclass(frozen=True)
class BlobRegion:
    """Where a blob's bytes are inside the tar file."""

    member: str
    offset: int
    size: int


@dataclass(frozen=True)
class WrittenArchive:
    path: Path
    size: int
    images: int
    blobs: int


def blob_member(digest: str) -> str:
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"{BLOB_DIR}/{digest.removeprefix('sha256:')}"


# -- Writing ---------------------------------------------------------------------------------


def write_archive(target: Path, images: Iterable[PulledImage]) -> WrittenArchive:
    """Write ``images`` into one tar at ``target`` (replaced atomically). Each blob file is
    hashed while it is copied: a blob changed on disk since it was pulled is an ArchiveError,
    not a bad archive. The same images, in any order, give a byte-identical file."""
    by_original: dict[str, PulledImage] = {}
    for image in images:
        by_original.setdefault(image.original, image)
    ordered = [by_original[k] for k in sorted(by_original)]
    if not ordered:
        raise ArchiveError(f"{target}: no images to archive")
    files: dict[str, Path] = {}  # member → file to copy
    sizes: dict[str, int] = {}
    inline: dict[str, bytes] = {}  # member → bytes (manifests, JSON)
    owners: dict[str, str] = {}  # member → an image that uses it, for errors
    for image in ordered:
        resolved = image.resolved
        inline[blob_member(resolved.digest)] = resolved.manifest
        owners.setdefault(blob_member(resolved.digest), f"{image.original} manifest")
        for i, blob in enumerate(resolved.blobs):
            member = blob_member(blob.digest)
            owners.setdefault(member, f"{image.original} {'config' if i == 0 else 'layer'}")
            files.setdefault(member, image.blob_path(blob.digest))
            sizes[member] = blob.size
    inline["index.json"] = _index_json(ordered)
    inline["manifest.json"] = _docker_manifest(ordered)
    inline["repositories"] = _repositories(ordered)
    inline["oci-layout"] = OCI_LAYOUT.encode()

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for directory in ("blobs", BLOB_DIR):
                    tar.addfile(_tarinfo(directory, 0, directory=True))
                for member in sorted({*files, *inline}):
                    if member in inline:
                        data = inline[member]
                        tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
                    else:
                        _add_blob_file(tar, member, files[member], sizes[member], owners[member])
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)
        size = tmp.stat().st_size
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    blobs = len({*files, *(m for m in inline if m.startswith(BLOB_DIR))})
    return WrittenArchive(path=target, size=size, images=len(ordered), blobs=blobs)


def _tarinfo(name: str, size: int, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info


class _HashingReader:
    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        self.count += len(data)
        return data


def _add_blob_file(tar: tarfile.TarFile, member: str, path: Path, size: int, owner: str) -> None:
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise ArchiveError(f"{owner}: blob {path} is missing (not pulled?)") from None
    if actual != size:
        raise ArchiveError(f"{owner}: blob {path} has {actual} bytes, the manifest says {size}")
    with path.open("rb") as raw:
        reader = _HashingReader(raw)
        tar.addfile(_tarinfo(member, size), reader)
    expected = member.rpartition("/")[2]
    if reader.count != size or reader.hash.hexdigest() != expected:
        raise ArchiveError(
            f"{owner}: blob {path} no longer hashes to sha256:{expected} (changed since pulled)"
        )


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _index_json(images: Sequence[PulledImage]) -> bytes:
    manifests = []
    for image in images:
        resolved = image.resolved
        ref = resolved.reference
        annotations = {ANNOTATION_NAME: str(ref), ANNOTATION_ORIGINAL: ref.original}
        if ref.tag is not None:
            annotations[ANNOTATION_REF] = ref.tag
        if resolved.index_digest is not None:
            annotations[ANNOTATION_INDEX_DIGEST] = resolved.index_digest
        manifests.append(
            {
                "mediaType": resolved.media_type,
                "digest": resolved.digest,
                "size": len(resolved.manifest),
                "annotations": annotations,
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        )
    return _dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def _docker_manifest(images: Sequence[PulledImage]) -> bytes:
    """``docker save``'s manifest.json: one entry per image (config + layers), with every
    tagged name it goes by in ``RepoTags`` as ``docker images`` shows them. Docker's loader
    wants names with a tag: an image referenced only by digest loads untagged."""
    entries: dict[tuple[str, tuple[str, ...]], set[str]] = {}
    for image in images:
        resolved = image.resolved
        key = (
            blob_member(resolved.config.digest),
            tuple(blob_member(layer.digest) for layer in resolved.layers),
        )
        tags = entries.setdefault(key, set())
        if resolved.reference.repo_tag is not None:
            tags.add(resolved.reference.repo_tag)
    doc = [
        {"Config": config, "RepoTags": sorted(tags), "Layers": list(layers)}
        for (config, layers), tags in sorted(entries.items())
    ]
    return _dumps(doc)


def _repositories(images: Sequence[PulledImage]) -> bytes:
    """The legacy ``repositories`` file: name → tag → image ID (the config's hex digest)."""
    repos: dict[str, dict[str, str]] = {}
    for image in images:
        ref = image.resolved.reference
        if ref.tag is not None:
            repos.setdefault(ref.familiar_name, {})[ref.tag] = image.resolved.config.hex
    return _dumps(repos)


# -- Reading ---------------------------------------------------------------------------------


class _RegionReader(io.RawIOBase):
    """A file-like view of one region of a file (read-only, from its start)."""

    def __init__(self, path: Path, region: BlobRegion) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._file.seek(region.offset)
        self._left = region.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        got = self._file.readinto(view[:want])
        if not got:
            raise ArchiveError(f"{self._file.name}: truncated inside a blob")
        self._left -= got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


class ImageArchive:
    """An archive opened for reading: its images and where each blob is."""

    def __init__(
        self, path: Path, images: list[ArchivedImage], regions: dict[str, BlobRegion]
    ) -> None:
        self.path = path
        self.images = images
        self.regions = regions  # member name → region

    @classmethod
    def open(cls, path: Path) -> ImageArchive:
        """Read the tar's headers, index.json and every image's manifest (checked against its
        digest). Layers are not read: :meth:`verify` does that."""
        regions: dict[str, BlobRegion] = {}
        try:
            with tarfile.open(path, mode="r:") as tar:
                for info in tar:
                    if info.isfile():
                        name = info.name.removeprefix("./")
                        regions[name] = BlobRegion(name, info.offset_data, info.size)
        except (tarfile.TarError, EOFError) as exc:
            raise ArchiveError(f"{path}: not a readable tar file: {exc}") from None
        archive = cls(path, [], regions)
        if "index.json" not in regions:
            raise ArchiveError(f"{path}: member index.json is missing (not an image archive)")
        index = archive._json_member("index.json", "the image index")
        entries = index.get("manifests")
        if not isinstance(entries, list):
            raise ArchiveError(f"{path}: member index.json has no manifests list")
        for i, entry in enumerate(entries):
            archive.images.append(archive._read_image(i, entry))
        return archive

    def _read_image(self, i: int, entry: object) -> ArchivedImage:
        where = f"{self.path}: index.json entry {i}"
        if not isinstance(entry, dict):
            raise ArchiveError(f"{where}: not an object")
        annotations = entry.get("annotations") or {}
        original = annotations.get(ANNOTATION_ORIGINAL) or annotations.get(ANNOTATION_NAME)
        if not isinstance(original, str) or not original:
            raise ArchiveError(f"{where}: no {ANNOTATION_ORIGINAL} or {ANNOTATION_NAME}")
        try:
            reference = parse_reference(original)
        except ValueError as exc:
            raise ArchiveError(f"{where}: {exc}") from None
        digest = entry.get("digest")
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
            raise ArchiveError(f"{where} ({original}): bad digest {digest!r}")
        member = blob_member(digest)
        if member not in self.regions:
            raise ArchiveError(f"{self.path}: member {member} ({original} manifest) is missing")
        manifest = self.read_blob(digest, limit=MANIFEST_LIMIT)
        if sha256_digest(manifest) != digest:
            raise ArchiveError(
                f"{self.path}: member {member} ({original} manifest) is corrupt: content "
                f"hashes to {sha256_digest(manifest)}"
            )
        try:
            media = manifest_media_type(manifest, entry.get("mediaType"))
            config, layers = parse_image_manifest(manifest, media)
        except RegistryError as exc:
            where = f"{self.path}: member {member} ({original} manifest)"
            raise ArchiveError(f"{where}: {exc}") from None
        index_digest = annotations.get(ANNOTATION_INDEX_DIGEST)
        return ArchivedImage(
            original=original,
            reference=reference,
            digest=digest,
            manifest=manifest,
            media_type=media,
            config=config,
            layers=layers,
            index_digest=index_digest if isinstance(index_digest, str) else None,
        )

    def _json_member(self, member: str, what: str) -> dict[str, Any]:
        region = self.regions[member]
        if region.size > _JSON_LIMIT:
            raise ArchiveError(f"{self.path}: member {member} ({what}) is implausibly large")
        with self._open_region(region) as f:
            data = f.read()
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            where = f"{self.path}: member {member} ({what})"
            raise ArchiveError(f"{where} is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ArchiveError(f"{self.path}: member {member} ({what}) is not a JSON object")
        return doc

    def _open_region(self, region: BlobRegion) -> IO[bytes]:
        return io.BufferedReader(_RegionReader(self.path, region), _CHUNK)

    # -- Blobs --------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return blob_member(digest) in self.regions

    def blob_region(self, digest: str) -> BlobRegion:
        member = blob_member(digest)
        try:
            return self.regions[member]
        except KeyError:
            raise ArchiveError(f"{self.path}: member {member} is missing") from None

    def open_blob(self, digest: str) -> IO[bytes]:
        """A file object reading just that blob's bytes (close it, or use ``with``)."""
        return self._open_region(self.blob_region(digest))

    def read_blob(self, digest: str, *, limit: int = _JSON_LIMIT) -> bytes:
        """A small blob (manifest, config) in memory; larger than ``limit`` is an error."""
        region = self.blob_region(digest)
        if region.size > limit:
            raise ArchiveError(f"{self.path}: member {region.member} is larger than {limit}")
        with self._open_region(region) as f:
            return f.read()

    async def iter_blob(self, digest: str, chunk_size: int = _CHUNK) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks, read in a worker thread (the event loop never waits for
        the disk)."""
        f = await asyncio.to_thread(self.open_blob, digest)
        try:
            while chunk := await asyncio.to_thread(f.read, chunk_size):
                yield chunk
        finally:
            f.close()

    # -- Verification -------------------------------------------------------------------------

    def verify(self) -> None:
        """Re-hash every blob and check index → manifest → config and layers, and Docker's
        manifest.json; ArchiveError lists every missing or corrupt member with its images."""
        users: dict[str, list[str]] = {}
        problems: list[str] = []
        expected_size: dict[str, int] = {}
        for image in self.images:
            users.setdefault(blob_member(image.digest), []).append(f"{image.original} manifest")
            expected_size[blob_member(image.digest)] = len(image.manifest)
            n = len(image.layers)
            described = [(image.config, "config")]
            described += [(layer, f"layer {i + 1}/{n}") for i, layer in enumerate(image.layers)]
            for blob, kind in described:
                member = blob_member(blob.digest)
                users.setdefault(member, []).append(f"{image.original} {kind}")
                expected_size[member] = blob.size
        for member in sorted(users):
            used_by = ", ".join(dict.fromkeys(users[member]))
            region = self.regions.get(member)
            if region is None:
                problems.append(f"member {member} is missing ({used_by})")
            elif region.size != expected_size[member]:
                problems.append(
                    f"member {member} has {region.size} bytes, {expected_size[member]} expected "
                    f"({used_by})"
                )
        for member, region in sorted(self.regions.items()):
            if not member.startswith(BLOB_DIR + "/"):
                continue
            actual = self._hash_region(region)
            if actual != member.rpartition("/")[2]:
                used_by = ", ".join(dict.fromkeys(users.get(member, ["no image"])))
                problems.append(
                    f"member {member} is corrupt: content hashes to sha256:{actual} ({used_by})"
                )
        problems += self._check_docker_manifest()
        if problems:
            head = f"{self.path}: {len(problems)} problem(s): " + "; ".join(problems[:5])
            if len(problems) > 5:
                head += f"; and {len(problems) - 5} more"
            raise ArchiveError(head, problems)

    def _hash_region(self, region: BlobRegion) -> str:
        digest = hashlib.sha256()
        with self._open_region(region) as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def _check_docker_manifest(self) -> list[str]:
        """What ``docker load`` needs: manifest.json's files exist and every config lists as many
        diff IDs as there are layers."""
        if "manifest.json" not in self.regions:
            return ["member manifest.json is missing (docker load needs it)"]
        region = self.regions["manifest.json"]
        try:
            with self._open_region(region) as f:
                doc = json.loads(f.read(_JSON_LIMIT))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return [f"member manifest.json is not JSON: {exc}"]
        if not isinstance(doc, list):
            return ["member manifest.json is not a list"]
        problems: list[str] = []
        for i, entry in enumerate(doc):
            if not isinstance(entry, dict):
                problems.append(f"manifest.json entry {i} is not an object")
                continue
            tags = ", ".join(entry.get("RepoTags") or []) or f"entry {i}"
            config = entry.get("Config")
            layers = entry.get("Layers")
            if not isinstance(config, str) or not isinstance(layers, list):
                problems.append(f"manifest.json entry {i} ({tags}) lacks Config or Layers")
                continue
            for path in [config, *layers]:
                if path not in self.regions:
                    problems.append(f"member {path} is missing (manifest.json, {tags})")
            if config not in self.regions:
                continue
            try:
                with self._open_region(self.regions[config]) as f:
                    cfg = json.loads(f.read(_JSON_LIMIT))
                diff_ids = cfg["rootfs"]["diff_ids"]
            except (UnicodeDecodeError, ValueError, KeyError, TypeError):
                problems.append(f"member {config} is not an image config with rootfs ({tags})")
                continue
            if len(diff_ids) != len(layers):
                problems.append(
                    f"member {config} lists {len(diff_ids)} diff IDs for {len(layers)} layers "
                    f"({tags})"
                )
        return problems
