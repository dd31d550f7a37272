"""A local release mirror for pack's tests: the layout of the OS vendor's
release servers and of dl.k8s.io, signed by a test key, served by aiohttp on loopback with a
log of every request and faults a test can ask for (a connection cut in the middle, a flipped
byte, a wrong checksum, a bad signature). Nothing here talks to anything but 127.0.0.1."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from bootstrapperd.lab.vm.release import BOARD, ReleaseKey, version_txt

__all__ = ["BOARD", "Mirror", "ReleaseKey", "release_files", "serve_mirror", "version_txt"]


def release_files(os_name: str, version: str, size: int = 200_000) -> dict[str, bytes]:
    """Stand-in release files of distinct, recognisable content (not bootable)."""
    files = {}
    for n, suffix in enumerate(
        ("production_pxe.vmlinuz", "production_pxe_image.cpio.gz", "production_image.bin.bz2")
    ):
        seed = f"{os_name}-{version}-{suffix}".encode()
        block = hashlib.sha256(seed).digest() * (size // 32 + n + 1)
        files[f"{os_name}_{suffix}"] = block[: size + n * 1000]
    return files


@dataclass
class Mirror:
    """The files served (URL path → bytes) and what the server saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    cuts: dict[str, int] = field(default_factory=dict)  # path -> responses to cut (half sent)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_release(
        self,
        key: ReleaseKey,
        os_name: str,
        channel: str,
        version: str,
        files: Mapping[str, bytes] | None = None,
        *,
        current: bool = True,
    ) -> dict[str, bytes]:
        """A release under ``/<channel>/amd64-usr/<version>/`` (the mirror URL is
        ``<url>/{channel}``), every file signed; ``current`` pointing at it when asked."""
        files = dict(files or release_files(os_name, version))
        base = f"/{channel}/{BOARD}/{version}"
        for name, data in files.items():
            self.files[f"{base}/{name}"] = data
            self.files[f"{base}/{name}.sig"] = key.sign(data)
        self.files[f"{base}/version.txt"] = version_txt(os_name, version)
        if current:
            self.files[f"/{channel}/{BOARD}/current/version.txt"] = version_txt(os_name, version)
        return files

    def add_kubernetes(self, version: str, names: tuple[str, ...] = ("kubelet", "kubectl")) -> None:
        for name in names:
            data = hashlib.sha256(f"{name}-{version}".encode()).digest() * 3000
            path = f"/kubernetes/{version}/bin/linux/amd64/{name}"
            self.files[path] = data
            self.files[f"{path}.sha256"] = hashlib.sha256(data).hexdigest().encode()

    def file_requests(self) -> list[str]:
        """GETs of anything but small metadata (version.txt, .sig, .sha256)."""
        small = ("version.txt", ".sig", ".sha256")
        return [p for m, p, _ in self.requests if m == "GET" and not p.endswith(small)]


@asynccontextmanager
async def serve_mirror(mirror: Mirror) -> AsyncIterator[Mirror]:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        mirror.requests.append((request.method, path, request.headers.get("Range")))
        data = mirror.files.get(path)
        if data is None:
            raise web.HTTPNotFound()
        start = 0
        status = 200
        range_header = request.headers.get("Range", "")
        if range_header.startswith("bytes=") and range_header.endswith("-"):
            start = int(range_header[6:-1])
            status = 206
        body = data[start:]
        response = web.StreamResponse(status=status)
        response.content_length = len(body)
        response.headers["ETag"] = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        if mirror.cuts.get(path, 0) > 0:
            mirror.cuts[path] -= 1
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(body)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None)
    assert sockets
    mirror.port = sockets[0].getsockname()[1]
    try:
        yield mirror
    finally:
        await runner.cleanup()
