"""The pack download engine against a scripted HTTP server on 127.0.0.1: verification, atomic
install, resume (after a cut connection and from an earlier run), restarts when resuming is not
safe, retries and their limits, bounded parallelism, file:// sources, progress output and
small bodies."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from bootstrapperd.download import fetcher as fetch_module
from bootstrapperd.download.fetcher import Fetched, Fetcher, FetchError
from bootstrapperd.pack.display import Progress, TerminalProgress

SIZE = 200_000
HALF = 100_000


def blob_bytes(seed: int, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    body: bytes
    etag: str | None = '"v1"'
    ranges: bool = True  # honours Range at all
    if_range: bool = True  # honours If-Range (else sends a range of whatever it has now)
    chunked: bool = False  # no Content-Length
    statuses: list[int] = field(default_factory=list)  # answered, one per request, first
    retry_after: str | None = None
    cuts: list[int] = field(default_factory=list)  # bytes sent before dropping the connection
    stalls: list[int] = field(default_factory=list)  # bytes sent before going silent


@dataclass
class Seen:
    name: str
    headers: CIMultiDict[str]


class Origin:
    """A file server whose misbehaviour each test scripts, and which remembers every request."""

    def __init__(self) -> None:
        self.blobs: dict[str, Blob] = {}
        self.redirects: dict[str, str] = {}
        self.seen: list[Seen] = []
        self.base = ""
        self.gate = 0  # >0: hold requests until this many are in flight, to count them
        self.active = 0
        self.peak = 0
        self._full = asyncio.Event()
        self.release = asyncio.Event()  # ends stalls

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def requests(self, name: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.name == name]

    async def _hold(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.active >= self.gate:
            self._full.set()
        # A timeout is the last odd one out; a serial client fails the assertion on the peak.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), 2)
        await asyncio.sleep(0.05)  # time for any request over the limit to arrive and count
        # Counted off before the body goes out: until the client has the body it holds its slot,
        # so what the server counts never exceeds what the client has in flight.
        self.active -= 1
        if self.active < self.gate:
            self._full.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.seen.append(Seen(name, request.headers.copy()))
        if name in self.redirects:
            raise web.HTTPFound(self.redirects[name])
        if self.gate:
            await self._hold()
        blob = self.blobs.get(name)
        if blob is None:
            raise web.HTTPNotFound()
        if blob.statuses:
            extra = {"Retry-After": blob.retry_after} if blob.retry_after else {}
            return web.Response(status=blob.statuses.pop(0), headers=extra)
        body = blob.body
        headers = {"ETag": blob.etag} if blob.etag else {}
        status, start = 200, 0
        wanted = request.headers.get("Range")
        condition = request.headers.get("If-Range")
        if wanted and blob.ranges and (not blob.if_range or condition in (None, blob.etag)):
            match = re.fullmatch(r"bytes=(\d+)-", wanted)
            assert match, wanted
            start = int(match[1])
            if start >= len(body):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        payload = body[start:]
        response = web.StreamResponse(status=status, headers=headers)
        if blob.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(payload)
        await response.prepare(request)
        if blob.cuts:
            await response.write(payload[: blob.cuts.pop(0)])
            # Closed under the response, before any end-of-body marker can go out.
            assert request.transport is not None
            request.transport.close()
            return response
        if blob.stalls:
            await response.write(payload[: blob.stalls.pop(0)])
            await self.release.wait()
            response.force_close()
            return response
        await response.write(payload)
        return response

    @classmethod
    @asynccontextmanager
    async def running(cls) -> AsyncIterator[Origin]:
        origin = cls()
        app = web.Application()
        app.router.add_get("/{name}", origin.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        origin.base = str(server.make_url("")).rstrip("/")
        try:
            yield origin
        finally:
            origin.release.set()
            await server.close()


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with Origin.running() as served:
        yield served


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff delays the fetcher chose, recorded instead of slept."""
    chosen: list[float] = []

    async def record(delay: float) -> None:
        chosen.append(delay)

    monkeypatch.setattr(fetch_module, "_sleep", record)
    return chosen


def leftovers(dest: Path) -> list[str]:
    if not dest.parent.is_dir():
        return []
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}"))


