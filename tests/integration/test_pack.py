"""``bootstrapperd-pack`` as a user runs it (the console script, a subprocess), against a local
release mirror on loopback (tests/pack_lab.py) signed by a test key: a complete bsroot, a
second run that downloads nothing, ``--verify``, and every way a download can be bad — each
failing with a clear message and leaving no bad file under a final name."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO, need_tools
from tests.pack_lab import Mirror, ReleaseKey, serve_mirror

VERSION = "4081.2.0"
K8S = "v1.31.4"  # the bundled example's kubernetes_version (its default)
PACK = Path(sys.executable).with_name("bootstrapperd-pack")


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Lab:
    mirror: Mirror
    key: ReleaseKey
    key_file: Path
    out: Path
    description: Path

    async def pack(self, *extra: str, mirror_url: str | None = None, images: bool = False) -> Run:
        base = mirror_url or self.mirror.url
        args = [
            str(self.description),
            "-o",
            str(self.out),
            "--mirror",
            base + "/{channel}",
            "--kubernetes-mirror",
            f"{base}/kubernetes",
            "--ipxe-url",
            f"{base}/ipxe",
            "--signing-key",
            str(self.key_file),
            "--signing-key-fingerprint",
            self.key.fingerprint,
            "--retries",
            "2",
            "--plain",
            *extra,
        ]
        if not images:
            args.append("--no-images")
        return await run(str(PACK), *args)

    def release(self) -> Path:
        return self.out / "html" / "static" / "flatcar" / "stable" / VERSION


async def run(*argv: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="session")
def test_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseKey]:
    need_tools("gpg", "gpgv")
    with ReleaseKey.create(tmp_path_factory.mktemp("key")) as key:
        yield key


@pytest.fixture
async def lab(tmp_path: Path, test_key: ReleaseKey) -> AsyncIterator[Lab]:
    assert PACK.exists(), f"{PACK} is not installed (pip install -e .)"
    mirror = Mirror()
    mirror.add_release(test_key, "flatcar", "stable", VERSION)
    mirror.add_kubernetes(K8S)
    key_file = tmp_path / "release-key.asc"
    key_file.write_bytes(test_key.armored)
    async with serve_mirror(mirror):
        yield Lab(mirror, test_key, key_file, tmp_path / "bsroot", EXAMPLE)


def final_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def no_partial_under_final_names(root: Path, names: list[str]) -> None:
    for name in names:
        assert not (root / name).exists(), f"{name} exists but should not"


async def test_a_complete_bsroot_then_a_second_run_that_downloads_nothing(lab: Lab) -> None:
    first = await lab.pack()
    assert first.code == 0, first.err
    release = lab.release()
    served = lab.mirror.files
    for name in (
        "flatcar_production_pxe.vmlinuz",
        "flatcar_production_pxe_image.cpio.gz",
        "flatcar_production_image.bin.bz2",
    ):
        assert (release / name).read_bytes() == served[f"/stable/amd64-usr/{VERSION}/{name}"]
        assert (release / f"{name}.sig").exists()
    assert f"FLATCAR_VERSION={VERSION}" in (release / "version.txt").read_text()
    current = release.parent / "current"
    assert os.readlink(current) == VERSION  # relative: the bsroot can move
    assert "current is 4081.2.0" in first.err
    k8s = lab.out / "html" / "static" / "kubernetes" / K8S
    for name in ("kubelet", "kubectl"):
        binary = k8s / name
        assert binary.read_bytes() == served[f"/kubernetes/{K8S}/bin/linux/amd64/{name}"]
        assert os.access(binary, os.X_OK)
    for name in ("undionly.kpxe", "ipxe.efi"):
        assert (lab.out / "tftpboot" / name).stat().st_size > 1024
    assert (lab.out / "tls" / "ca.pem").exists()

    manifest = json.loads((lab.out / "manifest.json").read_text())
    listed = set(manifest["files"])
    assert f"html/static/flatcar/stable/{VERSION}/flatcar_production_image.bin.bz2" in listed
    assert manifest["files"]["html/static/flatcar/stable/current"]["link"] == VERSION
    assert f"html/static/kubernetes/{K8S}/kubelet" in listed
    assert "tftpboot/undionly.kpxe" in listed
    assert not any(n.startswith(("tls/", "state/", "config/")) for n in listed)
    verified = await run(str(PACK), "--verify", str(lab.out))
    assert verified.code == 0, verified.err
    assert f"all {len(listed)} files match" in verified.out

    ca = (lab.out / "tls" / "ca.pem").read_bytes()
    lab.mirror.requests.clear()
    second = await lab.pack()
    assert second.code == 0, second.err
    # Only what tells whether something changed: current's version.txt. No file at all.
    assert lab.mirror.file_requests() == []
    assert [p for _, p, _ in lab.mirror.requests] == ["/stable/amd64-usr/current/version.txt"]
    assert (lab.out / "tls" / "ca.pem").read_bytes() == ca  # the CA is never replaced


async def test_verify_names_a_flipped_byte_and_a_missing_file(lab: Lab) -> None:
    assert (await lab.pack()).code == 0
    image = lab.release() / "flatcar_production_pxe.vmlinuz"
    data = bytearray(image.read_bytes())
    data[1000] ^= 0x01
    image.write_bytes(bytes(data))
    (lab.out / "tftpboot" / "ipxe.efi").unlink()
    result = await run(str(PACK), "--verify", str(lab.out))
    assert result.code == 1, result.err
    assert f"corrupt: html/static/flatcar/stable/{VERSION}/flatcar_production_pxe.vmlinuz" in (
        result.err
    )
    assert "missing: tftpboot/ipxe.efi" in result.err, result.err
    # A re-run repairs both: the local signature no longer vouches for the file.
    repaired = await lab.pack()
    assert repaired.code == 0, repaired.err
    assert (await run(str(PACK), "--verify", str(lab.out))).code == 0


async def test_a_bad_signature_is_refused_and_leaves_nothing(
    lab: Lab, tmp_path: Path, test_key: ReleaseKey
) -> None:
    path = f"/stable/amd64-usr/{VERSION}/flatcar_production_image.bin.bz2"
    with ReleaseKey.create(tmp_path / "other", "Somebody Else") as other:
        lab.mirror.files[path + ".sig"] = other.sign(lab.mirror.files[path])
    result = await lab.pack()
    assert result.code == 1, result.err
    assert "flatcar_production_image.bin.bz2: bad signature" in result.err, result.err
    assert "not the pinned key" in result.err, result.err
    assert "no manifest written" in result.err, result.err
    no_partial_under_final_names(
        lab.release(),
        ["flatcar_production_image.bin.bz2", "flatcar_production_image.bin.bz2.sig"],
    )
    assert not list(lab.release().glob(".*.part"))
    assert not (lab.out / "manifest.json").exists()


async def test_a_tampered_file_fails_its_signature(lab: Lab) -> None:
    path = f"/stable/amd64-usr/{VERSION}/flatcar_production_pxe.vmlinuz"
    data = bytearray(lab.mirror.files[path])
    data[-1] ^= 0xFF
    lab.mirror.files[path] = bytes(data)
    result = await lab.pack()
    assert result.code == 1, result.err
    assert "flatcar_production_pxe.vmlinuz: bad signature" in result.err, result.err
    assert "does not match its signature" in result.err, result.err
    assert not (lab.release() / "flatcar_production_pxe.vmlinuz").exists()


async def test_a_signing_key_with_another_fingerprint_is_refused(lab: Lab) -> None:
    result = await lab.pack("--signing-key-fingerprint", "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A")
    assert result.code == 1, result.err
    assert "not the pinned F88CFEDEFF29A5B4D9523864E25D9AED0593B34A" in result.err, result.err
    assert not lab.release().exists()


async def test_a_wrong_checksum_is_refused_and_leaves_nothing(lab: Lab) -> None:
    path = f"/kubernetes/{K8S}/bin/linux/amd64/kubelet.sha256"
    lab.mirror.files[path] = b"0" * 64 + b"  kubelet\n"
    result = await lab.pack()
    assert result.code == 1, result.err
    assert "sha256" in result.err
    assert "kubelet" in result.err
    k8s = lab.out / "html" / "static" / "kubernetes" / K8S
    no_partial_under_final_names(k8s, ["kubelet", "kubelet.sha256"])
    assert not list(k8s.glob(".kubelet*"))


async def test_a_download_cut_in_the_middle_fails_clearly_then_resumes(lab: Lab) -> None:
    path = f"/stable/amd64-usr/{VERSION}/flatcar_production_image.bin.bz2"
    # Cut on every attempt of this run (the first try and its 2 retries): the run fails.
    lab.mirror.cuts[path] = 3
    result = await lab.pack()
    assert result.code == 1, result.err
    assert "flatcar_production_image.bin.bz2" in result.err, result.err
    assert not (lab.release() / "flatcar_production_image.bin.bz2").exists()
    assert not (lab.out / "manifest.json").exists()
    # The next run resumes the partial file with a Range request and finishes.
    lab.mirror.requests.clear()
    again = await lab.pack()
    assert again.code == 0, again.err
    ranges = [r for _, p, r in lab.mirror.requests if p == path and r]
    assert ranges
    assert ranges[0].startswith("bytes=")
    assert ranges[0] != "bytes=0-"
    image = lab.release() / "flatcar_production_image.bin.bz2"
    assert image.read_bytes() == lab.mirror.files[path]
    assert (await run(str(PACK), "--verify", str(lab.out))).code == 0


async def test_a_pinned_version_and_a_tarball(lab: Lab, tmp_path: Path) -> None:
    pinned = tmp_path / "pinned.yml"
    pinned.write_text(EXAMPLE.read_text() + f'\nos:\n  version: "{VERSION}"\n')
    lab.description = pinned
    tarball = tmp_path / "bsroot.tar.gz"
    result = await lab.pack("--tarball", str(tarball))
    assert result.code == 0, result.err
    assert not any(p.endswith("current/version.txt") for _, p, _ in lab.mirror.requests)
    import tarfile

    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert f"bsroot/html/static/flatcar/stable/{VERSION}/flatcar_production_pxe.vmlinuz" in names
    assert "bsroot/manifest.json" in names
    assert not any("/." in n for n in names)


async def test_a_bad_description_is_reported_like_the_daemon_does(lab: Lab, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(EXAMPLE.read_text() + "\nregistry:\n  mode: sideways\n")
    lab.description = bad
    result = await lab.pack()
    assert result.code == 1, result.err
    assert "registry.mode: 'sideways' is not one of: auto, docker, binary, external, off" in (
        result.err
    )
    assert lab.mirror.requests == []


async def test_serve_names_missing_and_corrupt_files_at_start(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    from bootstrapperd.bsroot.layout import Bsroot
    from bootstrapperd.cli import check_bsroot

    assert (await lab.pack()).code == 0
    bsroot = Bsroot(lab.out)
    assert check_bsroot(bsroot, full=True)
    kubelet = lab.out / "html" / "static" / "kubernetes" / K8S / "kubelet"
    data = bytearray(kubelet.read_bytes())
    data[0] ^= 0x01
    kubelet.write_bytes(bytes(data))
    (lab.out / "tftpboot" / "undionly.kpxe").unlink()
    caplog.clear()
    assert not check_bsroot(bsroot, full=False)  # quick: the missing file, not the flip
    assert "missing: tftpboot/undionly.kpxe" in caplog.text
    assert "kubelet" not in caplog.text
    caplog.clear()
    assert not check_bsroot(bsroot, full=True)
    assert f"corrupt: html/static/kubernetes/{K8S}/kubelet" in caplog.text
    assert "2 of" in caplog.text
    assert "re-run bootstrapperd-pack" in caplog.text
    (lab.out / "manifest.json").unlink()
    caplog.clear()
    assert not check_bsroot(bsroot, full=True)
    assert "manifest.json is missing" in caplog.text


# ---- container images: a real registry (docker-registry) behind a bearer-token proxy ---------


def example_images() -> list[str]:
    from bootstrapperd.model import load_cluster_file
    from bootstrapperd.model.images import cluster_images

    model = load_cluster_file(EXAMPLE)
    return sorted({*cluster_images(model).values(), model.registry.image})


async def fill_registry(proxy_url: str, upstream: str, generation: str = "1") -> dict[str, str]:
    """Every image the example needs, each on a shared base layer plus its own; the pause
    image as a manifest list (amd64 + arm64). Returns original → expected manifest digest."""
    import aiohttp

    from bootstrapperd.oci.reference import parse_reference
    from tests.registry_lab import build_image, upload_image, upload_index

    base = {"etc/os-release": b"ID=lab\n"}
    digests = {}
    async with aiohttp.ClientSession() as session:
        for original in example_images():
            ref = parse_reference(original)
            own = {f"opt/{ref.path}/{generation}": original.encode()}
            image = build_image([base, own], label=original)
            repo = ref.path
            if "pause" in original:
                arm = build_image([base, own], architecture="arm64", label=original)
                await upload_index(
                    session,
                    upstream,
                    repo,
                    ref.tag or "latest",
                    [
                        (image, {"os": "linux", "architecture": "amd64"}),
                        (arm, {"os": "linux", "architecture": "arm64"}),
                    ],
                )
            else:
                await upload_image(session, upstream, repo, ref.tag, image)
            digests[original] = image.digest
    return digests


@pytest.fixture
async def source_registry(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    from tests.registry_lab import DOCKER_REGISTRY, Registry, TokenProxy

    need_tools(DOCKER_REGISTRY)
    with Registry(tmp_path / "source-registry") as registry:
        async with TokenProxy(registry.url) as proxy:
            yield proxy.url, registry.url


def mirrors_for(url: str) -> list[str]:
    hosts = {"docker.io", "quay.io", "registry.k8s.io"}
    args = []
    for host in sorted(hosts):
        args += ["--registry-mirror", f"{host}={url}"]
    return args


async def test_images_pulled_into_archives_docker_and_the_pusher_read(
    lab: Lab, tmp_path: Path, source_registry: tuple[str, str]
) -> None:
    from bootstrapperd.oci.archive import ImageArchive

    proxy_url, upstream = source_registry
    digests = await fill_registry(proxy_url, upstream)
    cache = ["--cache", str(tmp_path / "cache")]
    first = await lab.pack(*mirrors_for(proxy_url), *cache, images=True)
    assert first.code == 0, first.err
    cluster = ImageArchive.open(lab.out / "images" / "cluster.tar")
    registry = ImageArchive.open(lab.out / "images" / "registry.tar")
    cluster.verify()
    registry.verify()
    held = {i.original: i.digest for i in [*cluster.images, *registry.images]}
    assert held == digests  # every image, the amd64 entry of the pause list
    assert [i.original for i in registry.images] == ["docker.io/library/registry:2.8.3"]
    layers = [d.digest for i in cluster.images for d in i.layers]
    shared = {d for d in layers if layers.count(d) > 1}
    assert len(shared) == 1  # the base layer, used by every image...
    blob_members = [m for m in cluster.regions if m.startswith("blobs/sha256/")]
    assert len(blob_members) == len(set(blob_members))  # ...and stored once
    manifest = json.loads((lab.out / "manifest.json").read_text())
    assert "images/cluster.tar" in manifest["files"]
    assert (await run(str(PACK), "--verify", str(lab.out))).code == 0

    before = (lab.out / "images" / "cluster.tar").stat().st_mtime_ns
    second = await lab.pack(*mirrors_for(proxy_url), *cache, images=True)
    assert second.code == 0, second.err
    assert (lab.out / "images" / "cluster.tar").stat().st_mtime_ns == before  # not rewritten


async def test_a_moved_tag_fetches_only_the_new_layer(
    lab: Lab, tmp_path: Path, source_registry: tuple[str, str]
) -> None:
    import shutil

    import aiohttp

    from bootstrapperd.oci.archive import ImageArchive
    from bootstrapperd.oci.reference import parse_reference
    from tests.registry_lab import TokenProxy, build_image, sha256, upload_image

    proxy_url, upstream = source_registry
    await fill_registry(proxy_url, upstream)
    cache = tmp_path / "cache"
    assert (await lab.pack(*mirrors_for(proxy_url), "--cache", str(cache), images=True)).code == 0
    # The tag moves on the registry; the blob cache is gone (another laptop, say).
    shutil.rmtree(cache)
    etcd = next(o for o in example_images() if "etcd" in o)
    ref = parse_reference(etcd)
    moved = build_image(
        [{"etc/os-release": b"ID=lab\n"}, {f"opt/{ref.path}/2": b"new"}], label=etcd
    )
    async with aiohttp.ClientSession() as session:
        await upload_image(session, upstream, ref.path, ref.tag, moved)
    async with TokenProxy(upstream) as watched:
        again = await lab.pack(*mirrors_for(watched.url), "--cache", str(cache), images=True)
        assert again.code == 0, again.err
        fetched = watched.log.blob_gets()
    # Only the moved image's new layer and config came over the network; the rest came out
    # of the previous archive.
    assert sorted(p.rsplit("/", 1)[1] for p in fetched) == sorted(
        [moved.config_digest, sha256(moved.layers[1])]
    )
    cluster = ImageArchive.open(lab.out / "images" / "cluster.tar")
    assert {i.original: i.digest for i in cluster.images}[etcd] == moved.digest
    cluster.verify()


async def test_an_image_missing_upstream_is_named_and_nothing_half_written(
    lab: Lab, tmp_path: Path, source_registry: tuple[str, str]
) -> None:
    proxy_url, upstream = source_registry
    await fill_registry(proxy_url, upstream)
    description = tmp_path / "extra.yml"
    description.write_text(
        EXAMPLE.read_text().replace("images:", "images:\n  extra: quay.io/nobody/missing:v1", 1)
    )
    lab.description = description
    result = await lab.pack(*mirrors_for(proxy_url), "--cache", str(tmp_path / "c"), images=True)
    assert result.code == 1, result.err
    assert "quay.io/nobody/missing:v1" in result.err
    assert not (lab.out / "images" / "cluster.tar").exists()
    assert not list((lab.out / "images").glob(".*"))
    assert not (lab.out / "manifest.json").exists()
