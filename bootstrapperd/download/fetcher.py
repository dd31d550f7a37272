"""The downloader: files fetched into bsroot (by ``bootstrapperd-pack``, and image blobs by
``bootstrapperd.oci.client``), resumable, retried, verified, renamed into place.

Images are gigabytes and laptops are on hotel Wi-Fi, so a download must survive a dropped
connection, an interrupted run and a flaky mirror, and must never leave a half or unverified
file under its final name (the bsroot is served as it is to machines that install from it).

- Data goes to ``.<name>.part`` beside the destination and is renamed over it only after its
  size, sha256 and ``verify`` callback passed; a rejected download is deleted and reported.
- A ``.part`` left by a dropped connection or an earlier run is continued with ``Range`` and
  ``If-Range``, against the validator (ETag or Last-Modified) of the response that started it,
  kept with the URL in ``.<name>.part.json``. A resumed file is still hashed in full.
- Connection errors, stalls, cut bodies, 5xx and 429 are retried with exponential backoff;
  other 4xx, wrong sizes and wrong digests fail at once: asking again will not fix them.
- A semaphore bounds the transfers in flight; an :class:`Observer` is told of each step
  (``bootstrapperd.pack.display`` shows them as terminal bars or plain lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypeVar
from urllib.parse import urlsplit
from urllib.request import url2pathname

import aiohttp

from ..bsroot.layout import write_atomically

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["Bar", "FetchError", "Fetched", "Fetcher", "Observer", "human"]

# Images are gigabytes: a total timeout would kill a healthy slow download. What must not
# happen is a connection that stalls for good, so the limit is on silence, not on duration.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
# Retry-After is honoured up to this: a server asking for hours would stall the whole run.
MAX_RETRY_AFTER = 300.0
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")

# Indirection so tests can see the delays chosen without waiting for them.
_sleep = asyncio.sleep

_T = TypeVar("_T")


class FetchError(Exception):
    """A download that failed for good. The message names the label, the reason and the URL,
    e.g. ``kubelet: HTTP 404 Not Found from http://…/kubelet``."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


@dataclass(frozen=True)
class Fetched:
    path: Path  # the final file
    size: int
    sha256: str  # hex of the final file
    downloaded: int  # bytes transferred by this call (0 when the file was already there and good)


class _Transient(Exception):
    """A failed attempt that another attempt may get past."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Again(Exception):
    """The attempt found its partial data useless and dropped it: ask again from byte 0 at once.
    Raised only when resuming, so the next attempt, which starts from 0, cannot raise it."""


def human(n: float) -> str:
    """A byte count as people read it: ``512 B``, ``4.0 MiB``."""
    if n < 1024:
        return f"{n:.0f} B"
    units = ("KiB", "MiB", "GiB", "TiB")
    index = 0
    n /= 1024
    while n >= 1024 and index < len(units) - 1:
        n /= 1024
        index += 1
    return f"{n:.1f} {units[index]}"


class Bar(Protocol):
    """One transfer's live display."""

    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


class Observer(Protocol):
    """What a :class:`Fetcher` tells about its transfers (``bootstrapperd.pack.display`` shows
    it as lines or terminal bars)."""

    def fetching(self, label: str, url: str) -> None: ...

    def resuming(self, label: str, offset: int) -> None: ...

    def restarting(self, label: str, why: str) -> None: ...

    def retrying(
        self, label: str, delay: float, attempt: int, attempts: int, reason: str
    ) -> None: ...

    def have(self, label: str, how: str) -> None: ...

    def fetched(self, label: str, transferred: int, seconds: float) -> None: ...

    def bar(self, label: str, total: int | None, done: int) -> Bar | None: ...


def _expected_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return digest


