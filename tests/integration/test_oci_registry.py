"""Pulling, archiving and pushing container images against real registries on loopback:
Debian's docker-registry (distribution 2.8) behind a bearer-token proxy as the public registries
behave, a second docker-registry over TLS as the bootstrapper's own, and ``docker load`` of the
archive into an isolated dockerd when one can run here."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bootstrapperd.download.fetcher import Fetcher, FetchError
from bootstrapperd.oci.archive import ImageArchive, write_archive
from bootstrapperd.oci.client import RegistryClient
from bootstrapperd.oci.manifest import (
    ACCEPT,
    CredentialsNeeded,
    DigestMismatch,
    PlatformNotFound,
    PulledImage,
    RegistryError,
    UnsupportedManifest,
)
from bootstrapperd.oci.push import PushEvent, PushResult, push_archive
from bootstrapperd.oci.reference import local_reference, parse_reference
from tests.conftest import need_tools, unavailable
from tests.registry_lab import (
    DOCKER_REGISTRY,
    BuiltImage,
    DockerDaemon,
    DockerUnavailable,
    Registry,
    TLSFiles,
    TokenProxy,
    build_image,
    make_tls,
    mounts_under,
    upload_image,
    upload_index,
)

AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
ARM_V7 = {"os": "linux", "architecture": "arm", "variant": "v7"}
NOISE = random.Random(42)  # incompressible layer contents, fixed for reproducible runs
BASE = {"etc/os-release": b"ID=lab\n", "lib/libc.so": NOISE.randbytes(40_000)}
DOCKERDOMAIN = "bootstrapper.test"
REGISTRY_NAME = f"{DOCKERDOMAIN}:5000"

BUSYBOX = "busybox:1.36"  # Docker Hub, official image
ETCD = "quay.example/coreos/etcd:v3.5.17"  # OCI manifest sharing busybox's base layer
MULTI = "localhost:5001/lab/multi:1"  # manifest list amd64 + arm64; a port in the host
HYPERKUBE = "typhoon/hyperkube:v1.5.1"  # Docker Hub user image, OCI index amd64 + arm64
ARM_ONLY = "quay.example/lab/armonly:1"


@dataclass
class Upstream:
    """A registry with the lab's images, behind the token proxy; the references map to it."""

    registry: Registry
    proxy: TokenProxy
    session: aiohttp.ClientSession
    expected: dict[str, BuiltImage]  # original reference → the linux/amd64 image it resolves to
    arm: dict[str, BuiltImage]  # original → its arm64 image (never to be fetched)
    index_digests: dict[str, str]

    @property
    def endpoints(self) -> dict[str, str]:
        return {host: self.proxy.url for host in ("docker.io", "quay.example", "localhost:5001")}

    @property
    def shared(self) -> str:
        """The base layer busybox and etcd have in common."""
        [digest] = set(self.expected[BUSYBOX].blobs) & set(self.expected[ETCD].blobs)
        return digest

    def client(self) -> RegistryClient:
        return RegistryClient(self.session, endpoints=self.endpoints)

    def fetcher(self) -> Fetcher:
        return Fetcher(self.session, retries=2, backoff=0.01)


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[Upstream]:
    need_tools(DOCKER_REGISTRY)
    registry = Registry(tmp_path / "upstream").start()
    try:
        async with aiohttp.ClientSession() as session, TokenProxy(registry.url) as proxy:
            base = registry.url
            busybox = build_image([BASE, {"bin/busybox": NOISE.randbytes(30_000)}])
            etcd = build_image([BASE, {"usr/bin/etcd": NOISE.randbytes(50_000)}], oci=True)
            multi = build_image([{"multi": NOISE.randbytes(20_000)}])
            multi_arm = build_image(
                [{"multi": NOISE.randbytes(20_000)}], architecture="arm64", variant="v8"
            )
            hyperkube = build_image([{"hyperkube": NOISE.randbytes(60_000)}], oci=True)
            hyperkube_arm = build_image(
                [{"hyperkube": NOISE.randbytes(60_000)}], oci=True, architecture="arm64"
            )
            armonly = build_image([{"a": b"arm"}], architecture="arm64")
            await upload_image(session, base, "library/busybox", "1.36", busybox)
            await upload_image(session, base, "coreos/etcd", "v3.5.17", etcd)
            multi_list, _ = await upload_index(
                session, base, "lab/multi", "1", [(multi_arm, ARM64), (multi, AMD64)]
            )
            hyperkube_index, _ = await upload_index(
                session,
                base,
                "typhoon/hyperkube",
                "v1.5.1",
                [(hyperkube, AMD64), (hyperkube_arm, ARM64)],
                oci=True,
            )
            await upload_index(
                session,
                base,
                "lab/armonly",
                "1",
                [
                    (armonly, ARM64),
                    (armonly, {"os": "linux", "architecture": "arm", "variant": "v7"}),
                ],
            )
            yield Upstream(
                registry=registry,
                proxy=proxy,
                session=session,
                expected={BUSYBOX: busybox, ETCD: etcd, MULTI: multi, HYPERKUBE: hyperkube},
                arm={MULTI: multi_arm, HYPERKUBE: hyperkube_arm},
                index_digests={
                    MULTI: "sha256:" + hashlib.sha256(multi_list).hexdigest(),
                    HYPERKUBE: "sha256:" + hashlib.sha256(hyperkube_index).hexdigest(),
                },
            )
    finally:
        registry.stop()


