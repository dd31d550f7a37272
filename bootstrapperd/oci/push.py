"""Push the images of an archive into a registry over the HTTP API v2: what ``bootstrapperd
serve`` does on site to fill its own registry at ``<dockerdomain>:5000``.

Each image goes to ``local_reference(registry_name, original)`` (Sextant's naming). Blobs the
registry already has are skipped, blobs an earlier image of the same push uploaded are mounted
from that repository, the rest are uploaded in one PUT each, streamed from the archive's tar
region. The manifest is PUT last (by tag; by digest when the reference has no tag) and the
digest the registry computes is checked. One image failing (after a few tries) does not stop
the others: every image gets a :class:`PushResult`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl as ssl_module
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from yarl import URL

from .archive import ArchivedImage, ArchiveError, ImageArchive
from .client import RegistryClient, repository_scope
from .manifest import ACCEPT, CredentialsNeeded, RegistryError, TLSFailure, UnsupportedManifest
from .reference import local_push_target, local_reference

Status = Literal["pushed", "present", "failed"]
# Failures another attempt cannot fix: a certificate, a login, corrupt data in the archive.
_PERMANENT = (TLSFailure, CredentialsNeeded, UnsupportedManifest, ArchiveError)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PushEvent:
    """Progress of a push, for logs and progress displays.

    ``kind``: ``image`` (starting one), ``blob-present``, ``blob-mounted``, ``blob-uploaded``,
    ``manifest`` (manifest PUT), ``retry`` (an attempt failed; ``detail`` says why), ``done``
    (``detail`` is the status) or ``failed`` (``detail`` is the reason).
    """

    kind: str
    image: str  # the original reference
    local: str  # its name on the registry
    digest: str | None = None
    size: int = 0
    detail: str = ""


@dataclass(frozen=True)
class PushResult:
    original: str
    local: str  # the name nodes pull it by
    status: Status
    digest: str  # the manifest's digest
    uploaded: int = 0  # blobs uploaded by the last attempt
    mounted: int = 0  # blobs mounted from another repository of this push
    skipped: int = 0  # blobs the registry already had
    bytes_uploaded: int = 0
    attempts: int = 0
    error: str | None = None
    note: str | None = None  # something the operator should know even on success

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class _Counts:
    uploaded: int = 0
    mounted: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0
    present: bool = False


@dataclass
class _Target:
    image: ArchivedImage
    repository: str
    reference: str  # tag or digest to PUT the manifest under
    local: str
    note: str | None = None
    scopes: list[str] = field(default_factory=list)


class _BlobPayload(Payload):
    """A blob streamed from its region of the archive (known size: sent with Content-Length).
    The file is opened per write, so a request sent again (after a 401) starts over."""

    def __init__(self, archive: ImageArchive, digest: str) -> None:
        super().__init__(archive, content_type="application/octet-stream")
        self._archive = archive
        self._digest = digest
        self._length = archive.blob_region(digest).size
        self._size = self._length

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a blob is binary")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        left = self._length if content_length is None else min(self._length, content_length)
        f = await asyncio.to_thread(self._archive.open_blob, self._digest)
        try:
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(_CHUNK, left))
                if not chunk:
                    raise ArchiveError(f"{self._archive.path}: blob {self._digest} truncated")
                await writer.write(chunk)
                left -= len(chunk)
        finally:
            f.close()


async def push_archive(
    session: aiohttp.ClientSession,
    archive: ImageArchive,
    base_url: str,
    *,
    registry_name: str,
    ssl: ssl_module.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    on_event: Callable[[PushEvent], None] | None = None,
    retries: int = 3,
    backoff: float = 1.0,
) -> list[PushResult]:
    """Push every image of ``archive`` to the registry at ``base_url`` as
    ``local_reference(registry_name, original)``.

    ``base_url`` may be an address (``https://127.0.0.1:5000``) with ``server_hostname`` the
    name the registry's certificate carries; ``ssl`` is the context trusting its CA. A registry
    asking for bearer tokens gets them (scope pull,push). An image is tried ``retries`` more
    times, with growing pauses, before it is reported failed.
    """
    client = RegistryClient(
        session,
        endpoints={registry_name: base_url},
        ssl=ssl,
        server_hostname=server_hostname,
        retries=2,
        backoff=backoff / 2,
    )
    emit = on_event or (lambda event: None)
    known: dict[str, str] = {}  # blob digest → a repository of this registry that has it
    results: list[PushResult] = []
    for image in archive.images:
        try:
            target = _target(image, registry_name)
        except ValueError as exc:
            local = f"{registry_name}/{image.original}"
            emit(PushEvent("failed", image.original, local, image.digest, detail=str(exc)))
            failed = PushResult(image.original, local, "failed", image.digest, error=str(exc))
            results.append(failed)
            continue
        emit(PushEvent("image", image.original, target.local, image.digest))
        attempt = 0
        while True:
            attempt += 1
            counts = _Counts()
            try:
                await _push_image(client, archive, target, registry_name, known, counts, emit)
            except (RegistryError, ArchiveError, aiohttp.ClientError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                if attempt <= retries and not isinstance(exc, _PERMANENT):
                    emit(PushEvent("retry", image.original, target.local, detail=reason))
                    await asyncio.sleep(backoff * 2 ** (attempt - 1))
                    continue
                emit(PushEvent("failed", image.original, target.local, detail=reason))
                results.append(_result(target, "failed", counts, attempt, error=reason))
                break
            status: Status = "present" if counts.present else "pushed"
            emit(PushEvent("done", image.original, target.local, image.digest, detail=status))
            results.append(_result(target, status, counts, attempt))
            break
    return results


def _result(
    target: _Target, status: Status, counts: _Counts, attempts: int, error: str | None = None
) -> PushResult:
    return PushResult(
        original=target.image.original,
        local=target.local,
        status=status,
        digest=target.image.digest,
        uploaded=counts.uploaded,
        mounted=counts.mounted,
        skipped=counts.skipped,
        bytes_uploaded=counts.bytes_uploaded,
        attempts=attempts,
        error=error,
        note=target.note,
    )


def _target(image: ArchivedImage, registry_name: str) -> _Target:
    repository, reference = local_push_target(registry_name, image.original)
    local = local_reference(registry_name, image.original)
    note = None
    pinned = image.reference.digest
    if pinned is not None and pinned != image.digest:
        # The reference pins a multi-platform list; only its linux/amd64 manifest was packed,
        # and a registry cannot hold the list without every platform's image. The amd64
        # manifest's own digest is what nodes can pull.
        note = (
            f"{image.original} pins the multi-platform list {pinned}; only its linux/amd64 "
            f"manifest {image.digest} is on the registry: refer to that digest"
        )
        local = local.replace(pinned, image.digest)
        if image.reference.tag is None:
            reference = image.digest
    return _Target(
        image=image,
        repository=repository,
        reference=reference,
        local=local,
        note=note,
        scopes=[repository_scope(repository, push=True)],
    )


async def _push_image(
    client: RegistryClient,
    archive: ImageArchive,
    target: _Target,
    host: str,
    known: dict[str, str],
    counts: _Counts,
    emit: Callable[[PushEvent], None],
) -> None:
    image = target.image
    repo = target.repository
    what = f"{image.original} → {target.local}"
    async with client.request(
        "HEAD",
        host,
        f"/v2/{repo}/manifests/{target.reference}",
        scopes=target.scopes,
        what=what,
        headers={"Accept": ACCEPT},
    ) as resp:
        if resp.status == 200 and resp.headers.get("Docker-Content-Digest") == image.digest:
            counts.present = True
            counts.skipped = len(image.blobs)
            return
        if resp.status not in (200, 404):
            raise RegistryError(f"{what}: HEAD manifest: {await _failure(resp)}")
    for blob in image.blobs:
        async with client.request(
            "HEAD",
            host,
            f"/v2/{repo}/blobs/{blob.digest}",
            scopes=target.scopes,
            what=f"{what}: blob {blob.digest}",
        ) as resp:
            present = resp.status == 200
            if resp.status not in (200, 404):
                raise RegistryError(f"{what}: HEAD blob {blob.digest}: HTTP {resp.status}")
        if present:
            counts.skipped += 1
            known.setdefault(blob.digest, repo)
            emit(PushEvent("blob-present", image.original, target.local, blob.digest, blob.size))
            continue
        upload = await _start_upload(client, host, target, blob.digest, known.get(blob.digest))
        if upload is None:
            counts.mounted += 1
            known[blob.digest] = repo
            emit(PushEvent("blob-mounted", image.original, target.local, blob.digest, blob.size))
            continue
        url = upload.update_query({"digest": blob.digest})
        async with client.request(
            "PUT",
            host,
            url.path_qs,
            scopes=target.scopes,
            what=f"{what}: upload of {blob.digest}",
            url=url,
            headers={"Content-Type": "application/octet-stream"},
            body=functools.partial(_BlobPayload, archive, blob.digest),
        ) as resp:
            if resp.status != 201:
                raise RegistryError(f"{what}: upload of blob {blob.digest}: {await _failure(resp)}")
            stored = resp.headers.get("Docker-Content-Digest")
            if stored and stored != blob.digest:
                raise RegistryError(f"{what}: registry stored blob {blob.digest} as {stored}")
        counts.uploaded += 1
        counts.bytes_uploaded += blob.size
        known[blob.digest] = repo
        emit(PushEvent("blob-uploaded", image.original, target.local, blob.digest, blob.size))
    async with client.request(
        "PUT",
        host,
        f"/v2/{repo}/manifests/{target.reference}",
        scopes=target.scopes,
        what=f"{what}: manifest",
        headers={"Content-Type": image.media_type},
        body=lambda: image.manifest,
    ) as resp:
        if resp.status not in (200, 201):
            raise RegistryError(f"{what}: manifest PUT: {await _failure(resp)}")
        stored = resp.headers.get("Docker-Content-Digest")
        if stored is not None and stored != image.digest:
            raise RegistryError(
                f"{what}: the registry stored the manifest as {stored}, not {image.digest}"
            )
    emit(PushEvent("manifest", image.original, target.local, image.digest, len(image.manifest)))


async def _start_upload(
    client: RegistryClient, host: str, target: _Target, digest: str, source: str | None
) -> URL | None:
    """An upload session's URL, or None when the blob was mounted from ``source``."""
    repo = target.repository
    path = f"/v2/{repo}/blobs/uploads/"
    scopes = list(target.scopes)
    params: dict[str, str] | None = None
    if source is not None and source != repo:
        params = {"mount": digest, "from": source}
        scopes.append(repository_scope(source))
    async with client.request(
        "POST",
        host,
        path,
        scopes=scopes,
        what=f"{target.local}: upload of {digest}",
        params=params,
        headers={"Content-Length": "0"},
    ) as resp:
        if resp.status == 201 and params is not None:
            return None
        if resp.status != 202:
            raise RegistryError(
                f"{target.local}: starting the upload of {digest}: {await _failure(resp)}"
            )
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{target.local}: upload of {digest}: no Location")
    return _same_origin(URL(client.base_url(host)), location)


def _same_origin(base: URL, location: str) -> URL:
    """The upload URL on ``base``'s scheme, host and port: the registry builds Location from
    its own idea of its name (the Host header, or ``http.host``), which need not be reachable
    from here when we talk to it by address."""
    loc = URL(location)
    return URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=loc.raw_path,
        query_string=loc.raw_query_string,
        encoded=True,
    )


async def _failure(resp: aiohttp.ClientResponse) -> str:
    """``HTTP <status>: <code>: <message>`` from a registry's error body."""
    try:
        text = (await resp.text(errors="replace"))[:2000]
    except aiohttp.ClientError:
        text = ""
    detail = text.strip()
    try:
        doc: Any = json.loads(text)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            detail = "; ".join(
                f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ")
                for e in errors
                if isinstance(e, dict)
            )
    except ValueError:
        pass
    return f"HTTP {resp.status}" + (f": {detail[:300]}" if detail else "")
