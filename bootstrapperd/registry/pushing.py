"""Filling the registry: every ``bsroot/images/*.tar`` pushed over the registry HTTP API, with
per-archive and per-image state for the status page, logs and metrics.

States: ``pending`` (not tried yet, or waiting for a retry), ``pushing``, ``pushed`` (something
was uploaded), ``present`` (the registry already had it all), ``failed`` (with the reason). An
archive that cannot be read fails at once, by name, and is not retried (it will not heal); an
image the registry refused or could not take is retried in later rounds, a bounded number of
times, with growing pauses. One archive failing never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ..oci.archive import ArchiveError, ImageArchive
from ..oci.push import PushEvent, PushResult, push_archive

__all__ = ["STATES", "ArchiveStatus", "ImageStatus", "PushTarget", "Pusher"]

log = logging.getLogger("bootstrapperd.registry")

STATES = ("pending", "pushing", "pushed", "present", "failed")
BLOB_RESULTS = ("uploaded", "present", "mounted")
_BLOB_EVENTS = {"blob-uploaded": "uploaded", "blob-present": "present", "blob-mounted": "mounted"}


@dataclass(frozen=True)
class PushTarget:
    """Where pushes go: ``base_url`` (an address), the TLS name and trust, the registry's name."""

    base_url: str
    registry_name: str  # host:port in the references nodes pull (<dockerdomain>:5000)
    ssl: ssl.SSLContext
    server_hostname: str | None


@dataclass
class ImageStatus:
    original: str  # the reference as the cluster description wrote it
    local: str  # the name nodes pull it by
    state: str = "pending"
    digest: str | None = None
    attempts: int = 0
    reason: str | None = None
    note: str | None = None
    blobs: Counter[str] = field(default_factory=Counter)
    bytes_uploaded: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.original,
            "reference": self.local,
            "state": self.state,
            "digest": self.digest,
            "attempts": self.attempts,
            "reason": self.reason,
            "note": self.note,
            "blobs": {k: self.blobs[k] for k in BLOB_RESULTS},
            "bytes_uploaded": self.bytes_uploaded,
        }


@dataclass
class ArchiveStatus:
    name: str  # file name under images/
    path: Path
    state: str = "pending"
    attempts: int = 0
    reason: str | None = None
    retry: bool = False  # failed, and worth another round
    images: list[ImageStatus] = field(default_factory=list)
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "archive": self.name,
            "state": self.state,
            "attempts": self.attempts,
            "reason": self.reason,
            "retrying": self.retry,
            "finished_at": self.finished_at,
            "images": [image.to_json() for image in self.images],
        }


PushFunction = Callable[..., Awaitable[list[PushResult]]]
Opener = Callable[[Path], ImageArchive]


