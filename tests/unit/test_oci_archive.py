"""The image archive (OCI layout + docker save's manifest.json) written and read back, with
real small images; and the manifest handling the archive and the client share."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from bootstrapperd.oci.archive import (
    ANNOTATION_INDEX_DIGEST,
    ANNOTATION_NAME,
    ANNOTATION_ORIGINAL,
    ANNOTATION_REF,
    ArchiveError,
    ImageArchive,
    write_archive,
)
from bootstrapperd.oci.client import parse_challenges
from bootstrapperd.oci.manifest import (
    DOCKER_SCHEMA1,
    PlatformNotFound,
    PulledImage,
    ResolvedImage,
    UnsupportedManifest,
    manifest_media_type,
    parse_image_manifest,
    select_platform,
)
from bootstrapperd.oci.reference import parse_reference
from tests.registry_lab import BuiltImage, build_image, build_index, sha256

BASE = {"etc/os-release": b"ID=lab\n", "bin/true": b"\x7fELF fake"}


def pulled(
    original: str, image: BuiltImage, blob_dir: Path, index: str | None = None
) -> PulledImage:
    """What RegistryClient.pull returns, made without a registry."""
    for digest, data in image.blobs.items():
        path = blob_dir / "sha256" / digest.removeprefix("sha256:")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    config, layers = parse_image_manifest(image.manifest, image.media_type)
    resolved = ResolvedImage(
        reference=parse_reference(original),
        manifest=image.manifest,
        media_type=image.media_type,
        digest=image.digest,
        config=config,
        layers=layers,
        index_digest=index,
    )
    return PulledImage(resolved=resolved, blob_dir=blob_dir, downloaded=0)


@pytest.fixture
def images(tmp_path: Path) -> list[PulledImage]:
    blobs = tmp_path / "blobs"
    noise = random.Random(7)  # incompressible, so layers are several chunks long
    a = build_image([BASE, {"app/a": noise.randbytes(5000)}], label="a")
    b = build_image([BASE, {"app/b": noise.randbytes(7000)}], oci=True, label="b")
    c = build_image([{"x": b"only"}], label="c")
    return [
        pulled("busybox:1.36", a, blobs),
        pulled("quay.io/coreos/etcd:v3.5.17", b, blobs, index="sha256:" + "1" * 64),
        pulled(f"localhost:5001/lab/pinned@{c.digest}", c, blobs),
    ]


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_round_trip(tmp_path: Path, images: list[PulledImage]) -> None:
    target = tmp_path / "out" / "cluster.tar"
    written = write_archive(target, images)
    assert (written.path, written.images) == (target, 3)
    assert written.size == target.stat().st_size
    archive = ImageArchive.open(target)
    archive.verify()
    by_original = {i.original: i for i in archive.images}
    assert set(by_original) == {i.original for i in images}
    for image in images:
        got = by_original[image.original]
        want = image.resolved
        assert (got.digest, got.manifest, got.media_type) == (
            want.digest,
            want.manifest,
            want.media_type,
        )
        assert (got.config, got.layers) == (want.config, want.layers)
        assert got.index_digest == want.index_digest
        for blob in got.blobs:
            data = image.blob_path(blob.digest).read_bytes()
            assert archive.read_blob(blob.digest) == data
            region = archive.blob_region(blob.digest)
            with target.open("rb") as f:  # the region really is the blob's bytes in the tar
                f.seek(region.offset)
                assert f.read(region.size) == data
            with archive.open_blob(blob.digest) as f:
                assert f.read() == data
    assert by_original["quay.io/coreos/etcd:v3.5.17"].name == "quay.io/coreos/etcd:v3.5.17"
    assert not list(target.parent.glob(".*part"))


async def test_blobs_stream_in_chunks(tmp_path: Path, images: list[PulledImage]) -> None:
    target = tmp_path / "a.tar"
    write_archive(target, images)
    archive = ImageArchive.open(target)
    layer = images[0].resolved.layers[1]
    chunks = [c async for c in archive.iter_blob(layer.digest, chunk_size=1000)]
    assert len(chunks) > 1
    assert all(len(c) <= 1000 for c in chunks)
    assert b"".join(chunks) == images[0].blob_path(layer.digest).read_bytes()


def test_layout_for_oci_tools_and_docker_load(tmp_path: Path, images: list[PulledImage]) -> None:
    target = tmp_path / "a.tar"
    write_archive(target, images)
    names = members(target)
    assert json.loads(read_member(target, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(read_member(target, "index.json"))
    assert index["schemaVersion"] == 2
    entries = {e["annotations"][ANNOTATION_ORIGINAL]: e for e in index["manifests"]}
    busybox = entries["busybox:1.36"]
    assert busybox["annotations"][ANNOTATION_NAME] == "docker.io/library/busybox:1.36"
    assert busybox["annotations"][ANNOTATION_REF] == "1.36"
    assert busybox["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert busybox["digest"] == images[0].resolved.digest
    etcd = entries["quay.io/coreos/etcd:v3.5.17"]
    assert etcd["annotations"][ANNOTATION_INDEX_DIGEST] == "sha256:" + "1" * 64
    pinned = entries[images[2].original]
    assert ANNOTATION_REF not in pinned["annotations"]  # no tag to name
    # Docker's view: Config and Layers are paths of blobs in this tar; names as docker shows.
    docker = json.loads(read_member(target, "manifest.json"))
    tags = sorted(tag for entry in docker for tag in entry["RepoTags"])
    assert tags == ["busybox:1.36", "quay.io/coreos/etcd:v3.5.17"]
    for entry in docker:
        assert entry["Config"] in names
        assert all(path in names for path in entry["Layers"])
        config = json.loads(read_member(target, entry["Config"]))
        assert len(config["rootfs"]["diff_ids"]) == len(entry["Layers"])
    first = next(e for e in docker if e["RepoTags"] == ["busybox:1.36"])
    assert first["Config"] == "blobs/sha256/" + images[0].resolved.config.hex
    assert first["Layers"] == ["blobs/sha256/" + d.hex for d in images[0].resolved.layers]
    repositories = json.loads(read_member(target, "repositories"))
    assert repositories == {
        "busybox": {"1.36": images[0].resolved.config.hex},
        "quay.io/coreos/etcd": {"v3.5.17": images[1].resolved.config.hex},
    }
    # Fixed owner, time and modes: nothing of the machine that wrote it.
    for info in names.values():
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
        assert info.mtime == 946684800
        assert info.mode == (0o755 if info.isdir() else 0o644)


def test_shared_layers_are_stored_once(tmp_path: Path, images: list[PulledImage]) -> None:
    target = tmp_path / "a.tar"
    written = write_archive(target, images)
    shared = images[0].resolved.layers[0]
    assert shared.digest == images[1].resolved.layers[0].digest  # same base layer
    with tarfile.open(target) as tar:
        blob_names = [m.name for m in tar.getmembers() if m.name.startswith("blobs/sha256/")]
    assert blob_names.count("blobs/sha256/" + shared.hex) == 1
    assert len(blob_names) == len(set(blob_names))
    distinct = {d.digest for i in images for d in (*i.resolved.blobs,)} | {
        i.resolved.digest for i in images
    }
    assert len(blob_names) == len(distinct) == written.blobs


def test_same_images_give_the_same_bytes(tmp_path: Path, images: list[PulledImage]) -> None:
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    write_archive(one, images)
    write_archive(two, list(reversed(images)))  # order of the input does not matter
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        names = tar.getnames()
    assert names == sorted(names)


def test_the_same_image_under_two_names(tmp_path: Path) -> None:
    image = build_image([BASE])
    blobs = tmp_path / "blobs"
    both = [pulled("busybox:1", image, blobs), pulled("quay.io/x/busybox:1", image, blobs)]
    target = tmp_path / "a.tar"
    write_archive(target, both)
    archive = ImageArchive.open(target)
    archive.verify()
    assert sorted(i.original for i in archive.images) == ["busybox:1", "quay.io/x/busybox:1"]
    docker = json.loads(read_member(target, "manifest.json"))
    assert len(docker) == 1  # one image for docker load, with both names
    assert docker[0]["RepoTags"] == ["busybox:1", "quay.io/x/busybox:1"]


def rewrite(
    source: Path, target: Path, *, drop: str | None = None, flip: str | None = None
) -> None:
    """A copy of the tar without a member, or with one byte of a member flipped."""
    with tarfile.open(source) as src, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            if info.name == drop:
                continue
            f = src.extractfile(info) if info.isfile() else None
            data = f.read() if f is not None else None
            if data is not None and info.name == flip:
                data = data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]
            dst.addfile(info, io.BytesIO(data) if data is not None else None)


def test_verify_catches_a_flipped_byte(tmp_path: Path, images: list[PulledImage]) -> None:
    good = tmp_path / "good.tar"
    write_archive(good, images)
    bad = tmp_path / "bad.tar"
    layer = images[0].resolved.layers[1]
    rewrite(good, bad, flip="blobs/sha256/" + layer.hex)
    archive = ImageArchive.open(bad)  # only manifests are read when opening
    with pytest.raises(ArchiveError) as caught:
        archive.verify()
    message = str(caught.value)
    assert f"member blobs/sha256/{layer.hex} is corrupt" in message
    assert "busybox:1.36 layer 2/2" in message
    assert str(bad) in message
    assert len(caught.value.problems) == 1


def test_verify_catches_a_missing_blob(tmp_path: Path, images: list[PulledImage]) -> None:
    good = tmp_path / "good.tar"
    write_archive(good, images)
    bad = tmp_path / "bad.tar"
    shared = images[0].resolved.layers[0]
    rewrite(good, bad, drop="blobs/sha256/" + shared.hex)
    archive = ImageArchive.open(bad)
    with pytest.raises(ArchiveError) as caught:
        archive.verify()
    message = str(caught.value)
    assert f"member blobs/sha256/{shared.hex} is missing" in message
    # Both images using the shared layer are named.
    assert "busybox:1.36 layer 1/2" in message
    assert "quay.io/coreos/etcd:v3.5.17 layer 1/2" in message
    assert "(manifest.json, busybox:1.36)" in message


def test_open_catches_a_corrupt_or_missing_manifest(
    tmp_path: Path, images: list[PulledImage]
) -> None:
    good = tmp_path / "good.tar"
    write_archive(good, images)
    manifest = "blobs/sha256/" + images[0].resolved.digest.removeprefix("sha256:")
    flipped, dropped = tmp_path / "flipped.tar", tmp_path / "dropped.tar"
    rewrite(good, flipped, flip=manifest)
    rewrite(good, dropped, drop=manifest)
    with pytest.raises(ArchiveError, match=rf"member {manifest} \(busybox:1.36 manifest\)"):
        ImageArchive.open(flipped)
    with pytest.raises(ArchiveError, match=rf"member {manifest} \(busybox:1.36 manifest\) is miss"):
        ImageArchive.open(dropped)
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(ArchiveError, match="not a readable tar"):
        ImageArchive.open(tmp_path / "junk.tar")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ArchiveError):
        ImageArchive.open(truncated).verify()


def test_a_blob_changed_since_pulled_leaves_no_archive(
    tmp_path: Path, images: list[PulledImage]
) -> None:
    target = tmp_path / "out" / "a.tar"
    write_archive(target, images)
    before = target.read_bytes()
    layer = images[1].resolved.layers[1]
    path = images[1].blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"quay.io/coreos/etcd:v3.5.17 layer: .* no longer"):
        write_archive(target, images)
    assert target.read_bytes() == before  # the old archive stays whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.tar"]
    path.unlink()
    with pytest.raises(ArchiveError, match="is missing"):
        write_archive(tmp_path / "new.tar", images)
    assert not (tmp_path / "new.tar").exists()


# -- manifests ---------------------------------------------------------------------------------


def test_manifest_types() -> None:
    docker = build_image([BASE])
    oci = build_image([BASE], oci=True)
    assert manifest_media_type(docker.manifest) == docker.media_type
    assert manifest_media_type(oci.manifest) == oci.media_type
    bare = json.loads(oci.manifest)
    del bare["mediaType"]
    raw = json.dumps(bare).encode()
    assert manifest_media_type(raw) == "application/vnd.oci.image.manifest.v1+json"
    assert manifest_media_type(raw, docker.media_type) == docker.media_type
    schema1 = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    assert manifest_media_type(schema1) == DOCKER_SCHEMA1
    with pytest.raises(UnsupportedManifest, match="schema 1"):
        parse_image_manifest(schema1, DOCKER_SCHEMA1)
    artifact = json.loads(oci.manifest)
    artifact["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(UnsupportedManifest, match="not a container image"):
        parse_image_manifest(json.dumps(artifact).encode(), oci.media_type)
    evil = json.loads(docker.manifest)
    evil["layers"][0]["digest"] = "sha256:../../etc/passwd"
    with pytest.raises(UnsupportedManifest, match="not sha256"):
        parse_image_manifest(json.dumps(evil).encode(), docker.media_type)
    with pytest.raises(UnsupportedManifest, match="not JSON"):
        manifest_media_type(b"\xff")


def test_platform_selection() -> None:
    amd = build_image([BASE])
    arm = build_image([BASE], architecture="arm64", variant="v8")
    amd_v3 = build_image([{"v3": b"1"}], variant="v3")
    data, _ = build_index(
        [
            (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
            (amd_v3, {"os": "linux", "architecture": "amd64", "variant": "v3"}),
            (amd, {"os": "linux", "architecture": "amd64"}),
        ]
    )
    chosen, present = select_platform(data)
    assert chosen.digest == amd.digest  # plain amd64 over amd64/v3
    assert present == ["linux/amd64", "linux/amd64/v3", "linux/arm64/v8"]
    only_arm, _ = build_index(
        [
            (arm, {"os": "linux", "architecture": "arm64"}),
            (arm, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        ]
    )
    with pytest.raises(PlatformNotFound, match="platforms present: linux/arm/v7, linux/arm64"):
        select_platform(only_arm)


def test_challenges() -> None:
    [bearer] = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    }
    basic, other = parse_challenges('Basic realm="x y", Bearer realm=http://a/t, service=s')
    assert (basic.scheme, basic.params) == ("basic", {"realm": "x y"})
    assert (other.scheme, other.params) == ("bearer", {"realm": "http://a/t", "service": "s"})
    [quoted] = parse_challenges(r'Bearer realm="a\"b",error="invalid_token"')
    assert quoted.params == {"realm": 'a"b', "error": "invalid_token"}


def test_sha256_helper_matches_hashlib() -> None:
    assert sha256(b"x") == "sha256:" + hashlib.sha256(b"x").hexdigest()
