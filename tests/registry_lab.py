"""Real container-image infrastructure on loopback for tests: Debian's ``docker-registry``
(distribution 2.8) started on a free port with its storage in a temporary directory (optionally
over TLS), a bearer-token proxy in front of a registry that behaves like the public ones (401 +
``WWW-Authenticate: Bearer``, anonymous tokens per scope) and can corrupt or cut blobs, small
real images built in Python, and an isolated ``dockerd`` for ``docker load``.

Nothing here talks to anything but 127.0.0.1; every process is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from yarl import URL

DOCKER_REGISTRY = "/usr/bin/docker-registry"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT_ALL = ", ".join((DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path
    hostname: str

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this CA."""
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls(directory: Path, hostname: str) -> TLSFiles:
    """A CA and a server certificate for ``hostname`` and 127.0.0.1, signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry lab CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(
        directory / "ca.crt", directory / "server.crt", directory / "server.key", hostname
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return files


# -- docker-registry ---------------------------------------------------------------------------


class Registry:
    """``docker-registry serve`` on 127.0.0.1:<free port>, storage under ``root``."""

    def __init__(self, root: Path, *, tls: TLSFiles | None = None) -> None:
        self.root = root
        self.tls = tls
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self, timeout: float = 30.0) -> Registry:
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            config = self.root / "config.yml"
            http: dict[str, Any] = {"addr": self.host}
            if self.tls is not None:
                http["tls"] = {"certificate": str(self.tls.cert), "key": str(self.tls.key)}
            doc = {
                "version": 0.1,
                "storage": {
                    "filesystem": {"rootdirectory": str(self.root / "storage")},
                    "delete": {"enabled": True},
                },
                "http": http,
            }
            config.write_text(json.dumps(doc))  # JSON is YAML
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [DOCKER_REGISTRY, "serve", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"docker-registry did not start: {self._log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        context = self.tls.client_context() if self.tls else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context) as r:  # noqa: S310 (our own https URL)
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- images ------------------------------------------------------------------------------------


def layer(files: Mapping[str, bytes]) -> tuple[bytes, str]:
    """A gzip'ed layer tar holding ``files`` (deterministic), and its diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = sorted({str(Path(p).parent) for p in files} - {"."})
        for d in directories:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1_700_000_000
            tar.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(files[name]))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), sha256(uncompressed)


@dataclass(frozen=True)
class BuiltImage:
    manifest: bytes
    media_type: str
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def blobs(self) -> dict[str, bytes]:
        blobs = {sha256(self.config): self.config}
        blobs.update({sha256(layer): layer for layer in self.layers})
        return blobs


def build_image(
    layers: Sequence[Mapping[str, bytes]],
    *,
    oci: bool = False,
    architecture: str = "amd64",
    variant: str | None = None,
    label: str = "",
) -> BuiltImage:
    """A real image: gzip'ed layers, a config with the right diff IDs, a v2 or OCI manifest."""
    built = [layer(files) for files in layers]
    platform: dict[str, Any] = {"architecture": architecture, "os": "linux"}
    if variant:
        platform["variant"] = variant
    config = {
        **platform,
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/true"], "Env": ["PATH=/bin"], "Labels": {"lab": label}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in built]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "lab"} for _ in built],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    layer_type = (
        "application/vnd.oci.image.layer.v1.tar+gzip"
        if oci
        else ("application/vnd.docker.image.rootfs.diff.tar.gzip")
    )
    media = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json"
            if oci
            else "application/vnd.docker.container.image.v1+json",
            "digest": sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": layer_type, "digest": sha256(data), "size": len(data)}
            for data, _ in built
        ],
    }
    return BuiltImage(
        manifest=json.dumps(manifest, indent=3).encode(),
        media_type=media,
        config=config_bytes,
        layers=tuple(data for data, _ in built),
    )


def build_index(
    images: Sequence[tuple[BuiltImage, Mapping[str, str]]], *, oci: bool = False
) -> tuple[bytes, str]:
    """A manifest list (or OCI index) of ``(image, platform)``; its bytes and media type."""
    media = OCI_INDEX if oci else DOCKER_LIST
    doc = {
        "schemaVersion": 2,
        "mediaType": media,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": dict(platform),
            }
            for image, platform in images
        ],
    }
    return json.dumps(doc, indent=2).encode(), media