def fetcher(
    session: aiohttp.ClientSession,
    *,
    jobs: int = 4,
    retries: int = 5,
    progress: Progress | None = None,
) -> Fetcher:
    return Fetcher(session, jobs=jobs, retries=retries, backoff=0.01, progress=progress)


# -- plain downloads, skips, rejections -------------------------------------------------------


async def test_download_with_sha256(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(1)
    origin.blobs["kubelet"] = Blob(body)
    dest = tmp_path / "new" / "dir" / "kubelet"
    f = fetcher(session)
    got = await f.fetch(origin.url("kubelet"), dest, sha256=sha(body).upper(), mode=0o755)
    assert got == Fetched(dest, SIZE, sha(body), SIZE)
    assert dest.read_bytes() == body
    assert dest.stat().st_mode & 0o777 == 0o755
    assert leftovers(dest) == []
    assert f.downloaded == SIZE
    [seen] = origin.requests("kubelet")
    assert "Range" not in seen.headers
    assert seen.headers["Accept-Encoding"] == "identity"


async def test_present_and_good_is_not_fetched(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(2)
    origin.blobs["image"] = Blob(body)
    dest = tmp_path / "image"
    dest.write_bytes(body)
    out = io.StringIO()
    f = fetcher(session, progress=Progress.for_stream(out))

    got = await f.fetch(origin.url("image"), dest, sha256=sha(body))
    assert got == Fetched(dest, SIZE, sha(body), 0)
    checked: list[Path] = []
    got = await f.fetch(origin.url("image"), dest, verify=checked.append, label="img")
    assert got.downloaded == 0
    assert checked == [dest]
    assert origin.seen == []
    assert f.downloaded == 0
    assert out.getvalue().splitlines() == ["have image (sha256 ok)", "have img (verified)"]

    # Nothing to know it by: fetched again (version.txt and the like change in place).
    dest.write_bytes(b"stale")
    got = await f.fetch(origin.url("image"), dest)
    assert got.downloaded == SIZE
    assert dest.read_bytes() == body
    assert len(origin.seen) == 1


async def test_present_but_different_is_fetched_again(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(3)
    origin.blobs["image"] = Blob(body)
    dest = tmp_path / "image"
    dest.write_bytes(body[:-1] + b"x")

    def reject(path: Path) -> None:
        if path.read_bytes() != body:
            raise ValueError("not it")

    got = await fetcher(session).fetch(origin.url("image"), dest, verify=reject)
    assert got.downloaded == SIZE
    assert dest.read_bytes() == body


async def test_wrong_sha256_leaves_nothing_and_is_not_retried(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(4)
    wanted = sha(b"something else")
    origin.blobs["kubelet"] = Blob(body)
    dest = tmp_path / "kubelet"
    with pytest.raises(FetchError) as caught:
        await fetcher(session).fetch(origin.url("kubelet"), dest, sha256=wanted)
    message = str(caught.value)
    assert message.startswith("kubelet: sha256 mismatch")
    assert wanted in message
    assert sha(body) in message
    assert origin.url("kubelet") in message
    assert caught.value.url == origin.url("kubelet")
    assert not dest.exists()
    assert leftovers(dest) == []
    assert len(origin.seen) == 1


async def test_rejected_download_keeps_the_old_file(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    origin.blobs["kubelet"] = Blob(blob_bytes(5))
    dest = tmp_path / "kubelet"
    dest.write_bytes(b"the old one")
    with pytest.raises(FetchError, match="sha256 mismatch"):
        await fetcher(session).fetch(origin.url("kubelet"), dest, sha256=sha(b"new"))
    assert dest.read_bytes() == b"the old one"
    assert leftovers(dest) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_size_mismatch(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path, chunked: bool
) -> None:
    origin.blobs["initrd"] = Blob(blob_bytes(6), chunked=chunked)
    dest = tmp_path / "initrd"
    for size in (SIZE - 1, SIZE + 1):
        with pytest.raises(FetchError, match=rf"initrd: size mismatch \(expected {size} bytes"):
            await fetcher(session, retries=0).fetch(origin.url("initrd"), dest, size=size)
        assert not dest.exists()
        assert leftovers(dest) == []


async def test_verify_rejects(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(7)
    origin.blobs["flatcar.bin.bz2"] = Blob(body)
    dest = tmp_path / "flatcar.bin.bz2"
    shown: list[Path] = []

    def not_bzip2(path: Path) -> None:
        shown.append(path)
        assert path.read_bytes() == body  # the whole file, before it is installed
        raise ValueError("not a bzip2 file")

    with pytest.raises(FetchError, match="flatcar: rejected by verification: not a bzip2 file"):
        await fetcher(session).fetch(
            origin.url("flatcar.bin.bz2"), dest, verify=not_bzip2, label="flatcar"
        )
    assert [p.name for p in shown] == [".flatcar.bin.bz2.part"]
    assert not dest.exists()
    assert leftovers(dest) == []
    assert len(origin.seen) == 1


# -- resuming and restarting ------------------------------------------------------------------


async def test_cut_connection_is_resumed(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(8)
    origin.blobs["image"] = Blob(body, cuts=[HALF])
    dest = tmp_path / "image"
    f = fetcher(session)
    got = await f.fetch(origin.url("image"), dest, sha256=sha(body), size=SIZE)
    assert dest.read_bytes() == body
    assert got.downloaded == SIZE
    assert f.downloaded == SIZE
    first, second = origin.requests("image")
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={HALF}-"
    assert second.headers["If-Range"] == '"v1"'
    assert leftovers(dest) == []


async def test_cut_without_content_length_is_resumed(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(9)
    origin.blobs["image"] = Blob(body, chunked=True, cuts=[HALF])
    dest = tmp_path / "image"
    await fetcher(session).fetch(origin.url("image"), dest, sha256=sha(body))
    assert dest.read_bytes() == body
    assert origin.requests("image")[1].headers["Range"] == f"bytes={HALF}-"


async def test_stalled_body_times_out_and_is_resumed(
    origin: Origin,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_module, "TIMEOUT", aiohttp.ClientTimeout(sock_read=0.2))
    body = blob_bytes(10)
    origin.blobs["image"] = Blob(body, stalls=[HALF])
    dest = tmp_path / "image"
    await fetcher(session).fetch(origin.url("image"), dest, sha256=sha(body))
    assert dest.read_bytes() == body
    assert origin.requests("image")[1].headers["Range"] == f"bytes={HALF}-"


async def interrupted_run(
    origin: Origin, session: aiohttp.ClientSession, name: str, dest: Path, body: bytes
) -> None:
    """An earlier run that lost its connection halfway and gave up: it leaves a part file."""
    origin.blobs[name] = Blob(body, cuts=[HALF])
    with pytest.raises(FetchError, match="gave up after 1 attempts"):
        await fetcher(session, retries=0).fetch(origin.url(name), dest, sha256=sha(body))
    assert not dest.exists()  # noqa: ASYNC240 (one stat of a local file)
    assert leftovers(dest) == [f".{dest.name}.part", f".{dest.name}.part.json"]
    origin.seen.clear()


async def test_part_from_an_earlier_run_is_resumed(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(11)
    dest = tmp_path / "image"
    await interrupted_run(origin, session, "image", dest, body)
    out = io.StringIO()
    f = fetcher(session, progress=Progress.for_stream(out))
    got = await f.fetch(origin.url("image"), dest, sha256=sha(body))
    assert got == Fetched(dest, SIZE, sha(body), SIZE - HALF)
    assert dest.read_bytes() == body
    [seen] = origin.seen
    assert seen.headers["Range"] == f"bytes={HALF}-"
    assert "resuming image at 97.7 KiB" in out.getvalue().splitlines()
    assert leftovers(dest) == []


async def test_earlier_run_resumed_against_aiohttp_static_files(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A real implementation of Range and If-Range rather than the scripted one."""
    body = blob_bytes(12)
    served = tmp_path / "served"
    served.mkdir()
    (served / "image").write_bytes(body)
    app = web.Application()
    app.router.add_static("/static", served)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/static/image"))
        async with session.get(url) as response:
            etag = response.headers["ETag"]
        dest = tmp_path / "out" / "image"
        dest.parent.mkdir()
        (dest.parent / ".image.part").write_bytes(body[:HALF])
        (dest.parent / ".image.part.json").write_text(json.dumps({"url": url, "validator": etag}))
        got = await fetcher(session).fetch(url, dest, sha256=sha(body))
        assert got.downloaded == SIZE - HALF
        assert dest.read_bytes() == body

        # The file changed on the server: If-Range fails and the whole new file comes back.
        (served / "image").write_bytes(body[::-1])
        (dest.parent / ".image.part").write_bytes(body[:HALF])
        (dest.parent / ".image.part.json").write_text(json.dumps({"url": url, "validator": etag}))
        got = await fetcher(session).fetch(url, dest, sha256=sha(body[::-1]))
        assert got.downloaded == SIZE
        assert dest.read_bytes() == body[::-1]
    finally:
        await server.close()


async def test_part_that_is_already_complete(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Stopped between the last byte and the rename: the server answers 416, nothing moves."""

    class Stopped(BaseException):
        pass

    def stop(path: Path) -> None:
        raise Stopped

    body = blob_bytes(13)
    origin.blobs["image"] = Blob(body)
    dest = tmp_path / "image"
    with pytest.raises(Stopped):
        await fetcher(session).fetch(origin.url("image"), dest, verify=stop)
    assert (tmp_path / ".image.part").read_bytes() == body
    origin.seen.clear()

    got = await fetcher(session).fetch(origin.url("image"), dest, sha256=sha(body))
    assert got == Fetched(dest, SIZE, sha(body), 0)
    [seen] = origin.seen
    assert seen.headers["Range"] == f"bytes={SIZE}-"


async def test_server_ignoring_range_restarts_cleanly(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(14)
    dest = tmp_path / "image"
    await interrupted_run(origin, session, "image", dest, body)
    origin.blobs["image"].ranges = False
    out = io.StringIO()
    f = fetcher(session, progress=Progress.for_stream(out))
    got = await f.fetch(origin.url("image"), dest, sha256=sha(body))
    assert got.downloaded == SIZE
    assert dest.read_bytes() == body
    [seen] = origin.seen
    assert seen.headers["Range"] == f"bytes={HALF}-"
    assert "restarting image from the beginning: the server does not resume downloads" in (
        out.getvalue().splitlines()
    )


async def test_changed_validator_restarts(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(15)
    dest = tmp_path / "image"
    await interrupted_run(origin, session, "image", dest, body)
    new = blob_bytes(16)
    origin.blobs["image"] = Blob(new, etag='"v2"')
    got = await fetcher(session).fetch(origin.url("image"), dest, sha256=sha(new))
    assert got.downloaded == SIZE
    assert dest.read_bytes() == new
    [seen] = origin.seen
    assert seen.headers["If-Range"] == '"v1"'


async def test_server_ignoring_if_range_restarts(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A 206 carrying a new ETag is the rest of another file: dropped, asked for in full."""
    body = blob_bytes(17)
    dest = tmp_path / "image"
    await interrupted_run(origin, session, "image", dest, body)
    new = blob_bytes(18)
    origin.blobs["image"] = Blob(new, etag='"v2"', if_range=False)
    got = await fetcher(session, retries=0).fetch(origin.url("image"), dest, sha256=sha(new))
    assert dest.read_bytes() == new
    assert got.downloaded == SIZE
    first, second = origin.seen
    assert first.headers["Range"] == f"bytes={HALF}-"
    assert "Range" not in second.headers


async def test_part_for_another_url_is_not_resumed(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(19)
    dest = tmp_path / "image"
    await interrupted_run(origin, session, "image", dest, body)
    origin.blobs["mirror-image"] = Blob(body)
    got = await fetcher(session).fetch(origin.url("mirror-image"), dest, sha256=sha(body))
    assert got.downloaded == SIZE
    [seen] = origin.seen
    assert "Range" not in seen.headers


async def test_no_validator_means_no_resume(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(20)
    origin.blobs["image"] = Blob(body, etag=None, cuts=[HALF])
    dest = tmp_path / "image"
    got = await fetcher(session).fetch(origin.url("image"), dest, sha256=sha(body))
    assert dest.read_bytes() == body
    assert got.downloaded == HALF + SIZE
    assert all("Range" not in seen.headers for seen in origin.seen)


# -- retries ----------------------------------------------------------------------------------


async def test_503_then_success(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(21)
    origin.blobs["image"] = Blob(body, statuses=[503, 502])
    dest = tmp_path / "image"
    got = await fetcher(session).fetch(origin.url("image"), dest, sha256=sha(body))
    assert got.downloaded == SIZE
    assert len(origin.seen) == 3


async def test_retry_after_is_honoured(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path, delays: list[float]
) -> None:
    body = blob_bytes(22)
    origin.blobs["image"] = Blob(body, statuses=[429], retry_after="7")
    await fetcher(session).fetch(origin.url("image"), tmp_path / "image", sha256=sha(body))
    assert delays == [7.0]


async def test_404_fails_at_once(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    dest = tmp_path / "missing"
    with pytest.raises(FetchError) as caught:
        await fetcher(session).fetch(origin.url("missing"), dest, label="etcd")
    assert str(caught.value) == f"etcd: HTTP 404 Not Found from {origin.url('missing')}"
    assert len(origin.seen) == 1
    assert not dest.exists()


async def test_retries_exhausted(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path, delays: list[float]
) -> None:
    origin.blobs["image"] = Blob(blob_bytes(23), statuses=[503] * 10)
    dest = tmp_path / "image"
    with pytest.raises(FetchError) as caught:
        await fetcher(session, retries=3).fetch(origin.url("image"), dest)
    assert str(caught.value) == (
        f"image: HTTP 503 Service Unavailable from {origin.url('image')} (gave up after 4 attempts)"
    )
    assert len(origin.seen) == 4
    assert not dest.exists()
    # Exponential, with up to half again of jitter.
    assert len(delays) == 3
    for n, delay in enumerate(delays):
        assert 0.01 * 2**n <= delay <= 0.015 * 2**n


async def test_connection_refused_is_retried_then_reported(
    session: aiohttp.ClientSession, tmp_path: Path, delays: list[float]
) -> None:
    async with Origin.running() as gone:
        url = gone.url("image")
    with pytest.raises(FetchError, match=r"gave up after 3 attempts"):
        await fetcher(session, retries=2).fetch(url, tmp_path / "image")
    assert len(delays) == 2


# -- parallelism, redirects, file:// ----------------------------------------------------------


async def test_bounded_parallelism(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    bodies = {f"file{n}": blob_bytes(30 + n, 65536) for n in range(6)}
    for name, body in bodies.items():
        origin.blobs[name] = Blob(body)
    origin.gate = 2
    f = fetcher(session, jobs=2)
    results = await asyncio.gather(
        *(f.fetch(origin.url(name), tmp_path / name, sha256=sha(b)) for name, b in bodies.items())
    )
    assert origin.peak == 2
    assert len(origin.seen) == 6
    assert [r.path.read_bytes() for r in results] == list(bodies.values())


async def test_same_destination_twice_at_once(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(40)
    origin.blobs["image"] = Blob(body)
    f = fetcher(session)
    url, dest = origin.url("image"), tmp_path / "image"
    first, second = await asyncio.gather(
        f.fetch(url, dest, sha256=sha(body)), f.fetch(url, dest, sha256=sha(body))
    )
    assert sorted([first.downloaded, second.downloaded]) == [0, SIZE]
    assert len(origin.seen) == 1


async def test_authorization_not_sent_to_another_host(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(41)
    async with Origin.running() as storage:  # another port: another origin
        storage.blobs["layer"] = Blob(body)
        origin.blobs["layer"] = Blob(body)
        origin.redirects["away"] = storage.url("layer")
        origin.redirects["here"] = origin.url("layer")
        auth = {"Authorization": "Bearer registry-token"}
        f = fetcher(session)
        await f.fetch(origin.url("here"), tmp_path / "a", headers=auth, sha256=sha(body))
        await f.fetch(origin.url("away"), tmp_path / "b", headers=auth, sha256=sha(body))
        assert [seen.headers.get("Authorization") for seen in origin.seen] == [
            "Bearer registry-token",
            "Bearer registry-token",
            "Bearer registry-token",
        ]
        [elsewhere] = storage.seen
        assert "Authorization" not in elsewhere.headers
    assert (tmp_path / "b").read_bytes() == body


async def test_file_url(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    body = blob_bytes(42)
    source = tmp_path / "mirror dir" / "image.bin"
    source.parent.mkdir()
    source.write_bytes(body)
    url = source.as_uri()
    dest = tmp_path / "out" / "image.bin"
    f = fetcher(session)
    got = await f.fetch(url, dest, sha256=sha(body), size=SIZE)
    assert got == Fetched(dest, SIZE, sha(body), SIZE)
    assert dest.read_bytes() == body
    assert (await f.fetch(url, dest, sha256=sha(body))).downloaded == 0

    with pytest.raises(FetchError, match="sha256 mismatch"):
        await f.fetch(url, tmp_path / "out" / "other", sha256=sha(b"x"))
    with pytest.raises(FetchError, match="size mismatch"):
        await f.fetch(url, tmp_path / "out" / "other", size=1)
    with pytest.raises(FetchError, match="No such file") as caught:
        await f.fetch(url + ".missing", tmp_path / "out" / "other")
    assert caught.value.url == url + ".missing"
    assert leftovers(tmp_path / "out" / "other") == []
    assert not (tmp_path / "out" / "other").exists()


# -- progress output --------------------------------------------------------------------------


async def test_plain_progress_lines(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = blob_bytes(50)
    origin.blobs["kubelet"] = Blob(body, cuts=[HALF])
    out = io.StringIO()
    f = fetcher(session, retries=3, progress=Progress.for_stream(out))
    dest = tmp_path / "kubelet"
    await f.fetch(origin.url("kubelet"), dest, sha256=sha(body))
    await f.fetch(origin.url("kubelet"), dest, sha256=sha(body))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 5, lines
    assert lines[0] == f"fetching kubelet {origin.url('kubelet')}"
    assert re.fullmatch(
        r"retrying kubelet in \d+\.\d s \(attempt 2/4\): "
        r"connection lost at 97\.7 KiB of 195\.3 KiB",
        lines[1],
    )
    assert lines[2] == "resuming kubelet at 97.7 KiB"
    assert re.fullmatch(r"fetched kubelet 195\.3 KiB in \d+\.\d s \(\d+\.\d [KMG]iB/s\)", lines[3])
    assert lines[4] == "have kubelet (sha256 ok)"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_terminal_progress(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    assert type(Progress.for_stream(FakeTerminal(), force_plain=True)) is Progress
    out = FakeTerminal()
    progress = Progress.for_stream(out)
    assert isinstance(progress, TerminalProgress)
    bodies = {f"f{n}": blob_bytes(60 + n) for n in range(4)}
    for name, body in bodies.items():
        origin.blobs[name] = Blob(body)
    f = fetcher(session, jobs=2, progress=progress)
    await asyncio.gather(
        *(f.fetch(origin.url(n), tmp_path / n, sha256=sha(b)) for n, b in bodies.items())
    )
    text = out.getvalue()
    for name in bodies:
        assert re.search(rf"fetched {name} 195\.3 KiB in [^\r\n]+\n", text), text
    assert "fetching" not in text  # the bars say that


# -- small bodies -----------------------------------------------------------------------------


async def test_fetch_bytes(origin: Origin, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    origin.blobs["version.txt"] = Blob(b"FLATCAR_VERSION=3815.2.0\n", statuses=[503])
    f = fetcher(session)
    assert await f.fetch_bytes(origin.url("version.txt")) == b"FLATCAR_VERSION=3815.2.0\n"
    assert len(origin.seen) == 2
    assert f.downloaded == 25

    local = tmp_path / "SHA256SUMS"
    local.write_bytes(b"abc  file\n")
    assert await f.fetch_bytes(local.as_uri()) == b"abc  file\n"

    with pytest.raises(FetchError, match=r"^nothing: HTTP 404 Not Found from "):
        await f.fetch_bytes(origin.url("nothing"), label="nothing")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_fetch_bytes_limit(
    origin: Origin, session: aiohttp.ClientSession, tmp_path: Path, chunked: bool
) -> None:
    origin.blobs["index.json"] = Blob(b"x" * 5000, chunked=chunked)
    f = fetcher(session)
    assert len(await f.fetch_bytes(origin.url("index.json"), limit=5000)) == 5000
    origin.seen.clear()
    with pytest.raises(FetchError, match=r"index: more than 4999 bytes from http://"):
        await f.fetch_bytes(origin.url("index.json"), label="index", limit=4999)
    assert len(origin.seen) == 1
    local = tmp_path / "big"
    local.write_bytes(b"x" * 5000)
    with pytest.raises(FetchError, match="more than 4999 bytes"):
        await f.fetch_bytes(local.as_uri(), limit=4999)