class Pusher:
    """Pushes every archive once the registry is ready; retries what failed, then stops."""

    def __init__(
        self,
        images_dir: Path,
        target: PushTarget,
        session: aiohttp.ClientSession,
        ready: asyncio.Event,
        *,
        rounds: int = 4,
        retry_delay: float = 30.0,
        push_retries: int = 2,
        push_backoff: float = 1.0,
        push: PushFunction = push_archive,
        open_archive: Opener = ImageArchive.open,
    ) -> None:
        self.images_dir = images_dir
        self.target = target
        self.session = session
        self.ready = ready
        self.rounds = rounds
        self.retry_delay = retry_delay
        self.push_retries = push_retries
        self.push_backoff = push_backoff
        self._push = push
        self._open = open_archive
        self.archives: dict[str, ArchiveStatus] = {}
        self.blobs: Counter[str] = Counter()  # over every attempt: uploaded | present | mounted
        self.done = asyncio.Event()

    def scan(self) -> None:
        """List the archives (sorted): they show as pending before the registry is up."""
        try:
            paths = sorted(p for p in self.images_dir.glob("*.tar") if p.is_file())
        except OSError as exc:
            log.error("cannot list %s: %s", self.images_dir, exc)
            paths = []
        for path in paths:
            self.archives.setdefault(path.name, ArchiveStatus(path.name, path))

    def image_counts(self) -> dict[str, int]:
        """Images by state; an archive whose images are not known yet counts as one."""
        counts = dict.fromkeys(STATES, 0)
        for archive in self.archives.values():
            if archive.images:
                for image in archive.images:
                    counts[image.state] += 1
            else:
                counts[archive.state] += 1
        return counts

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.done.set()

    async def _run(self) -> None:
        if not self.archives:
            log.info("no image archives to push", extra={"fields": {"dir": str(self.images_dir)}})
            return
        for round_ in range(1, self.rounds + 1):
            todo = [a for a in self.archives.values() if a.state == "pending" or a.retry]
            if not todo:
                break
            if round_ > 1:
                delay = self.retry_delay * 2 ** (round_ - 2)
                names = ", ".join(a.name for a in todo)
                log.warning(
                    "retrying failed pushes in %.0f s: %s",
                    delay,
                    names,
                    extra={"fields": {"round": round_, "of": self.rounds}},
                )
                for archive in todo:
                    archive.state = "pending"
                await asyncio.sleep(delay)
            for archive in todo:
                await self.ready.wait()  # a restarting registry: wait for it, then go on
                await self._push_archive(archive, last_round=round_ == self.rounds)
        self._summary()

    async def _push_archive(self, archive: ArchiveStatus, *, last_round: bool) -> None:
        archive.state = "pushing"
        archive.attempts += 1
        archive.reason = None
        archive.retry = False
        started = time.monotonic()
        log.info(
            "pushing %s",
            archive.name,
            extra={"fields": {"archive": str(archive.path), "attempt": archive.attempts}},
        )
        try:
            opened = await asyncio.to_thread(self._open, archive.path)
        except (ArchiveError, OSError) as exc:
            self._fail(archive, f"cannot read the archive: {exc}", retry=False)
            return
        if not opened.images:
            self._fail(archive, "the archive holds no images", retry=False)
            return
        if not archive.images:
            archive.images = [
                ImageStatus(i.original, f"{self.target.registry_name}/{i.original}")
                for i in opened.images
            ]
        by_original = {image.original: image for image in archive.images}
        for image in archive.images:
            if image.state != "present" and image.state != "pushed":
                image.state = "pending"

        def on_event(event: PushEvent) -> None:
            image = by_original.get(event.image)
            if image is None:
                return
            if event.kind == "image":
                image.state = "pushing"
                image.local = event.local
            elif event.kind in _BLOB_EVENTS:
                result = _BLOB_EVENTS[event.kind]
                image.blobs[result] += 1
                self.blobs[result] += 1
            elif event.kind == "retry":
                log.warning(
                    "push of %s failed, trying again: %s",
                    event.local,
                    event.detail,
                    extra={"fields": {"archive": archive.name}},
                )

        try:
            results = await self._push(
                self.session,
                opened,
                self.target.base_url,
                registry_name=self.target.registry_name,
                ssl=self.target.ssl,
                server_hostname=self.target.server_hostname,
                on_event=on_event,
                retries=self.push_retries,
                backoff=self.push_backoff,
            )
        except (ArchiveError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # push_archive reports per image; this is for what escapes it.
            self._fail(archive, f"{type(exc).__name__}: {exc}", retry=not last_round)
            return
        failed = []
        for result in results:
            found = by_original.get(result.original)
            if found is None:
                continue
            self._record(archive, found, result)
            if not result.ok:
                failed.append(found)
        archive.finished_at = time.time()
        seconds = round(time.monotonic() - started, 2)
        if failed:
            reasons = "; ".join(f"{i.original}: {i.reason}" for i in failed)
            self._fail(archive, reasons, retry=not last_round)
            return
        archive.state = "pushed" if any(i.state == "pushed" for i in archive.images) else "present"
        log.info(
            "%s %s",
            archive.state,
            archive.name,
            extra={
                "fields": {
                    "images": len(archive.images),
                    "uploaded": sum(i.blobs["uploaded"] for i in archive.images),
                    "present": sum(i.blobs["present"] for i in archive.images),
                    "mounted": sum(i.blobs["mounted"] for i in archive.images),
                    "seconds": seconds,
                }
            },
        )

    def _record(self, archive: ArchiveStatus, image: ImageStatus, result: PushResult) -> None:
        image.state = result.status
        image.local = result.local
        image.digest = result.digest
        image.attempts += result.attempts
        image.reason = result.error
        image.note = result.note
        image.bytes_uploaded += result.bytes_uploaded
        if result.status == "present":
            # The manifest was there: its blobs were not asked about one by one.
            image.blobs["present"] += result.skipped
            self.blobs["present"] += result.skipped
        if result.note:
            log.warning("%s", result.note, extra={"fields": {"archive": archive.name}})
        level = logging.ERROR if not result.ok else logging.INFO
        log.log(
            level,
            "%s %s",
            result.local,
            result.status,
            extra={
                "fields": {
                    "archive": archive.name,
                    "digest": result.digest,
                    "uploaded": result.uploaded,
                    "mounted": result.mounted,
                    "present": result.skipped,
                    "bytes": result.bytes_uploaded,
                    **({"reason": result.error} if result.error else {}),
                }
            },
        )

    def _fail(self, archive: ArchiveStatus, reason: str, *, retry: bool) -> None:
        archive.state = "failed"
        archive.reason = reason
        archive.retry = retry
        archive.finished_at = time.time()
        log.error(
            "push of %s failed: %s",
            archive.name,
            reason,
            extra={"fields": {"attempt": archive.attempts, "will_retry": retry}},
        )

    def _summary(self) -> None:
        failed = [a.name for a in self.archives.values() if a.state == "failed"]
        counts = self.image_counts()
        fields: dict[str, object] = {k: v for k, v in counts.items() if v}
        if failed:
            log.error(
                "registry push finished with failures: %s",
                ", ".join(failed),
                extra={"fields": fields},
            )
        else:
            log.info("registry push finished", extra={"fields": fields})
