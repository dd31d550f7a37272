"""A client for the registry HTTP API v2, enough to pull linux/amd64 images without a Docker
daemon: anonymous bearer tokens as public registries hand them out, manifests (Docker v2 and
OCI, lists and indexes resolved to linux/amd64) checked against their digests, and blobs
downloaded through the project's Fetcher into a content-addressed directory.

The manifest formats, descriptors and their validation are in ``manifest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from ..download.fetcher import Fetcher, FetchError
from .manifest import (
    ACCEPT,
    MANIFEST_LISTS,
    PLATFORM,
    SCHEMA1,
    CredentialsNeeded,
    Descriptor,
    DigestMismatch,
    PulledImage,
    RegistryError,
    ResolvedImage,
    TLSFailure,
    UnsupportedManifest,
    blob_path,
    json_object,
    manifest_media_type,
    parse_image_manifest,
    select_platform,
    sha256_digest,
)
from .reference import DEFAULT_DOMAIN, ImageReference, parse_reference

MANIFEST_LIMIT = 4 << 20  # distribution refuses manifests larger than this
DOCKER_HUB = "https://registry-1.docker.io"
_TOKEN_MARGIN = 30.0  # refresh a token this many seconds before it expires
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# A layer upload can take longer than any total limit; a registry that stops answering cannot.
API_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


def repository_scope(repository: str, *, push: bool = False) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


@dataclass
class _Token:
    value: str
    expires: float  # time.monotonic()


@dataclass(frozen=True)
class _Challenge:
    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


class RegistryClient:
    """Talks to registries over the API v2 with anonymous bearer tokens.

    ``endpoints`` maps a registry host as written in references (``quay.io``, ``docker.io``,
    ``localhost:5001``) to the base URL to use for it (mirrors, tests); otherwise Docker Hub is
    ``https://registry-1.docker.io`` and any other host ``https://<host>``. ``server_hostname``
    is the TLS name to check when talking to an endpoint given by address.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoints: Mapping[str, str] | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        platform: tuple[str, str] = PLATFORM,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.session = session
        self.endpoints = {host: url.rstrip("/") for host, url in (endpoints or {}).items()}
        # aiohttp's default (True) verifies against the system store; None would be deprecated.
        self.ssl: ssl_module.SSLContext | bool = True if ssl is None else ssl
        self.server_hostname = server_hostname
        self.platform = platform
        self.retries = retries
        self.backoff = backoff
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._challenges: dict[str, _Challenge] = {}
        self._token_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._inflight: dict[Path, asyncio.Future[int]] = {}

    # -- URLs and authentication -----------------------------------------------------------

    def base_url(self, host: str) -> str:
        if host in self.endpoints:
            return self.endpoints[host]
        if host == DEFAULT_DOMAIN:
            return DOCKER_HUB
        return f"https://{host}"

    def url(self, host: str, path: str) -> URL:
        return URL(self.base_url(host) + path, encoded=True)

    async def authorization(self, host: str, scopes: Sequence[str]) -> dict[str, str]:
        """Headers authorizing ``scopes`` on ``host``: a bearer token when the host asked for
        one before (fetched or refreshed as needed), else none."""
        challenge = self._challenges.get(host)
        if challenge is None:
            return {}
        token = await self._token(host, challenge, scopes)
        return {"Authorization": f"Bearer {token}"}

    def _token_expired(self, host: str, scopes: Sequence[str]) -> bool:
        token = self._tokens.get((host, " ".join(scopes)))
        return token is not None and token.expires - time.monotonic() < _TOKEN_MARGIN

    async def _token(
        self, host: str, challenge: _Challenge, scopes: Sequence[str], *, fresh: bool = False
    ) -> str:
        key = (host, " ".join(scopes))
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if (
                cached is not None
                and not fresh
                and cached.expires - time.monotonic() > _TOKEN_MARGIN
            ):
                return cached.value
            token = await self._fetch_token(host, challenge, scopes)
            self._tokens[key] = token
            return token.value

    async def _fetch_token(self, host: str, challenge: _Challenge, scopes: Sequence[str]) -> _Token:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryError(f"{host}: bearer challenge without a realm")
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params += [("scope", scope) for scope in scopes]
        started = time.monotonic()
        try:
            async with self.session.get(
                realm, params=params, ssl=self.ssl, timeout=API_TIMEOUT
            ) as resp:
                if resp.status in (401, 403):
                    raise CredentialsNeeded(
                        f"{host}: the token service {realm} refused anonymous access to "
                        f"{' '.join(scopes)} (HTTP {resp.status}): needs credentials"
                    )
                if resp.status != 200:
                    raise RegistryError(f"{host}: token service {realm} answered {resp.status}")
                body = await _read_limited(resp, 1 << 20, f"token from {realm}")
        except aiohttp.ClientError as exc:
            raise RegistryError(f"{host}: token service {realm}: {exc}") from exc
        doc = json_object(body, f"token from {realm}")
        value = doc.get("token") or doc.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(f"{host}: token service {realm} sent no token")
        lifetime = doc.get("expires_in")
        # The token spec's default lifetime is 60 s; clamp what servers say to something sane.
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 60.0
        return _Token(value, started + max(seconds, _TOKEN_MARGIN + 1))

    def _remember_challenge(self, host: str, resp: aiohttp.ClientResponse, what: str) -> None:
        challenges = [
            c for h in resp.headers.getall("WWW-Authenticate", []) for c in parse_challenges(h)
        ]
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            self._challenges[host] = bearer
            return
        if any(c.scheme == "basic" for c in challenges):
            raise CredentialsNeeded(
                f"{what}: {host} asks for a login (Basic auth): needs credentials, which "
                "bootstrapperd does not handle; mirror the image to a public registry"
            )
        raise RegistryError(f"{what}: {host} answered 401 without a usable challenge")

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        host: str,
        path: str,
        *,
        scopes: Sequence[str],
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        allow_redirects: bool = True,
        url: URL | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One API request with authentication and retries of transient failures (connection
        errors, 5xx, 429). A 401 gets a token for ``scopes`` and the request is sent again;
        ``body`` makes a fresh request body for every attempt. The response is released when
        the block ends. ``what`` names the request in errors; ``url``, when given, is used
        instead of ``host`` + ``path`` (an upload session's Location).

        A 401 from where a redirect led (registry.k8s.io sends manifests to a regional
        registry) is answered with a token from that registry's own challenge, and the request
        goes there directly: Authorization is not carried across origins on a redirect."""
        if url is None:
            url = self.url(host, path)
        base_origin = url.origin()
        auth_host, auth_scopes = host, list(scopes)
        auth_rounds = 0
        attempt = 0
        while True:
            sent = dict(headers or {})
            sent.update(await self.authorization(auth_host, auth_scopes))
            extra: dict[str, Any] = {}
            if self.server_hostname and url.scheme == "https" and url.origin() == base_origin:
                extra["server_hostname"] = self.server_hostname
            try:
                resp = await self.session.request(
                    method,
                    url,
                    headers=sent,
                    params=params,
                    data=body() if body is not None else None,
                    ssl=self.ssl,
                    allow_redirects=allow_redirects,
                    timeout=API_TIMEOUT,
                    **extra,
                )
            except aiohttp.ClientSSLError as exc:  # a certificate does not fix itself
                raise TLSFailure(f"{what}: {method} {url}: {exc}") from exc
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt >= self.retries:
                    reason = str(exc) or type(exc).__name__
                    raise RegistryError(f"{what}: {method} {url}: {reason}") from exc
                attempt += 1
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if resp.status == 401:
                resp.release()
                auth_rounds += 1
                had_token = "Authorization" in sent
                if resp.url.origin() != url.origin():
                    url, params = resp.url, None  # the redirect's URL carries its query
                    auth_host = url.raw_authority
                    had_token = False  # it was never sent there
                self._remember_challenge(auth_host, resp, what)
                challenge = self._challenges[auth_host]
                if auth_host != host and challenge.params.get("scope"):
                    auth_scopes = challenge.params["scope"].split()
                if auth_rounds > 2 or (had_token and auth_rounds > 1):
                    raise CredentialsNeeded(
                        f"{what}: {auth_host} refused an anonymous token for "
                        f"{' '.join(auth_scopes)}: the repository is private or does not "
                        "exist (needs credentials)"
                    )
                await self._token(auth_host, challenge, auth_scopes, fresh=had_token)
                continue
            if resp.status in _RETRY_STATUS and attempt < self.retries:
                resp.release()
                attempt += 1
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            try:
                yield resp
            finally:
                resp.release()
            return

    # -- Manifests ----------------------------------------------------------------------------

    async def _get_manifest(self, ref: ImageReference, pin: str) -> tuple[bytes, str, str | None]:
        what = f"{ref.original}: manifest {pin}"
        async with self.request(
            "GET",
            ref.domain,
            f"/v2/{ref.path}/manifests/{pin}",
            scopes=[repository_scope(ref.path)],
            what=what,
            headers={"Accept": ACCEPT},
        ) as resp:
            if resp.status == 404:
                raise RegistryError(f"{what}: not found in {ref.name} (HTTP 404)")
            if resp.status != 200:
                detail = (await resp.text(errors="replace"))[:300].strip()
                raise RegistryError(f"{what}: HTTP {resp.status} {detail}".rstrip())
            data = await _read_limited(resp, MANIFEST_LIMIT, what)
            media = manifest_media_type(data, resp.headers.get("Content-Type"))
            return data, media, resp.headers.get("Docker-Content-Digest")

    async def resolve(self, ref: ImageReference | str) -> ResolvedImage:
        """The linux/amd64 image manifest ``ref`` names, verified against its digest."""
        if isinstance(ref, str):
            ref = parse_reference(ref)
        data, media, announced = await self._get_manifest(ref, ref.pin)
        digest = sha256_digest(data)
        if ref.digest is not None and digest != ref.digest:
            raise DigestMismatch(
                f"{ref.original}: the registry sent a manifest with digest {digest}, "
                f"not the pinned {ref.digest}"
            )
        if (
            ref.digest is None
            and announced
            and announced.startswith("sha256:")
            and (announced != digest)
        ):
            raise DigestMismatch(
                f"{ref.original}: manifest digest {digest} is not the "
                f"Docker-Content-Digest {announced} the registry announced"
            )
        index_digest: str | None = None
        for _ in range(3):  # an index may point at another index; three levels is plenty
            if media in SCHEMA1:
                raise UnsupportedManifest(
                    f"{ref.original}: Docker schema 1 manifest; not supported (the image is too "
                    "old; pick a newer tag or push it again with a current Docker)"
                )
            if media not in MANIFEST_LISTS:
                break
            try:
                entry, _present = select_platform(data, self.platform)
            except RegistryError as exc:
                raise type(exc)(f"{ref.original}: {exc}") from None
            index_digest = index_digest or digest
            data, media, _announced = await self._get_manifest(ref, entry.digest)
            digest = sha256_digest(data)
            if digest != entry.digest or len(data) != entry.size:
                raise DigestMismatch(
                    f"{ref.original}: the {'/'.join(self.platform)} manifest the list names "
                    f"({entry.digest}, {entry.size} bytes) arrived as {digest}, {len(data)} bytes"
                )
        try:
            config, layers = parse_image_manifest(data, media)
        except RegistryError as exc:
            raise type(exc)(f"{ref.original}: {exc}") from None
        return ResolvedImage(
            reference=ref,
            manifest=data,
            media_type=media,
            digest=digest,
            config=config,
            layers=layers,
            index_digest=index_digest,
        )

    # -- Blobs --------------------------------------------------------------------------------

    async def pull(
        self, ref: ImageReference | str | ResolvedImage, blob_dir: Path, fetcher: Fetcher
    ) -> PulledImage:
        """Resolve ``ref`` (unless it already is resolved) and fetch its config and layers into
        ``blob_dir/sha256/<hex>``.

        A blob already there (with the right hash) costs no request; a blob being fetched for
        another image by this client is waited for, not fetched twice. A download that fails or
        does not hash to its digest raises FetchError naming the image and the blob.
        """
        resolved = ref if isinstance(ref, ResolvedImage) else await self.resolve(ref)
        (blob_dir / "sha256").mkdir(parents=True, exist_ok=True)
        kinds = {resolved.config.digest: "config"}
        for i, layer in enumerate(resolved.layers):
            kinds.setdefault(layer.digest, f"layer {i + 1}/{len(resolved.layers)}")
        tasks = [
            asyncio.create_task(self._fetch_blob(resolved, d, blob_dir, fetcher, kinds[d.digest]))
            for d in resolved.blobs
        ]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # One blob failed: the image cannot be had, so its other downloads stop (their
            # part files stay, for the fetcher to resume next time).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        fetched = tuple(d.digest for d, got in zip(resolved.blobs, results, strict=True) if got)
        return PulledImage(
            resolved=resolved,
            blob_dir=blob_dir,
            downloaded=sum(got for got in results if got),
            fetched=fetched,
        )

    async def _fetch_blob(
        self,
        image: ResolvedImage,
        blob: Descriptor,
        blob_dir: Path,
        fetcher: Fetcher,
        kind: str,
    ) -> int | None:
        """Bytes downloaded for ``blob`` (None: it was already there or fetched by another)."""
        dest = blob_path(blob_dir, blob.digest)
        # Another image of this client fetching the same blob: wait for it; if it failed, try
        # again here (so the error names this image too).
        while (running := self._inflight.get(dest)) is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
            if running.done() and not running.cancelled() and running.exception() is None:
                return None
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[dest] = future
        try:
            got = await self._download(image, blob, dest, fetcher, kind)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: only waiters care, and they handle it
            raise
        else:
            future.set_result(got)
            return got
        finally:
            del self._inflight[dest]

    async def _download(
        self, image: ResolvedImage, blob: Descriptor, dest: Path, fetcher: Fetcher, kind: str
    ) -> int:
        ref = image.reference
        scopes = [repository_scope(ref.path)]
        url = str(self.url(ref.domain, f"/v2/{ref.path}/blobs/{blob.digest}"))
        label = f"{ref.original} {kind}"
        for attempt in range(2):
            headers = await self.authorization(ref.domain, scopes)
            try:
                fetched = await fetcher.fetch(
                    url, dest, sha256=blob.hex, size=blob.size, headers=headers, label=label
                )
            except FetchError:
                # Hub tokens live five minutes; a long layer (or its retries) can outlast one.
                # Only then is a second round with a fresh token worth it.
                if attempt == 0 and headers and self._token_expired(ref.domain, scopes):
                    continue
                raise  # its label names the image and the blob, its URL the digest
            return fetched.downloaded
        raise AssertionError("unreachable")  # pragma: no cover


_CHALLENGE_TOKEN_RE = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_.-]*)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*)))?\s*,?'
)


def parse_challenges(header: str) -> list[_Challenge]:
    """The challenges of one WWW-Authenticate header (``Bearer realm="…",service="…"``): a bare
    word starts a challenge, ``name=value`` pairs are its parameters."""
    found: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(header):
        match = _CHALLENGE_TOKEN_RE.match(header, pos)
        if match is None or match.end() == pos:
            break
        pos = match.end()
        name, quoted, plain = match.groups()
        if quoted is None and plain is None:
            found.append((name.lower(), {}))
        elif found:
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
            found[-1][1][name.lower()] = value
    return [_Challenge(scheme, params) for scheme, params in found]


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise RegistryError(f"{what}: {declared} bytes, more than the {limit} allowed")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise RegistryError(f"{what}: more than the {limit} bytes allowed")
        chunks.append(chunk)
    data = b"".join(chunks)
    if declared is not None and len(data) != declared:
        raise RegistryError(f"{what}: got {len(data)} of {declared} bytes")
    return data