async def upload_blob(
    session: aiohttp.ClientSession, base: str, repo: str, data: bytes, **kw: Any
) -> None:
    """The plainest upload there is (POST, then one PUT with the digest), independent of the
    code under test."""
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/", **kw) as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    url = URL(location)
    if not url.is_absolute():
        url = URL(base).join(url)
    url = url.update_query({"digest": sha256(data)})
    async with session.put(url, data=data, **kw) as resp:
        assert resp.status == 201, await resp.text()


async def upload_manifest(
    session: aiohttp.ClientSession,
    base: str,
    repo: str,
    reference: str,
    data: bytes,
    media_type: str,
    **kw: Any,
) -> None:
    async with session.put(
        f"{base}/v2/{repo}/manifests/{reference}",
        data=data,
        headers={"Content-Type": media_type},
        **kw,
    ) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Docker-Content-Digest"] == sha256(data)


async def upload_image(
    session: aiohttp.ClientSession,
    base: str,
    repo: str,
    tag: str | None,
    image: BuiltImage,
    **kw: Any,
) -> None:
    """Blobs, then the manifest under ``tag`` (or only by digest)."""
    for data in image.blobs.values():
        await upload_blob(session, base, repo, data, **kw)
    await upload_manifest(
        session, base, repo, tag or image.digest, image.manifest, image.media_type, **kw
    )


async def upload_index(
    session: aiohttp.ClientSession,
    base: str,
    repo: str,
    tag: str,
    images: Sequence[tuple[BuiltImage, Mapping[str, str]]],
    *,
    oci: bool = False,
    **kw: Any,
) -> tuple[bytes, str]:
    """Every platform's image by digest, then the list under ``tag``."""
    for image, _ in images:
        await upload_image(session, base, repo, None, image, **kw)
    data, media = build_index(images, oci=oci)
    await upload_manifest(session, base, repo, tag, data, media, **kw)
    return data, media


# -- the token proxy -----------------------------------------------------------------------------

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length"}
_HOP |= {"proxy-authorization", "proxy-authenticate", "trailer", "host", "authorization"}


@dataclass
class ProxyLog:
    """What the proxy saw: requests (method, path with query, status answered)."""

    requests: list[tuple[str, str, int]] = field(default_factory=list)
    # Blob upload PUTs: (path, Content-Length, Transfer-Encoding) as they arrived.
    uploads: list[tuple[str, int | None, str | None]] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)  # scopes asked per token request

    def blob_gets(self, digest: str | None = None) -> list[str]:
        return [
            p
            for m, p, s in self.requests
            if m == "GET"
            and "/blobs/" in p
            and "/uploads/" not in p
            and s in (200, 206)
            and (digest is None or p.split("?")[0].endswith(digest))
        ]

    def unauthorized(self) -> int:
        return sum(1 for _, _, s in self.requests if s == 401)


