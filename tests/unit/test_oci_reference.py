"""Image references: Docker's normalization, refusals with a reason, and the names images get on
the bootstrapper's registry (Sextant's ``<registry>/<reference as written>``)."""

from __future__ import annotations

import pytest

from bootstrapperd.oci.reference import (
    ImageReference,
    local_push_target,
    local_reference,
    parse_reference,
)

DIGEST = "sha256:" + "ab" * 32
REG = "bootstrapper.ailab.local:5000"


# fmt: off
NORMALIZED = [
    ("busybox", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None,
     "docker.io/library/busybox:1.36"),
    ("typhoon/hyperkube:v1.5.1", "docker.io", "typhoon/hyperkube", "v1.5.1", None,
     "docker.io/typhoon/hyperkube:v1.5.1"),
    ("docker.io/flannel/flannel:v0.25.1", "docker.io", "flannel/flannel", "v0.25.1", None,
     "docker.io/flannel/flannel:v0.25.1"),
    ("docker.io/redis", "docker.io", "library/redis", "latest", None,
     "docker.io/library/redis:latest"),
    ("index.docker.io/library/redis:7", "docker.io", "library/redis", "7", None,
     "docker.io/library/redis:7"),
    ("quay.io/coreos/flannel:v0.7.1-amd64", "quay.io", "coreos/flannel", "v0.7.1-amd64", None,
     "quay.io/coreos/flannel:v0.7.1-amd64"),
    ("registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", "3.9", None,
     "registry.k8s.io/pause:3.9"),
    ("gcr.io/google_containers/hyperkube-amd64:v1.6.2", "gcr.io",
     "google_containers/hyperkube-amd64", "v1.6.2", None,
     "gcr.io/google_containers/hyperkube-amd64:v1.6.2"),
    ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
    ("localhost:5001/team/app:v2", "localhost:5001", "team/app", "v2", None,
     "localhost:5001/team/app:v2"),
    ("10.0.0.1:5000/app", "10.0.0.1:5000", "app", "latest", None,
     "10.0.0.1:5000/app:latest"),
    ("Registry.Example.COM/app:1", "Registry.Example.COM", "app", "1", None,
     "Registry.Example.COM/app:1"),
    ("myhost:5000/a/b/c", "myhost:5000", "a/b/c", "latest", None, "myhost:5000/a/b/c:latest"),
    # A single name followed by a port-looking tag is Docker Hub's, tag "5000".
    ("localhost:5000", "docker.io", "library/localhost", "5000", None,
     "docker.io/library/localhost:5000"),
    (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST,
     f"docker.io/library/busybox@{DIGEST}"),
    (f"quay.io/coreos/etcd:v3.5.17@{DIGEST}", "quay.io", "coreos/etcd", "v3.5.17", DIGEST,
     f"quay.io/coreos/etcd:v3.5.17@{DIGEST}"),
    ("a__b/c-d--e/f.g_h:T_.-9", "docker.io", "a__b/c-d--e/f.g_h", "T_.-9", None,
     "docker.io/a__b/c-d--e/f.g_h:T_.-9"),
]
# fmt: on


@pytest.mark.parametrize(("text", "domain", "path", "tag", "digest", "full"), NORMALIZED)
def test_references_normalize_as_docker_does(
    text: str, domain: str, path: str, tag: str | None, digest: str | None, full: str
) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.original == text
    assert str(ref) == full
    assert ImageReference.parse(text) == ref


