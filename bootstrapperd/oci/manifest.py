"""The image formats of the registry API and OCI layouts: media types, content descriptors,
Docker v2 and OCI manifests and indexes (validated, resolved to linux/amd64), and the errors a
registry's answers can raise. Read by the client that pulls, the archive writer and reader, and
the pusher; no I/O here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .reference import DIGEST_RE, ImageReference

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

IMAGE_MANIFESTS = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
MANIFEST_LISTS = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
SCHEMA1 = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
CONFIG_TYPES = frozenset({DOCKER_CONFIG, OCI_CONFIG})
LAYER_PREFIXES = ("application/vnd.docker.image.rootfs.", "application/vnd.oci.image.layer.")
ACCEPT = ", ".join((DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX))
PLATFORM = ("linux", "amd64")  # the one platform pulled


class RegistryError(Exception):
    """A registry answered something this client cannot use; the message says what and where."""


class CredentialsNeeded(RegistryError):
    """The registry wants a login (Basic auth, or tokens it refuses to hand out anonymously)."""


class UnsupportedManifest(RegistryError):
    """Schema 1 manifests, artifacts that are not container images, unknown media types."""


class PlatformNotFound(RegistryError):
    """A manifest list or index without a linux/amd64 entry."""


class DigestMismatch(RegistryError):
    """Content whose sha256 is not the digest it was asked for or announced with."""


class TLSFailure(RegistryError):
    """The TLS handshake failed (unknown CA, wrong name): trying again will not help."""


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor (sha256 only: the digest names a file, so it is validated)."""

    media_type: str
    digest: str
    size: int

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ResolvedImage:
    """One image's linux/amd64 manifest, verified, and what it refers to.

    ``index_digest`` is the manifest list or index it was picked from (None when the reference
    named an image manifest directly).
    """

    reference: ImageReference
    manifest: bytes
    media_type: str
    digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    index_digest: str | None = None

    @property
    def original(self) -> str:
        return self.reference.original

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config and layers, each digest once, config first."""
        return unique_blobs((self.config, *self.layers))


@dataclass(frozen=True)
class PulledImage:
    """A resolved image whose blobs are all in ``blob_dir/sha256/<hex>``."""

    resolved: ResolvedImage
    blob_dir: Path
    downloaded: int  # bytes transferred by this pull (0: everything was already there)
    fetched: tuple[str, ...] = ()  # digests this pull downloaded (not those already there)

    @property
    def original(self) -> str:
        return self.resolved.original

    def blob_path(self, digest: str) -> Path:
        return blob_path(self.blob_dir, digest)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(blob_dir: Path, digest: str) -> Path:
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return blob_dir / "sha256" / digest.removeprefix("sha256:")


def unique_blobs(descriptors: Sequence[Descriptor]) -> tuple[Descriptor, ...]:
    seen: dict[str, Descriptor] = {}
    for d in descriptors:
        seen.setdefault(d.digest, d)
    return tuple(seen.values())


def manifest_media_type(data: bytes, content_type: str | None = None) -> str:
    """The media type of a manifest: its own ``mediaType`` field (covered by its digest), else
    the Content-Type the registry sent, else what its shape says. Schema 1 is recognised so it
    can be refused by name."""
    doc = json_object(data, "manifest")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = (content_type or "").split(";")[0].strip().lower()
    if header in IMAGE_MANIFESTS | MANIFEST_LISTS | SCHEMA1:
        return header
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    raise UnsupportedManifest("manifest of unknown type (no mediaType, no config and layers)")


def parse_image_manifest(data: bytes, media_type: str) -> tuple[Descriptor, tuple[Descriptor, ...]]:
    """Config and layer descriptors of an image manifest (Docker v2 or OCI)."""
    if media_type in SCHEMA1:
        raise UnsupportedManifest(
            "Docker schema 1 manifests are not supported (the image is too old; push it again "
            "with a current Docker or pick a newer tag)"
        )
    if media_type not in IMAGE_MANIFESTS:
        raise UnsupportedManifest(f"not an image manifest: {media_type}")
    doc = json_object(data, "manifest")
    if doc.get("schemaVersion") != 2:
        raise UnsupportedManifest(f"manifest schemaVersion {doc.get('schemaVersion')!r}, not 2")
    config = parse_descriptor(doc.get("config"), "config")
    if config.media_type not in CONFIG_TYPES:
        raise UnsupportedManifest(
            f"not a container image: config media type {config.media_type} (an artifact?)"
        )
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise UnsupportedManifest("manifest has no layers list")
    layers = tuple(parse_descriptor(item, f"layer {i}") for i, item in enumerate(raw_layers))
    for i, layer in enumerate(layers):
        if not layer.media_type.startswith(LAYER_PREFIXES):
            raise UnsupportedManifest(f"layer {i} has unsupported media type {layer.media_type}")
    return config, layers


@dataclass(frozen=True)
class _PlatformEntry:
    descriptor: Descriptor
    platform: str  # os/arch[/variant]
    variant: str | None


def select_platform(
    data: bytes, platform: tuple[str, str] = PLATFORM
) -> tuple[Descriptor, list[str]]:
    """The entry of a manifest list or index for ``platform`` (os, architecture), and every
    platform the list offers. A plain amd64 (no variant, or v1) is preferred over v2/v3."""
    doc = json_object(data, "manifest list")
    raw = doc.get("manifests")
    if not isinstance(raw, list):
        raise UnsupportedManifest("manifest list has no manifests")
    entries: list[_PlatformEntry] = []
    for i, item in enumerate(raw):
        descriptor = parse_descriptor(item, f"manifest list entry {i}")
        plat = item.get("platform") if isinstance(item, dict) else None
        plat = plat if isinstance(plat, dict) else {}
        os_name = str(plat.get("os", "unknown"))
        arch = str(plat.get("architecture", "unknown"))
        variant = plat.get("variant")
        variant = str(variant) if variant else None
        name = f"{os_name}/{arch}" + (f"/{variant}" if variant else "")
        entries.append(_PlatformEntry(descriptor, name, variant))
    wanted = "/".join(platform)
    matches = [e for e in entries if e.platform.split("/")[:2] == list(platform)]
    matches.sort(key=lambda e: e.variant not in (None, "v1"))  # stable: list order otherwise
    present = sorted({e.platform for e in entries})
    if not matches:
        raise PlatformNotFound(
            f"no {wanted} image; platforms present: {', '.join(present) or 'none'}"
        )
    return matches[0].descriptor, present


def json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedManifest(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UnsupportedManifest(f"{what} is not a JSON object")
    return doc


def parse_descriptor(item: object, what: str) -> Descriptor:
    if not isinstance(item, dict):
        raise UnsupportedManifest(f"{what}: not a descriptor")
    media = item.get("mediaType")
    digest = item.get("digest")
    size = item.get("size")
    if not isinstance(media, str) or not media:
        raise UnsupportedManifest(f"{what}: no mediaType")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise UnsupportedManifest(f"{what}: digest {digest!r} is not sha256:<64 hex digits>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsupportedManifest(f"{what}: bad size {size!r}")
    return Descriptor(media, digest, size)