def file_sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


async def pull_all(up: Upstream, blob_dir: Path, refs: list[str]) -> list[PulledImage]:
    client, fetcher = up.client(), up.fetcher()
    return list(await asyncio.gather(*(client.pull(ref, blob_dir, fetcher) for ref in refs)))


# -- pulling ------------------------------------------------------------------------------------


async def test_pull_through_the_token_proxy(upstream: Upstream, tmp_path: Path) -> None:
    up = upstream
    # The proxy really wants tokens: without one, a 401 with a Bearer challenge.
    manifest_url = f"{up.proxy.url}/v2/library/busybox/manifests/1.36"
    async with up.session.get(manifest_url, headers={"Accept": ACCEPT}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith(f'Bearer realm="{up.proxy.url}/token"')

    blob_dir = tmp_path / "blobs"
    refs = [BUSYBOX, ETCD, MULTI, HYPERKUBE]
    pulled = await pull_all(up, blob_dir, refs)  # concurrently: the shared layer is one fetch
    for ref, image in zip(refs, pulled, strict=True):
        want = up.expected[ref]
        assert image.original == ref
        assert image.resolved.digest == want.digest  # lists resolved to their amd64 image
        assert image.resolved.manifest == want.manifest
        assert image.resolved.index_digest == up.index_digests.get(ref)
        for digest, data in want.blobs.items():
            path = image.blob_path(digest)
            assert path == blob_dir / "sha256" / digest.removeprefix("sha256:")
            assert path.read_bytes() == data
    # Tokens were needed and fetched per repository scope.
    assert up.proxy.log.unauthorized() >= len(refs)
    scopes = {s for request in up.proxy.log.tokens for s in request}
    assert {
        "repository:library/busybox:pull",
        "repository:coreos/etcd:pull",
        "repository:lab/multi:pull",
        "repository:typhoon/hyperkube:pull",
    } <= scopes
    # The shared base layer came once; the arm64 images never.
    assert len(up.proxy.log.blob_gets(up.shared)) == 1
    for ref, arm in up.arm.items():
        for digest in arm.blobs:
            if digest not in up.expected[ref].blobs:
                assert up.proxy.log.blob_gets(digest) == []
    fetched = sorted(d for image in pulled for d in image.fetched)
    assert fetched == sorted({d for ref in refs for d in up.expected[ref].blobs})
    assert len(up.proxy.log.blob_gets()) == len(fetched)

    # Again, with a new client: manifests are asked for, blobs are not.
    before = len(up.proxy.log.blob_gets())
    again = await pull_all(up, blob_dir, refs)
    assert len(up.proxy.log.blob_gets()) == before
    assert all(image.downloaded == 0 and image.fetched == () for image in again)
    assert [i.resolved.digest for i in again] == [i.resolved.digest for i in pulled]


async def test_tokens_named_access_token_work_too(upstream: Upstream, tmp_path: Path) -> None:
    upstream.proxy.token_field = "access_token"
    [image] = await pull_all(upstream, tmp_path / "blobs", [HYPERKUBE])
    assert image.resolved.digest == upstream.expected[HYPERKUBE].digest


async def test_manifests_redirected_to_a_registry_wanting_tokens(
    upstream: Upstream, tmp_path: Path
) -> None:
    """As registry.k8s.io does: manifests are redirected to a regional registry, which wants
    its own token (Authorization never crosses origins); blobs come from the first host."""
    async with TokenProxy(upstream.registry.url) as front:
        front.redirect_manifests = upstream.proxy.url
        client = RegistryClient(upstream.session, endpoints={"registry.k8s.io": front.url})
        pulled = await client.pull(
            "registry.k8s.io/lab/multi:1", tmp_path / "blobs", upstream.fetcher()
        )
    assert pulled.resolved.digest == upstream.expected[MULTI].digest
    redirected = [r for r in front.log.requests if r[2] == 307]
    assert len(redirected) == 2  # the list, then the amd64 manifest
    served = [(m, p, s) for m, p, s in upstream.proxy.log.requests if "/manifests/" in p]
    # Each redirected request arrives without Authorization, is challenged, then sent there
    # with the token, which is fetched once.
    assert [s for _, _, s in served] == [401, 200, 401, 200]
    assert upstream.proxy.log.tokens == [["repository:lab/multi:pull"]]
    assert sorted(d for d in pulled.fetched) == sorted(upstream.expected[MULTI].blobs)
    assert len(front.log.blob_gets()) == 2


async def test_pinned_digests(upstream: Upstream, tmp_path: Path) -> None:
    client = upstream.client()
    etcd = upstream.expected[ETCD]
    by_digest = await client.resolve(f"quay.example/coreos/etcd@{etcd.digest}")
    assert by_digest.digest == etcd.digest
    both = await client.resolve(f"{ETCD}@{etcd.digest}")
    assert both.digest == etcd.digest
    # Pinned to a manifest list: the amd64 image it names, the list remembered.
    multi = await client.resolve(f"localhost:5001/lab/multi@{upstream.index_digests[MULTI]}")
    assert multi.digest == upstream.expected[MULTI].digest
    assert multi.index_digest == upstream.index_digests[MULTI]
    # A digest the registry does not have.
    with pytest.raises(RegistryError, match="not found"):
        await client.resolve(f"quay.example/coreos/etcd@sha256:{'0' * 64}")


async def test_manifest_digests_are_checked(upstream: Upstream) -> None:
    client = upstream.client()
    etcd = upstream.expected[ETCD]
    # One byte more than the registry's digest covers.
    upstream.proxy.tamper = {"1.36", etcd.digest, upstream.expected[MULTI].digest}
    with pytest.raises(DigestMismatch, match=f"{BUSYBOX}: manifest digest .* Docker-Content"):
        await client.resolve(BUSYBOX)
    with pytest.raises(DigestMismatch, match=f"not the pinned {etcd.digest}"):
        await client.resolve(f"quay.example/coreos/etcd@{etcd.digest}")
    # The list is intact, the amd64 manifest it names is not.
    with pytest.raises(DigestMismatch, match=f"{MULTI}: the linux/amd64 manifest the list"):
        await client.resolve(MULTI)
    upstream.proxy.tamper.clear()
    assert (await client.resolve(MULTI)).digest == upstream.expected[MULTI].digest


async def test_a_corrupted_blob_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    busybox = upstream.expected[BUSYBOX]
    top = list(busybox.blobs)[-1]  # config, base layer, then this one
    upstream.proxy.corrupt.add(top)
    blob_dir = tmp_path / "blobs"
    with pytest.raises(FetchError) as caught:
        await pull_all(upstream, blob_dir, [BUSYBOX])
    message = str(caught.value)
    assert BUSYBOX in message
    assert "layer 2/2" in message
    assert top in message
    assert "sha256 mismatch" in message
    assert top in caught.value.url
    hex_digest = top.removeprefix("sha256:")
    names = {p.name for p in (blob_dir / "sha256").iterdir()}
    assert hex_digest not in names  # nothing under its name
    assert not [name for name in names if hex_digest in name]  # nor a part file of it


async def test_a_cut_download_resumes(upstream: Upstream, tmp_path: Path) -> None:
    hyperkube = upstream.expected[HYPERKUBE]
    layer = list(hyperkube.blobs)[1]
    upstream.proxy.cut[layer] = 1
    [image] = await pull_all(upstream, tmp_path / "blobs", [HYPERKUBE])
    assert file_sha256(image.blob_path(layer)) == layer
    statuses = [s for m, p, s in upstream.proxy.log.requests if p.endswith(layer)]
    assert statuses == [200, 206]  # the second request continued where the first was cut


async def test_clear_errors(upstream: Upstream) -> None:
    client = upstream.client()
    with pytest.raises(PlatformNotFound, match="platforms present: linux/arm/v7, linux/arm64"):
        await client.resolve(ARM_ONLY)
    with pytest.raises(RegistryError, match=r"quay.example/coreos/etcd:nope: .*not found"):
        await client.resolve("quay.example/coreos/etcd:nope")
    schema1 = {"schemaVersion": 1, "name": "coreos/etcd", "tag": "v2.0", "fsLayers": []}
    upstream.proxy.fake_manifests["v2.0"] = (
        json.dumps(schema1).encode(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    )
    with pytest.raises(UnsupportedManifest, match=r"quay\.example/coreos/etcd:v2\.0: .*schema 1"):
        await client.resolve("quay.example/coreos/etcd:v2.0")
    upstream.proxy.basic = True
    with pytest.raises(CredentialsNeeded, match="needs credentials"):
        await upstream.client().resolve(BUSYBOX)


# -- archive, push, pull back ----------------------------------------------------------------


def etcd_pinned(up: Upstream) -> str:
    """The same manifest as ETCD's tag, by digest."""
    return f"quay.example/coreos/etcd@{up.expected[ETCD].digest}"


def multi_pinned(up: Upstream) -> str:
    """Pinned to the multi-platform list, of which only linux/amd64 is packed."""
    return f"localhost:5001/lab/multi@{up.index_digests[MULTI]}"


async def make_archive(up: Upstream, tmp_path: Path) -> tuple[Path, list[PulledImage]]:
    refs = [BUSYBOX, ETCD, MULTI, HYPERKUBE, etcd_pinned(up), multi_pinned(up)]
    pulled = await pull_all(up, tmp_path / "blobs", refs)
    target = tmp_path / "bsroot" / "images" / "cluster.tar"
    write_archive(target, pulled)
    return target, pulled


@dataclass
class TLSRegistry:
    registry: Registry
    tls: TLSFiles

    @property
    def base(self) -> str:  # by address, as serve reaches its own registry
        return f"https://127.0.0.1:{self.registry.port}"


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[TLSRegistry]:
    need_tools(DOCKER_REGISTRY)
    tls = make_tls(tmp_path / "tls", DOCKERDOMAIN)
    with Registry(tmp_path / "local", tls=tls) as registry:
        yield TLSRegistry(registry, tls)


async def pull_back(
    session: aiohttp.ClientSession, target: TLSRegistry, local: str, want: PulledImage
) -> None:
    """The pushed image, read back over the API: manifest and every blob by digest."""
    ssl = target.tls.client_context()
    client = RegistryClient(
        session,
        endpoints={REGISTRY_NAME: target.base},
        ssl=ssl,
        server_hostname=DOCKERDOMAIN,
    )
    resolved = await client.resolve(local)
    assert resolved.digest == want.resolved.digest
    assert resolved.manifest == want.resolved.manifest
    assert resolved.media_type == want.resolved.media_type
    for blob in resolved.blobs:
        url = f"{target.base}/v2/{resolved.reference.path}/blobs/{blob.digest}"
        async with session.get(url, ssl=ssl, server_hostname=DOCKERDOMAIN) as resp:
            assert resp.status == 200
            data = await resp.read()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
        assert data == want.blob_path(blob.digest).read_bytes()


async def test_archive_pushed_to_the_bootstrapper_registry_over_tls(
    upstream: Upstream, tls_registry: TLSRegistry, tmp_path: Path
) -> None:
    path, pulled = await make_archive(upstream, tmp_path)
    archive = ImageArchive.open(path)
    archive.verify()
    assert len(archive.images) == 6
    events: list[PushEvent] = []
    results = await push_archive(
        upstream.session,
        archive,
        tls_registry.base,
        registry_name=REGISTRY_NAME,
        ssl=tls_registry.tls.client_context(),
        server_hostname=DOCKERDOMAIN,
        on_event=events.append,
        backoff=0.01,
    )
    by_original = {r.original: r for r in results}
    assert {r.original: r.status for r in results} == {
        BUSYBOX: "pushed",
        ETCD: "pushed",
        MULTI: "pushed",
        HYPERKUBE: "pushed",
        # The same manifests as ETCD's and MULTI's tags, in the same repositories: already
        # there by digest.
        etcd_pinned(upstream): "present",
        multi_pinned(upstream): "present",
    }, [r.error for r in results]
    # A pinned list cannot be served (only amd64 was packed): named by the amd64 digest.
    pinned = by_original[multi_pinned(upstream)]
    amd64 = upstream.expected[MULTI].digest
    assert pinned.local == f"{REGISTRY_NAME}/localhost-5001/lab/multi@{amd64}"
    assert pinned.note is not None
    assert upstream.index_digests[MULTI] in pinned.note
    assert all(r.note is None for r in results if r is not pinned)
    assert by_original[MULTI].local == f"{REGISTRY_NAME}/localhost-5001/lab/multi:1"
    assert by_original[ETCD].local == f"{REGISTRY_NAME}/{ETCD}"
    assert by_original[BUSYBOX].local == f"{REGISTRY_NAME}/busybox:1.36"
    # busybox uploaded the shared base layer; etcd, pushed after it, mounted it.
    assert by_original[ETCD].mounted == 1
    assert sum(r.mounted for r in results) == 1
    # Every distinct blob was uploaded once; the shared one reached etcd's repository by mount.
    distinct = {d.digest for i in pulled for d in i.resolved.blobs}
    assert sum(r.uploaded for r in results) == len(distinct)
    assert sum(r.bytes_uploaded for r in results) == sum(
        {d.digest: d.size for i in pulled for d in i.resolved.blobs}.values()
    )
    kinds = {e.kind for e in events}
    assert {"image", "blob-uploaded", "blob-mounted", "manifest", "done"} <= kinds
    for image in pulled:
        await pull_back(upstream.session, tls_registry, by_original[image.original].local, image)
    assert by_original[ETCD].local == local_reference(REGISTRY_NAME, ETCD)

    # Pushing again uploads nothing.
    again = await push_archive(
        upstream.session,
        ImageArchive.open(path),
        tls_registry.base,
        registry_name=REGISTRY_NAME,
        ssl=tls_registry.tls.client_context(),
        server_hostname=DOCKERDOMAIN,
    )
    assert [r.status for r in again] == ["present"] * 6
    assert sum(r.uploaded + r.mounted + r.bytes_uploaded for r in again) == 0


async def test_tls_names_are_checked(
    upstream: Upstream, tls_registry: TLSRegistry, tmp_path: Path
) -> None:
    path, _ = await make_archive(upstream, tmp_path)
    results = await push_archive(
        upstream.session,
        ImageArchive.open(path),
        tls_registry.base,
        registry_name=REGISTRY_NAME,
        ssl=tls_registry.tls.client_context(),
        server_hostname="someone-else.test",
        retries=0,
    )
    assert [r.status for r in results] == ["failed"] * 6
    assert all("certificate" in (r.error or "").lower() for r in results), results[0].error


async def test_push_with_tokens_and_a_failing_image(upstream: Upstream, tmp_path: Path) -> None:
    path, pulled = await make_archive(upstream, tmp_path)
    registry = Registry(tmp_path / "second").start()
    try:
        async with TokenProxy(registry.url) as proxy:
            proxy.fail.add("PUT /v2/typhoon/hyperkube/manifests/")
            events: list[PushEvent] = []
            results = await push_archive(
                upstream.session,
                ImageArchive.open(path),
                proxy.url,
                registry_name=REGISTRY_NAME,
                on_event=events.append,
                retries=2,
                backoff=0.01,
            )
            # Monolithic uploads with a Content-Length, never chunked.
            sizes = {d.digest: d.size for i in pulled for d in i.resolved.blobs}
            hyperkube_uploads = [u for u in proxy.log.uploads if "/typhoon/hyperkube/" in u[0]]
            # The failing image's blobs went up on its first attempt only; retries found them.
            assert len(hyperkube_uploads) == 2
            assert len(proxy.log.uploads) - 2 == sum(r.uploaded for r in results) > 0
            for _path, length, encoding in proxy.log.uploads:
                assert encoding is None
                assert length in sizes.values()
            by_original: dict[str, PushResult] = {r.original: r for r in results}
            failed = by_original.pop(HYPERKUBE)
            assert failed.status == "failed"
            assert not failed.ok
            assert failed.attempts == 3
            assert "HTTP 500" in (failed.error or "")
            assert "lab fault" in (failed.error or "")
            assert [e.kind for e in events if e.image == HYPERKUBE].count("retry") == 2
            assert all(r.ok for r in by_original.values()), [r.error for r in results]
            # Push needed tokens with pull,push, and the mount pull on its source as well.
            assert proxy.log.unauthorized() > 0
            asked = [set(scopes) for scopes in proxy.log.tokens]
            assert {"repository:busybox:pull,push"} in asked
            assert {
                "repository:quay.example/coreos/etcd:pull,push",
                "repository:busybox:pull",
            } in asked
            # The images that went through are really there, with their digests.
            for original, result in by_original.items():
                local = parse_reference(result.local)
                assert local.domain == REGISTRY_NAME
                async with upstream.session.head(
                    f"{registry.url}/v2/{local.path}/manifests/{local.pin}",
                    headers={"Accept": ACCEPT},
                ) as resp:
                    assert resp.status == 200, original
                    assert resp.headers["Docker-Content-Digest"] == result.digest
            # Once the fault is gone, a new push completes it and uploads only what is missing.
            proxy.fail.clear()
            again = await push_archive(
                upstream.session,
                ImageArchive.open(path),
                proxy.url,
                registry_name=REGISTRY_NAME,
                backoff=0.01,
            )
            statuses = {r.original: r.status for r in again}
            assert statuses.pop(HYPERKUBE) == "pushed"
            assert set(statuses.values()) == {"present"}
            hyperkube = next(r for r in again if r.original == HYPERKUBE)
            assert hyperkube.uploaded == 0
            assert hyperkube.skipped == 2
            assert {i.original for i in pulled} == {r.original for r in again}
    finally:
        registry.stop()


# -- docker load ---------------------------------------------------------------------------------


async def test_docker_load_of_the_archive(upstream: Upstream, tmp_path: Path) -> None:
    need_tools("dockerd", "docker")
    path, pulled = await make_archive(upstream, tmp_path)
    try:
        daemon = await asyncio.to_thread(DockerDaemon.start, tmp_path / "docker")
    except DockerUnavailable as exc:
        unavailable(f"no Docker engine can run here: {exc}")
    exec_root = daemon.exec_root
    try:
        loaded = await asyncio.to_thread(daemon.docker, "load", "-i", str(path))
        listing = await asyncio.to_thread(
            daemon.docker, "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"
        )
        shown = dict(line.split(" ") for line in listing.stdout.split("\n") if line.strip())
        assert set(shown) == {
            "busybox:1.36",
            "quay.example/coreos/etcd:v3.5.17",
            "localhost:5001/lab/multi:1",
            "typhoon/hyperkube:v1.5.1",
        }, loaded.stdout
        for image in pulled:
            tag = image.resolved.reference.repo_tag
            if tag is None:
                continue
            inspect = await asyncio.to_thread(daemon.docker, "image", "inspect", tag)
            [info] = json.loads(inspect.stdout)
            assert info["Id"] == image.resolved.config.digest  # same image, not a rebuild
            assert (
                info["RootFS"]["Layers"]
                == json.loads(image.blob_path(image.resolved.config.digest).read_bytes())["rootfs"][
                    "diff_ids"
                ]
            )
            assert info["Architecture"] == "amd64"
            assert info["Os"] == "linux"
    finally:
        await asyncio.to_thread(daemon.stop)
    assert mounts_under(exec_root) == []
    assert not exec_root.exists()