def test_names_as_docker_images_shows_them() -> None:
    assert parse_reference("busybox").repo_tag == "busybox:latest"
    assert parse_reference("docker.io/library/busybox:1").repo_tag == "busybox:1"
    assert parse_reference("typhoon/pause-amd64:3.0").repo_tag == "typhoon/pause-amd64:3.0"
    assert parse_reference("quay.io/a/b:1").repo_tag == "quay.io/a/b:1"
    assert parse_reference(f"busybox@{DIGEST}").repo_tag is None
    assert parse_reference(f"busybox:1@{DIGEST}").repo_tag == "busybox:1"
    assert parse_reference("busybox").pin == "latest"
    assert parse_reference(f"busybox:1@{DIGEST}").pin == DIGEST


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("docker.io/Library/busybox", "lowercase"),
        ("busybox:", "bad tag"),
        ("busybox:-x", "bad tag"),
        ("busybox:" + "x" * 129, "bad tag"),
        ("busybox@sha256:abc", "64 lowercase hex"),
        ("busybox@sha256:" + "AB" * 32, "64 lowercase hex"),
        ("busybox@sha512:" + "ab" * 64, "only sha256"),
        ("busybox@latest", "bad digest"),
        ("busybox@" + DIGEST + "@" + DIGEST, "more than one"),
        ("busy box", "white space"),
        (" busybox", "white space"),
        ("quay.io/", "bad repository name"),
        ("quay.io//x", "bad repository name"),
        ("/busybox", "bad repository name"),
        ("busybox/", "bad repository name"),
        ("a..b", "bad repository name"),
        ("a..b/c", "bad registry host"),
        ("-quay.io/x", "bad registry host"),
        ("quay.io:port/x", "bad registry host"),
        (":tag", "no repository name"),
        ("ab" * 32, "image ID"),
        ("x/" + "a" * 260, "longer than 255"),
    ],
)
def test_bad_references_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_reference(text)


# fmt: off
LOCAL_NAMES = [
    ("typhoon/hyperkube:v1.5.1", f"{REG}/typhoon/hyperkube:v1.5.1",
     "typhoon/hyperkube", "v1.5.1"),
    ("quay.io/coreos/flannel:v0.7.1-amd64", f"{REG}/quay.io/coreos/flannel:v0.7.1-amd64",
     "quay.io/coreos/flannel", "v0.7.1-amd64"),
    ("quay.io/coreos/etcd:v3.5.17", f"{REG}/quay.io/coreos/etcd:v3.5.17",
     "quay.io/coreos/etcd", "v3.5.17"),
    ("gcr.io/google_containers/pause-amd64:3.0",
     f"{REG}/gcr.io/google_containers/pause-amd64:3.0",
     "gcr.io/google_containers/pause-amd64", "3.0"),
    # As written, not normalized: no docker.io/, no library/, no :latest.
    ("busybox", f"{REG}/busybox", "busybox", "latest"),
    ("docker.io/library/busybox:1", f"{REG}/docker.io/library/busybox:1",
     "docker.io/library/busybox", "1"),
    # A port in the original's host cannot stay a colon inside a repository path.
    ("localhost:5001/team/app:v2", f"{REG}/localhost-5001/team/app:v2",
     "localhost-5001/team/app", "v2"),
    ("10.0.0.1:5000/app", f"{REG}/10.0.0.1-5000/app", "10.0.0.1-5000/app", "latest"),
    (f"registry.k8s.io/pause@{DIGEST}", f"{REG}/registry.k8s.io/pause@{DIGEST}",
     "registry.k8s.io/pause", DIGEST),
    (f"registry.k8s.io/pause:3.9@{DIGEST}", f"{REG}/registry.k8s.io/pause:3.9@{DIGEST}",
     "registry.k8s.io/pause", "3.9"),
]
# fmt: on


@pytest.mark.parametrize(("original", "local", "repository", "target"), LOCAL_NAMES)
def test_local_names_follow_sextant(
    original: str, local: str, repository: str, target: str
) -> None:
    assert local_reference(REG, original) == local
    assert local_push_target(REG, original) == (repository, target)
    # The local name is itself a valid reference on the bootstrapper's registry.
    parsed = parse_reference(local)
    assert (parsed.domain, parsed.path) == (REG, repository)


def test_local_names_refuse_what_cannot_be_a_repository() -> None:
    with pytest.raises(ValueError, match="not a valid repository path"):
        local_reference(REG, "Registry.Example.COM/app:1")  # upper case host: fine upstream
    with pytest.raises(ValueError, match="invalid registry"):
        local_reference("bad host:5000", "busybox")
    with pytest.raises(ValueError, match="lowercase"):
        local_reference(REG, "Busybox")
    with pytest.raises(ValueError, match="longer than 255"):
        local_reference(REG, "quay.io/" + "a" * 240)