class TokenProxy:
    """A registry front that wants bearer tokens, as Docker Hub and quay.io do.

    Without a token granting the repository and action (pull for GET/HEAD, push otherwise; a
    mount also needs pull on ``from``) it answers 401 with ``WWW-Authenticate: Bearer realm=…
    /token,service="test",scope=…``. ``/token`` hands anonymous tokens for the scopes asked.
    Faults: ``corrupt`` (digests whose blob bodies get a byte flipped), ``cut`` (digest → how
    many more times to cut the body in the middle), ``basic`` (answer a Basic challenge
    instead), ``fail`` (``"METHOD /path-prefix"`` strings answered 500), ``tamper`` (manifest
    references, tag or digest, or ``"*"``, whose bodies get a trailing space, so they no longer
    match their digest), ``fake_manifests`` (reference → body and Content-Type served instead
    of the registry's), ``token_field`` (``token`` or ``access_token``).

    With ``redirect_manifests`` (another proxy's URL) it behaves like registry.k8s.io instead:
    no tokens wanted, manifest requests answered 307 to that registry, blobs served here.
    """

    def __init__(self, upstream: str, *, upstream_ssl: ssl.SSLContext | bool = True) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_ssl = upstream_ssl
        self.log = ProxyLog()
        self.corrupt: set[str] = set()
        self.cut: dict[str, int] = {}
        self.fail: set[str] = set()
        self.basic = False
        self.tamper: set[str] = set()
        self.token_field = "token"
        self.redirect_manifests: str | None = None
        self.fake_manifests: dict[str, tuple[bytes, str]] = {}  # reference → body, type
        self._grants: dict[str, set[tuple[str, str]]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    async def start(self) -> TokenProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/token", self._token)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> TokenProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _token(self, request: web.Request) -> web.Response:
        if request.query.get("service") != "test":
            return web.json_response({"errors": [{"code": "DENIED"}]}, status=401)
        scopes = request.query.getall("scope", [])
        self.log.tokens.append(list(scopes))
        grants: set[tuple[str, str]] = set()
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            if kind == "repository":
                grants |= {(repo, action) for action in actions.split(",")}
        token = secrets.token_hex(16)
        self._grants[token] = grants
        return web.json_response({self.token_field: token, "expires_in": 300})

    def _needed(self, request: web.Request) -> tuple[str, set[tuple[str, str]]]:
        path = request.path
        if not path.startswith("/v2/") or path == "/v2/":
            return "", set()
        rest = path[len("/v2/") :]
        for marker in ("/manifests/", "/blobs/", "/tags/"):
            if marker in rest:
                repo = rest.split(marker)[0]
                break
        else:
            return "", set()
        action = "pull" if request.method in ("GET", "HEAD") else "push"
        needed = {(repo, action)}
        if "mount" in request.query and "from" in request.query:
            needed.add((request.query["from"], "pull"))
        return f"{repo}:{'pull' if action == 'pull' else 'pull,push'}", needed

    def _authorized(self, request: web.Request, needed: set[tuple[str, str]]) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        grants = self._grants.get(header[len("Bearer ") :])
        return grants is not None and needed <= grants

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        if request.method == "PUT" and "/blobs/uploads/" in request.path:
            encoding = request.headers.get("Transfer-Encoding")
            self.log.uploads.append((request.path, request.content_length, encoding))
        response = await self._answer(request)
        self.log.requests.append((request.method, request.path_qs, response.status))
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        scope, needed = self._needed(request)
        if self.redirect_manifests is not None and "/manifests/" in request.path:
            location = self.redirect_manifests + request.path_qs
            return web.Response(status=307, headers={"Location": location})
        if self.basic:
            return web.Response(
                status=401, headers={"WWW-Authenticate": 'Basic realm="lab"'}, text="login"
            )
        if self.redirect_manifests is None and not self._authorized(request, needed):
            challenge = f'Bearer realm="{self.url}/token",service="test"'
            if scope:
                challenge += f',scope="repository:{scope}"'
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        reference = request.path.rpartition("/")[2]
        if "/manifests/" in request.path and reference in self.fake_manifests:
            body, content_type = self.fake_manifests[reference]
            return web.Response(body=body, headers={"Content-Type": content_type})
        if any(f"{request.method} {request.path_qs}".startswith(f) for f in self.fail):
            failure = {"errors": [{"code": "UNKNOWN", "message": "lab fault"}]}
            return web.json_response(failure, status=500)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Host"] = self.host  # so the registry's Location points back at the proxy
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        forwarded = await request.read() if request.body_exists else None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=forwarded,
            allow_redirects=False,
            ssl=self.upstream_ssl,
        ) as upstream:
            data = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            digest = request.path.rpartition("/")[2]
            is_blob = "/blobs/sha256:" in request.path and request.method == "GET"
            if is_blob and digest in self.corrupt and data:
                flipped = bytearray(data)
                flipped[len(flipped) // 2] ^= 0xFF
                data = bytes(flipped)
            if (
                "/manifests/" in request.path
                and request.method == "GET"
                and upstream.status == 200
                and ("*" in self.tamper or request.path.rpartition("/")[2] in self.tamper)
            ):
                data += b" "
            if is_blob and self.cut.get(digest, 0) > 0 and len(data) > 1:
                self.cut[digest] -= 1
                return await self._cut_response(request, upstream.status, out_headers, data)
            if request.method == "HEAD":
                response = web.StreamResponse(status=upstream.status, headers=out_headers)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                await response.write_eof()
                return response
            return web.Response(status=upstream.status, headers=out_headers, body=data)

    async def _cut_response(
        self, request: web.Request, status: int, headers: Mapping[str, str], data: bytes
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.close()  # the client sees the connection drop mid-body
        return response


async def http_status(url: str, **kw: Any) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, **kw) as resp:
        return resp.status


# -- an isolated dockerd -----------------------------------------------------------------------


class DockerUnavailable(Exception):
    """dockerd cannot run here; the message says why (tests skip with it)."""


class DockerDaemon:
    """A private ``dockerd``: its own data root, exec root, socket, pidfile and containerd
    namespace, no iptables and no bridge, so it touches nothing of the host's Docker."""

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        # Unix socket paths are limited to 108 bytes: the short-lived parts live in /tmp.
        self.base = Path(tempfile.mkdtemp(prefix="bsd-dockerd-", dir="/tmp"))
        self.exec_root = self.base / "exec"
        self.socket = self.base / "docker.sock"
        self.pidfile = self.base / "docker.pid"
        self.log = data_root.parent / f"{data_root.name}.dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.storage_driver = ""

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @classmethod
    def start(cls, data_root: Path, timeout: float = 60.0) -> DockerDaemon:
        """A running daemon, or DockerUnavailable with the reason (overlay2 tried, then vfs)."""
        for tool in ("dockerd", "docker"):
            if shutil.which(tool) is None:
                raise DockerUnavailable(f"`{tool}` is not installed")
        if os.geteuid() != 0:
            raise DockerUnavailable("dockerd needs root")
        reasons = []
        for driver in ("overlay2", "vfs"):
            daemon = cls(data_root)
            try:
                daemon._start(driver, timeout)
                return daemon
            except DockerUnavailable as exc:
                reasons.append(f"{driver}: {exc}")
                daemon.stop()
        raise DockerUnavailable("dockerd did not start: " + " | ".join(reasons))

    def _start(self, driver: str, timeout: float) -> None:
        self.storage_driver = driver
        self.data_root.mkdir(parents=True, exist_ok=True)
        config = self.base / "daemon.json"
        config.write_text("{}")  # not /etc/docker/daemon.json: its settings could conflict
        # containerd namespaces are [a-z0-9] words joined by '.', '_' or '-': mkdtemp's suffix may
        # hold '_' at either end, so keep only letters and digits.
        suffix = "".join(c for c in self.base.name[-8:].lower() if c.isalnum())
        namespace = f"bsd-{suffix}"
        argv = [
            "dockerd",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--bridge=none",
            "--storage-driver",
            driver,
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "-H",
            self.host,
            "--pidfile",
            str(self.pidfile),
            "--config-file",
            str(config),
            "--containerd-namespace",
            namespace,
            "--containerd-plugins-namespace",
            f"{namespace}-plugins",
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerUnavailable(f"exited with {self.proc.returncode}: {self._log_tail()}")
            if self.socket.exists():
                probe = self.docker("version", "--format", "{{.Server.Version}}", check=False)
                if probe.returncode == 0:
                    return
            time.sleep(0.2)
        raise DockerUnavailable(f"not answering after {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        interesting = [line for line in lines if "level=error" in line or "level=fatal" in line]
        return " / ".join((interesting or lines)[-3:])[-800:]

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "DOCKER_CONFIG": str(self.base / "client")},
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
        return result

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # dockerd normally stops the containerd it started; if it was killed, that one is ours.
        containerd_pid = self.exec_root / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(containerd_pid.read_text().strip())
            if _alive(pid) and "containerd" in Path(f"/proc/{pid}/comm").read_text():
                os.kill(pid, signal.SIGTERM)
                _wait_gone(pid, 10)
        for root in (self.exec_root, self.data_root):
            _unmount_under(root)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _unmount_under(root: Path) -> None:
    """Lazily unmount whatever dockerd left mounted below ``root`` (netns nsfs, overlays),
    deepest first."""
    prefix = str(root.resolve()) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")  # \040 for spaces etc.
            if point.startswith(prefix) or point == prefix[:-1]:
                points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    return [f.split()[4] for f in lines if f.split()[4].startswith(prefix)]


@contextlib.contextmanager
def docker_daemon(data_root: Path) -> Iterator[DockerDaemon]:
    """``with docker_daemon(dir) as d:``; raises DockerUnavailable when dockerd cannot run."""
    daemon = DockerDaemon.start(data_root)
    try:
        yield daemon
    finally:
        daemon.stop()