def _hash_file(path: Path) -> tuple[_Hash, int]:
    hasher = hashlib.sha256()
    length = 0
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            hasher.update(chunk)
            length += len(chunk)
    return hasher, length


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    # Some filesystems refuse fsync on a directory; the rename is then as durable as that
    # filesystem makes it, which is all that can be had.
    with contextlib.suppress(OSError):
        _fsync(path)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _validator(response: aiohttp.ClientResponse) -> str | None:
    """What ``If-Range`` can be checked against: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range takes only strong validators
        return etag
    return response.headers.get("Last-Modified")


def _status_error(
    response: aiohttp.ClientResponse, label: str, url: str
) -> _Transient | FetchError:
    reason = f"HTTP {response.status} {response.reason or ''}".rstrip()
    if response.status == 429 or response.status >= 500:
        return _Transient(reason, _retry_after(response.headers.get("Retry-After")))
    redirected = f" (redirected to {response.url})" if str(response.url) != url else ""
    return FetchError(f"{label}: {reason} from {url}{redirected}", url)


def _local_path(url: str, label: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"{label}: file URLs on another host are not supported: {url}", url)
    return Path(url2pathname(parts.path))


class Fetcher:
    """Downloads over one aiohttp session, at most ``jobs`` at a time.

    Each failing transfer is tried ``retries`` more times, ``backoff * 2**n`` seconds apart
    (plus jitter, so parallel downloads do not retry in lockstep). Authorization headers are
    not forwarded when a redirect leads to another origin: aiohttp (checked in 3.14) drops
    Authorization, Proxy-Authorization and Cookie itself in that case. Without ``progress``
    nothing is printed.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        jobs: int = 4,
        retries: int = 5,
        backoff: float = 0.5,
        progress: Observer | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        if retries < 0:
            raise ValueError("retries must not be negative")
        self.session = session
        self.retries = retries
        self.backoff = backoff
        self.progress = progress
        self._slots = asyncio.Semaphore(jobs)
        self._downloaded = 0
        # Two fetches of the same file at once would write the same part file.
        self._busy: dict[Path, asyncio.Lock] = {}
        # Every file fetched or found good: (size, mtime_ns, sha256), so that a manifest
        # written afterwards need not read it again.
        self.hashed: dict[Path, tuple[int, int, str]] = {}

    @property
    def downloaded(self) -> int:
        """Bytes transferred by this Fetcher so far, restarts and rejected files included."""
        return self._downloaded

    def _count(self, n: int) -> None:
        self._downloaded += n

    async def fetch(
        self,
        url: str,
        dest: Path,
        *,
        sha256: str | None = None,
        size: int | None = None,
        headers: Mapping[str, str] | None = None,
        label: str | None = None,
        verify: Callable[[Path], None] | None = None,
        mode: int = 0o644,
    ) -> Fetched:
        """Make ``dest`` the verified content of ``url`` (http, https or file).

        A ``dest`` already there is kept when it matches ``sha256`` or, without one, passes
        ``verify``. ``verify`` runs in a worker thread on the part file and raises to reject it.
        Raises FetchError (ValueError for a malformed ``sha256``); a transfer that failed
        part-way leaves its part file for the next call to resume from.
        """
        expected = _expected_sha256(sha256)
        name = label or dest.name
        lock = self._busy.setdefault(dest.absolute(), asyncio.Lock())  # noqa: ASYNC240 (no I/O: the path made absolute)
        async with lock:
            try:
                got = await self._fetch(url, dest, name, expected, size, headers, verify, mode)
                stat = got.path.stat()
                self.hashed[got.path.absolute()] = (stat.st_size, stat.st_mtime_ns, got.sha256)
                return got
            except OSError as exc:  # the local side (disk full, permissions): not retried
                raise FetchError(f"{name}: {exc} (fetching {url})", url) from exc

    async def _fetch(
        self,
        url: str,
        dest: Path,
        name: str,
        expected: str | None,
        size: int | None,
        headers: Mapping[str, str] | None,
        verify: Callable[[Path], None] | None,
        mode: int,
    ) -> Fetched:
        have = await self._have(dest, expected, size, verify, mode, name)
        if have is not None:
            return have
        dest.parent.mkdir(parents=True, exist_ok=True)
        download = _Download(self, url, dest, name, expected, size, headers, verify, mode)
        try:
            if urlsplit(url).scheme == "file":
                await self._copy(download)
            else:
                await download.prepare()
                await self._retrying(name, url, download.attempt)
            fetched = await asyncio.to_thread(download.install)
        finally:
            download.close_bar()
        if self.progress is not None and download.started is not None:
            seconds = time.monotonic() - download.started
            self.progress.fetched(name, fetched.downloaded, seconds)
        return fetched

    async def fetch_bytes(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        label: str | None = None,
        limit: int = 1 << 20,
    ) -> bytes:
        """The body of a small resource (version.txt, a .sha256 file, JSON), at most ``limit``
        bytes; same retry rules as :meth:`fetch`."""
        name = label or url
        too_big = f"{name}: more than {limit} bytes from {url}"
        if urlsplit(url).scheme == "file":
            path = _local_path(url, name)

            def read() -> bytes:
                with path.open("rb") as src:
                    return src.read(limit + 1)

            try:
                async with self._slots:
                    body = await asyncio.to_thread(read)
            except OSError as exc:
                raise FetchError(f"{name}: {exc} from {url}", url) from exc
            if len(body) > limit:
                raise FetchError(too_big, url)
            return body

        async def attempt() -> bytes:
            async with self.session.get(url, headers=headers, timeout=TIMEOUT) as response:
                if response.status != 200:
                    raise _status_error(response, name, url)
                if response.content_length is not None and response.content_length > limit:
                    raise FetchError(too_big, url)
                body = bytearray()
                async for chunk in response.content.iter_any():
                    self._count(len(chunk))
                    body += chunk
                    if len(body) > limit:
                        raise FetchError(too_big, url)
                return bytes(body)

        return await self._retrying(name, url, attempt)

    async def _have(
        self,
        dest: Path,
        expected: str | None,
        size: int | None,
        verify: Callable[[Path], None] | None,
        mode: int,
        label: str,
    ) -> Fetched | None:
        """``dest`` when it is there and known good, without touching the network."""
        if expected is None and verify is None:
            return None  # nothing to know it by: mutable files such as version.txt
        try:
            st = dest.stat()  # noqa: ASYNC240 (one stat of a local file)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
            return None
        hasher, length = await asyncio.to_thread(_hash_file, dest)
        digest = hasher.hexdigest()
        if expected is not None:
            if digest != expected:
                return None
            how = "sha256 ok"
        else:
            assert verify is not None  # noqa: S101 (invariant: the branch above)
            try:
                await asyncio.to_thread(verify, dest)
            except Exception:
                return None
            how = "verified"
        if stat.S_IMODE(st.st_mode) != mode:
            dest.chmod(mode)  # noqa: ASYNC240 (one chmod of a local file)
        if self.progress is not None:
            self.progress.have(label, how)
        return Fetched(dest, length, digest, 0)

    async def _copy(self, download: _Download) -> None:
        """file:// sources: a fresh copy (no resume needed on a local disk), same checks."""
        source = _local_path(download.url, download.label)
        download.discard()
        try:
            async with self._slots:
                download.begin()
                length = source.stat().st_size
                if download.size is not None and length != download.size:
                    raise download.reject(
                        f"size mismatch (expected {download.size} bytes, got {length})"
                    )
                download.total = length
                download.show()  # here, not in the worker thread: bars are placed in this one
                await asyncio.to_thread(download.copy_from, source)
        except OSError as exc:
            download.discard()
            raise FetchError(f"{download.label}: {exc} from {download.url}", download.url) from exc
        finally:
            # Counted afterwards: the worker thread must not share the counter with this one.
            self._count(download.transferred)

    async def _retrying(self, label: str, url: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        failures = 0
        while True:
            try:
                async with self._slots:
                    return await attempt()
            except _Again:
                continue
            except _Transient as exc:
                failure = exc
            except aiohttp.ClientSSLError as exc:  # a certificate does not fix itself
                raise FetchError(f"{label}: {exc} from {url}", url) from exc
            except (
                aiohttp.ClientConnectionError,
                aiohttp.ClientPayloadError,
                ConnectionError,
            ) as exc:
                failure = _Transient(str(exc) or type(exc).__name__)
            except TimeoutError as exc:
                failure = _Transient(str(exc) or f"timed out after {TIMEOUT.sock_read:.0f} s")
            except aiohttp.ClientError as exc:  # bad URL, redirect loop, …
                raise FetchError(f"{label}: {exc} from {url}", url) from exc
            if failures >= self.retries:
                raise FetchError(
                    f"{label}: {failure.reason} from {url} (gave up after {failures + 1} attempts)",
                    url,
                ) from failure
            if failure.retry_after is not None:
                delay = failure.retry_after
            else:
                delay = self.backoff * 2**failures * (1 + random.random() / 2)  # noqa: S311 (retry jitter, not a secret)
            failures += 1
            if self.progress is not None:
                self.progress.retrying(label, delay, failures + 1, self.retries + 1, failure.reason)
            await _sleep(delay)


class _Download:
    """The state of one file's transfer across attempts. Invariant between attempts: the part
    file holds exactly ``offset`` bytes and ``hasher`` has seen all of them."""

    def __init__(
        self,
        fetcher: Fetcher,
        url: str,
        dest: Path,
        label: str,
        expected: str | None,
        size: int | None,
        headers: Mapping[str, str] | None,
        verify: Callable[[Path], None] | None,
        mode: int,
    ) -> None:
        self.fetcher = fetcher
        self.url = url
        self.dest = dest
        self.label = label
        self.expected = expected
        self.size = size
        self.headers = dict(headers or {})
        self.verify = verify
        self.mode = mode
        self.part = dest.with_name(f".{dest.name}.part")
        self.sidecar = dest.with_name(f".{dest.name}.part.json")
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.validator: str | None = None
        self.total: int | None = None
        self.transferred = 0
        self.earlier = 0  # bytes taken over from an earlier run, for the messages
        self.started: float | None = None
        self._bar: Bar | None = None

    def begin(self) -> None:
        """Called as each attempt gets its slot: the first one is when the transfer starts."""
        if self.started is None:
            self.started = time.monotonic()
            if self.fetcher.progress is not None:
                self.fetcher.progress.fetching(self.label, self.url)

    # -- the part file --------------------------------------------------------------------

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.earlier = 0

    def reject(self, reason: str) -> FetchError:
        self.discard()
        return FetchError(f"{self.label}: {reason} from {self.url}", self.url)

    async def prepare(self) -> None:
        """Take over a part file from an earlier run when its sidecar says it can be resumed."""
        try:
            recorded = json.loads(self.sidecar.read_text())
            have = self.part.stat().st_size
        except (OSError, ValueError):
            self.discard()
            return
        if not isinstance(recorded, dict):
            self.discard()
            return
        validator = recorded.get("validator")
        if (
            recorded.get("url") != self.url
            or not isinstance(validator, str)
            or have == 0
            or (self.size is not None and have > self.size)
        ):
            self.discard()
            return
        self.hasher, self.offset = await asyncio.to_thread(_hash_file, self.part)
        self.validator = validator
        self.earlier = self.offset

    def _record(self, validator: str | None) -> None:
        self.validator = validator
        if validator is None:
            self.sidecar.unlink(missing_ok=True)
        else:
            record = {"url": self.url, "validator": validator}
            write_atomically(self.sidecar, json.dumps(record).encode())

    def _append(self, chunk: bytes, out: BinaryIO) -> None:
        if self.size is not None and self.offset + len(chunk) > self.size:
            raise self.reject(f"size mismatch (expected {self.size} bytes, got more)")
        out.write(chunk)
        self.hasher.update(chunk)
        self.offset += len(chunk)
        self.transferred += len(chunk)
        if self._bar is not None:
            self._bar.update(len(chunk))

    # -- progress -------------------------------------------------------------------------

    def show(self) -> None:
        progress = self.fetcher.progress
        if progress is None:
            return
        # A new bar for each response, starting where the data stands: one reset and moved
        # forward would count the bytes from before as if they had just arrived.
        self.close_bar()
        self._bar = progress.bar(self.label, self.total, self.offset)

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _restarting(self, why: str) -> None:
        if self.fetcher.progress is not None:
            self.fetcher.progress.restarting(self.label, why)
        self.discard()

    # -- one HTTP attempt -----------------------------------------------------------------

    async def attempt(self) -> None:
        self.begin()
        headers = {**self.headers, "Accept-Encoding": "identity"}
        if self.offset > 0 and self.validator is None:
            # Nothing to make sure the rest belongs to the same file.
            self._restarting("the server gives no ETag or Last-Modified to resume against")
        ranged = self.offset > 0
        if ranged:
            assert self.validator is not None  # noqa: S101 (invariant: a ranged request had one)
            headers["Range"] = f"bytes={self.offset}-"
            headers["If-Range"] = self.validator
        # Raw bytes: the digest is of the file as stored, and a range counts stored bytes.
        async with self.fetcher.session.get(
            self.url, headers=headers, timeout=TIMEOUT, auto_decompress=False
        ) as response:
            if response.status == 416 and ranged:
                self._satisfied(response)
                return
            if response.status == 200:
                self._whole(response)
            elif response.status == 206 and ranged:
                self._rest(response)
            else:
                raise _status_error(response, self.label, self.url)
            if self.size is not None and self.total is not None and self.total != self.size:
                raise self.reject(
                    f"size mismatch (expected {self.size} bytes, the server has {self.total})"
                )
            self.show()
            await self._receive(response)

    def _satisfied(self, response: aiohttp.ClientResponse) -> None:
        """416 to a resume: fine when the part already is the whole file (the earlier run was
        stopped between the last byte and the rename)."""
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match and match[3] != "*" and int(match[3]) == self.offset:
            self.total = self.offset
            return
        self._restarting("the server refused the range")
        raise _Again

    def _whole(self, response: aiohttp.ClientResponse) -> None:
        validator = _validator(response)
        if self.offset > 0:
            if validator != self.validator:
                self._restarting("the file changed on the server")
            else:
                self._restarting("the server does not resume downloads")
        self._record(validator)
        self.total = response.content_length

    def _rest(self, response: aiohttp.ClientResponse) -> None:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        validator = _validator(response)
        if match is None or match[1] is None or int(match[1]) != self.offset:
            self._restarting("the server sent a different range")
            raise _Again
        if validator is not None and validator != self.validator:
            # The server ignored If-Range: these bytes belong to a newer file.
            self._restarting("the file changed on the server")
            raise _Again
        self.total = None if match[3] == "*" else int(match[3])
        if self.fetcher.progress is not None:
            self.fetcher.progress.resuming(self.label, self.offset)

    async def _receive(self, response: aiohttp.ClientResponse) -> None:
        with self.part.open("ab") as out:
            out.truncate(self.offset)  # keep the invariant whatever an interruption left
            try:
                async for chunk in response.content.iter_any():
                    self.fetcher._count(len(chunk))
                    self._append(chunk, out)
            except aiohttp.ClientPayloadError as exc:
                raise self._cut() from exc
        expected = self.total
        if expected is None and "chunked" not in response.headers.get("Transfer-Encoding", ""):
            # Delimited by the connection closing: a short body may be a cut one.
            expected = self.size
        if expected is not None and self.offset < expected:
            raise self._cut()

    def _cut(self) -> _Transient:
        of = f" of {human(self.total)}" if self.total is not None else ""
        return _Transient(f"connection lost at {human(self.offset)}{of}")

    # -- a local copy ---------------------------------------------------------------------

    def copy_from(self, source: Path) -> None:
        """Copy ``source`` into the part file (runs in a worker thread)."""
        with source.open("rb") as src, self.part.open("wb") as out:
            while chunk := src.read(_CHUNK):
                self._append(chunk, out)

    # -- the end --------------------------------------------------------------------------

    def install(self) -> Fetched:
        """Check the part file and rename it over ``dest`` (runs in a worker thread)."""
        if self.size is not None and self.offset != self.size:
            raise self.reject(f"size mismatch (expected {self.size} bytes, got {self.offset})")
        digest = self.hasher.hexdigest()
        if self.expected is not None and digest != self.expected:
            earlier = (
                f"; {human(self.earlier)} of it came from an earlier run, run again to fetch "
                "it afresh"
                if self.earlier
                else ""
            )
            raise self.reject(f"sha256 mismatch (expected {self.expected}, got {digest}{earlier})")
        if self.verify is not None:
            try:
                self.verify(self.part)
            except Exception as exc:
                raise self.reject(f"rejected by verification: {exc}") from exc
        _fsync(self.part)
        self.part.chmod(self.mode)
        os.replace(self.part, self.dest)
        _fsync_directory(self.dest.parent)
        self.sidecar.unlink(missing_ok=True)
        return Fetched(self.dest, self.offset, digest, self.transferred)
