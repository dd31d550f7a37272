"""The registry service for real: Debian's docker-registry started and supervised by the
service (and by ``bootstrapperd serve``), archives made by the oci package pushed to it, and
every manifest and blob pulled back over verified HTTPS with matching digests; the Docker
backend against an isolated dockerd.

Everything runs inside a network namespace of the test's own (the registry listens on the
bootstrapper address, 10.77.0.1:5000, never on the host's interfaces). The in-process tests move
the test's thread into that namespace (setns) for their duration, so the service's sockets, its
child process and an isolated dockerd all live there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import io
import json
import os
import signal
import ssl
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bootstrapperd.bsroot.layout import Bsroot
from bootstrapperd.bsroot.pki import ClusterPKI
from bootstrapperd.lab.netlab import Namespace, NetLab, wait_for_http
from bootstrapperd.model.holder import ModelHolder
from bootstrapperd.oci.archive import ImageArchive, write_archive
from bootstrapperd.oci.manifest import Descriptor, PulledImage, ResolvedImage
from bootstrapperd.oci.reference import local_push_target, parse_reference
from bootstrapperd.pack import init_bsroot
from bootstrapperd.registry import RegistryService
from bootstrapperd.registry.config import ServerConfig, render_config
from bootstrapperd.registry.engine import CONTAINER_NAME, LABEL
from tests.conftest import EXAMPLE, need_tools, unavailable
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import SERVER, DHCPLab, wait_until
from tests.registry_lab import (
    ACCEPT_ALL,
    DOCKER_MANIFEST,
    BuiltImage,
    DockerDaemon,
    DockerUnavailable,
    build_image,
    sha256,
)

pytestmark = pytest.mark.netns

ADDRESS = IPv4Address(SERVER)  # the bundled example's bootstrapper
DOCKERDOMAIN = "bootstrapper"  # the bundled example's dockerdomain
REGISTRY = f"{DOCKERDOMAIN}:5000"
BASE = f"https://{SERVER}:5000"
TIMEOUT = 60.0
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


# -- the namespace the test runs in ---------------------------------------------------------------


@contextlib.contextmanager
def inside(ns: Namespace) -> Iterator[None]:
    """Move this thread into ``ns`` (sockets and child processes made meanwhile live there)."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns.name}")
        try:
            yield
        finally:
            if _libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace")
    finally:
        os.close(original)
        os.close(target)


@pytest.fixture
def site(netlab: NetLab) -> Iterator[Namespace]:
    """A namespace holding the bootstrapper address (on a veth pair with both ends inside: this
    kernel has no dummy links), with this test inside."""
    need_tools("docker-registry")
    ns = netlab.namespace("reg")
    ns.ip("link", "add", "bs0", "type", "veth", "peer", "name", "bs1")
    ns.ip("addr", "add", f"{SERVER}/24", "dev", "bs0")
    for link in ("bs0", "bs1"):
        ns.ip("link", "set", link, "up")
    with inside(ns):
        yield ns


# -- images and archives --------------------------------------------------------------------------


def image(label: str, *layers: dict[str, bytes]) -> BuiltImage:
    return build_image(list(layers) or [{f"etc/{label}": label.encode()}], label=label)


def write_images(path: Path, images: dict[str, BuiltImage]) -> Path:
    """An archive as pack writes it (the oci package's writer), from built images."""
    blob_dir = path.parent.parent / "blobs"
    pulled = []
    for original, built in images.items():
        for digest, data in built.blobs.items():
            target = blob_dir / "sha256" / digest.removeprefix("sha256:")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        doc = json.loads(built.manifest)
        config, *layers = (
            Descriptor(media_type=d["mediaType"], digest=d["digest"], size=d["size"])
            for d in (doc["config"], *doc["layers"])
        )
        resolved = ResolvedImage(
            reference=parse_reference(original),
            manifest=built.manifest,
            media_type=built.media_type,
            digest=built.digest,
            config=config,
            layers=tuple(layers),
        )
        pulled.append(PulledImage(resolved=resolved, blob_dir=blob_dir, downloaded=0))
    write_archive(path, pulled)
    return path


SHARED = {"lib/shared.txt": b"a layer two images share\n" * 200}
PAUSE = image("pause", SHARED, {"pause": b"pause"})
COREDNS = image("coredns", SHARED, {"coredns": b"coredns" * 1000})
FLANNEL = image("flannel")


def cluster_images(bsroot: Path) -> dict[str, dict[str, BuiltImage]]:
    """Two archives under images/: one with two images sharing a layer, one with another."""
    archives = {
        "a-kube.tar": {
            "registry.k8s.io/pause:3.9": PAUSE,
            "registry.k8s.io/coredns/coredns:v1.11.1": COREDNS,
        },
        "b-flannel.tar": {"docker.io/flannel/flannel:v0.25.1": FLANNEL},
    }
    for name, images in archives.items():
        write_images(bsroot / "images" / name, images)
    return archives


# -- the service and pulling back -----------------------------------------------------------------


def service(bsroot: Path, **kw: Any) -> RegistryService:
    root = Bsroot(bsroot)
    holder = ModelHolder.load(root.cluster_desc)

    async def no_engine(endpoint: str | None) -> bool:
        return False  # binary mode, even on a machine with a Docker socket

    kw.setdefault("engine_check", no_engine)
    kw.setdefault("restart_delay", 0.2)
    kw.setdefault("retry_delay", 0.1)
    return RegistryService(holder, root, ADDRESS, ClusterPKI(root.tls), **kw)


async def until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109 (a test helper's deadline)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


def client_tls(bsroot: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(bsroot / "tls" / "ca.pem"))


async def pull_back(
    bsroot: Path,
    original: str,
    built: BuiltImage,
    *,
    base: str = BASE,
    registry: str = REGISTRY,
    hostname: str | None = DOCKERDOMAIN,
) -> None:
    """GET the manifest by tag and every blob, over HTTPS verified against the cluster CA for
    the name <dockerdomain>; each body must hash to its digest and equal what was built."""
    repository, tag = local_push_target(registry, original)
    tls = client_tls(bsroot)
    async with aiohttp.ClientSession() as session:

        async def get(path: str, **kw: Any) -> tuple[bytes, str | None]:
            async with session.get(
                f"{base}{path}", ssl=tls, server_hostname=hostname, **kw
            ) as resp:
                assert resp.status == 200, (path, resp.status, await resp.text())
                return await resp.read(), resp.headers.get("Docker-Content-Digest")

        manifest, digest = await get(
            f"/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
        )
        assert digest == built.digest == sha256(manifest)
        assert manifest == built.manifest
        for blob, data in built.blobs.items():
            body, _ = await get(f"/v2/{repository}/blobs/{blob}")
            assert sha256(body) == blob
            assert body == data


def states(status: dict[str, Any]) -> dict[str, str]:
    return {a["archive"]: a["state"] for a in status["archives"]}


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


# -- binary mode ----------------------------------------------------------------------------------


async def test_binary_mode_pushes_and_a_restart_finds_everything_present(
    site: Namespace, bsroot: Path
) -> None:
    archives = cluster_images(bsroot)
    registry = service(bsroot)
    await registry.start()
    try:
        await until(lambda: registry.push_done, "push")
        status = registry.status()
        assert status["backend"] == "binary"
        assert status["state"] == "ready"
        assert status["up"]
        assert states(status) == {"a-kube.tar": "pushed", "b-flannel.tar": "pushed"}
        counts = {"pending": 0, "pushing": 0, "pushed": 3, "present": 0, "failed": 0}
        assert status["counts"] == counts
        images = {i["image"]: i for a in status["archives"] for i in a["images"]}
        assert images["registry.k8s.io/pause:3.9"]["reference"] == (
            "bootstrapper:5000/registry.k8s.io/pause:3.9"
        )
        # Eight blobs; the layer two images share went up once and was mounted for the other.
        assert status["blobs"]["uploaded"] == 7
        assert status["blobs"]["mounted"] + status["blobs"]["present"] == 1
        for images_of in archives.values():
            for original, built in images_of.items():
                await pull_back(bsroot, original, built)
        pid = status["instance"]["pid"]
        config = (bsroot / "state" / "registry" / "config.yml").read_text()
        assert f"addr: {SERVER}:5000" in config
        assert "htpasswd" not in config
    finally:
        await registry.stop()
    assert gone(pid), "the registry child outlived stop()"
    assert registry.status()["state"] == "stopped"

    again = service(bsroot)
    await again.start()
    try:
        await until(lambda: again.push_done, "second push")
        status = again.status()
        assert states(status) == {"a-kube.tar": "present", "b-flannel.tar": "present"}
        assert status["blobs"]["uploaded"] == 0
        assert status["counts"]["present"] == 3
        second_pid = status["instance"]["pid"]
        assert second_pid != pid
    finally:
        await again.stop()
    assert gone(second_pid)


async def test_a_corrupt_archive_fails_by_name_and_the_others_are_pushed(
    site: Namespace, bsroot: Path
) -> None:
    write_images(bsroot / "images" / "good.tar", {"registry.k8s.io/pause:3.9": PAUSE})
    (bsroot / "images" / "broken.tar").write_bytes(b"this is not a tar file\n" * 100)
    # A blob whose bytes no longer match its digest: the registry refuses the upload.
    bad = write_images(
        bsroot / "images" / "tampered.tar", {"docker.io/flannel/flannel:v1": FLANNEL}
    )
    region = ImageArchive.open(bad).blob_region(sha256(FLANNEL.layers[0]))
    with bad.open("r+b") as f:
        f.seek(region.offset + region.size // 2)
        byte = f.read(1)
        f.seek(-1, io.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))

    registry = service(bsroot, push_rounds=2, push_retries=0)
    await registry.start()
    try:
        await until(lambda: registry.push_done, "push")
        status = registry.status()
        expected = {"broken.tar": "failed", "good.tar": "pushed", "tampered.tar": "failed"}
        assert states(status) == expected
        archives = {a["archive"]: a for a in status["archives"]}
        assert "broken.tar" in archives["broken.tar"]["reason"]
        assert archives["broken.tar"]["attempts"] == 1  # unreadable: not retried
        assert archives["tampered.tar"]["attempts"] == 2  # refused: tried again
        assert "docker.io/flannel/flannel:v1" in archives["tampered.tar"]["reason"]
        assert archives["tampered.tar"]["images"][0]["state"] == "failed"
        assert status["counts"]["failed"] == 2
        assert status["counts"]["pushed"] == 1
        await pull_back(bsroot, "registry.k8s.io/pause:3.9", PAUSE)
    finally:
        await registry.stop()


async def test_a_registry_that_dies_is_restarted(site: Namespace, bsroot: Path) -> None:
    registry = service(bsroot)
    await registry.start()
    try:
        await until(lambda: registry.up, "ready")
        pid = registry.status()["instance"]["pid"]
        os.kill(pid, signal.SIGKILL)
        await until(lambda: registry.restarts == 1 and registry.up, "restarted")
        status = registry.status()
        assert status["instance"]["pid"] != pid
        assert status["state"] == "ready"
    finally:
        await registry.stop()
    assert gone(status["instance"]["pid"])


async def test_a_leftover_child_of_a_killed_daemon_is_replaced(
    site: Namespace, bsroot: Path
) -> None:
    first = service(bsroot)
    await first.start()
    await until(lambda: first.up, "ready")
    await first.stop()
    files = bsroot / "state" / "registry"
    pidfile = files / "registry.pid"
    assert not pidfile.exists()
    # What a SIGKILLed daemon leaves: its registry still running, and the pidfile.
    argv = ["/usr/bin/docker-registry", "serve", str(files / "config.yml")]
    leftover = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220 (starting a process does not wait for it)
    pidfile.write_text(f"{leftover.pid}\n")
    second = service(bsroot, binary_lookup=lambda: argv[0])
    await second.start()
    try:
        await until(lambda: second.up, "ready")
        assert leftover.wait(timeout=10) == -signal.SIGTERM
        assert second.status()["instance"]["pid"] != leftover.pid
    finally:
        await second.stop()

    # A pidfile naming some other process: that process is not ours, and is left alone.
    other = subprocess.Popen(["sleep", "60"])  # noqa: ASYNC220 (starting a process does not wait for it)
    try:
        pidfile.write_text(f"{other.pid}\n")
        third = service(bsroot)
        await third.start()
        try:
            await until(lambda: third.up, "ready")
            assert other.poll() is None
        finally:
            await third.stop()
    finally:
        other.kill()
        other.wait()


async def test_external_mode_pushes_to_a_registry_it_does_not_run(
    site: Namespace, tmp_path: Path
) -> None:
    external = f"{SERVER}:5443"
    description = tmp_path / "cluster-desc.yml"
    description.write_text(EXAMPLE.read_text() + f"\nregistry:\n  url: https://{external}\n")
    bsroot = init_bsroot(description, tmp_path / "bsroot").root
    write_images(bsroot / "images" / "kube.tar", {"registry.k8s.io/pause:3.9": PAUSE})
    # Someone else's registry, with a certificate our CA signed for the bootstrapper address.
    config = tmp_path / "external.yml"
    config.write_text(
        render_config(
            ServerConfig(
                addr=external,
                rootdirectory=str(tmp_path / "external-data"),
                certificate=str(bsroot / "tls" / "bootstrapper.pem"),
                key=str(bsroot / "tls" / "bootstrapper-key.pem"),
                secret="external",
            )
        )
    )
    other = subprocess.Popen(  # noqa: ASYNC220 (starting a process does not wait for it)
        ["/usr/bin/docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    registry = service(bsroot)
    try:
        await registry.start()
        await until(lambda: registry.push_done, "push")
        status = registry.status()
        assert status["backend"] == "external", status
        assert status["state"] == "ready", status
        assert status["instance"] is None
        assert status["registry"] == external
        assert states(status) == {"kube.tar": "pushed"}
        image = status["archives"][0]["images"][0]
        assert image["reference"] == f"{external}/registry.k8s.io/pause:3.9"
        await pull_back(
            bsroot,
            "registry.k8s.io/pause:3.9",
            PAUSE,
            base=f"https://{external}",
            registry=external,
            hostname=None,
        )
        assert not (bsroot / "state" / "registry" / "config.yml").exists()
        await registry.stop()
        assert other.poll() is None  # not ours to stop
    finally:
        await registry.stop()
        other.terminate()
        other.wait(timeout=10)


# -- through `bootstrapperd serve` -------------------------------------------------------------


def curl(ns: Namespace, *args: str) -> str:
    result = ns.run(["curl", "-sS", "--fail", "--max-time", "30", *args], timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_daemon_runs_the_registry_and_pushes(netlab: NetLab, bsroot: Path) -> None:
    need_tools("docker-registry", "curl")
    archives = cluster_images(bsroot)
    lab = DHCPLab.build(netlab, bsroot)
    lab.cli.ip("addr", "add", "10.77.0.50/24", "dev", "node0")
    # No Docker engine for this daemon, whatever the host has: the binary backend.
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env["DOCKER_HOST"] = f"unix://{bsroot.parent / 'no-docker.sock'}"
    daemon = DaemonProcess(lab.srv, bsroot, env=env)
    api = f"http://{SERVER}/api/v1/registry"
    wait_for_http(lab.cli, api)

    def registry() -> dict[str, Any]:
        return dict(json.loads(curl(lab.cli, api)))

    wait_until(lambda: registry()["push_done"], timeout=TIMEOUT, what="push done")
    status = registry()
    assert status["backend"] == "binary", status
    assert status["state"] == "ready", status
    assert states(status) == {"a-kube.tar": "pushed", "b-flannel.tar": "pushed"}
    pid = status["instance"]["pid"]
    ca = str(bsroot / "tls" / "ca.pem")
    for images in archives.values():
        for original, built in images.items():
            repository, tag = local_push_target(REGISTRY, original)
            url = f"https://{REGISTRY}/v2/{repository}/manifests/{tag}"
            tls = ["--cacert", ca, "--resolve", f"{REGISTRY}:{SERVER}"]
            accept = ["-H", f"Accept: {ACCEPT_ALL}"]
            got = subprocess.run(
                ["ip", "netns", "exec", lab.cli.name, "curl", "-sS", "--fail", *tls, *accept, url],
                capture_output=True,
                timeout=60,
                check=True,
            ).stdout
            assert hashlib.sha256(got).hexdigest() == built.digest.removeprefix("sha256:")
            for blob in built.blobs:
                out = bsroot.parent / "blob"
                blob_url = f"https://{REGISTRY}/v2/{repository}/blobs/{blob}"
                curl(lab.cli, *tls, "-o", str(out), blob_url)
                assert sha256(out.read_bytes()) == blob
    metrics = curl(lab.cli, f"http://{SERVER}/metrics")
    assert "bootstrapperd_registry_up 1.0" in metrics
    assert 'bootstrapperd_registry_images{state="pushed"} 3.0' in metrics
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.output
    assert gone(pid), "the registry outlived the daemon"
    assert "registry ready" in daemon.output
    assert "pushed a-kube.tar" in daemon.output


# -- docker mode ----------------------------------------------------------------------------------

REGISTRY_IMAGE = "localhost/bootstrapperd-test/registry:2.8"


def _tar_layer(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, str]:
    """A gzip'ed layer of ``path → (content, mode)``, and its diff ID."""
    import gzip

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for name in sorted(files):
            parts = Path(name).parts
            for i in range(1, len(parts)):
                directory = "/".join(parts[:i])
                if directory not in made:
                    made.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            content, mode = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0), sha256(raw.getvalue())


def registry_image() -> BuiltImage:
    """Debian's docker-registry and the shared libraries ``ldd`` lists, as an image whose
    entrypoint serves the config the official image reads."""
    program = Path("/usr/bin/docker-registry")
    files = {"usr/bin/docker-registry": (program.read_bytes(), 0o755)}
    ldd = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=True)
    for line in ldd.stdout.splitlines():
        words = line.split()
        path = next((w for w in words if w.startswith("/")), None)
        if path is not None:
            files[path.lstrip("/")] = (Path(path).resolve().read_bytes(), 0o755)
    data, diff_id = _tar_layer(files)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": ["/usr/bin/docker-registry", "serve"],
                "Cmd": ["/etc/docker/registry/config.yml"],
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": sha256(data),
                    "size": len(data),
                }
            ],
        }
    ).encode()
    return BuiltImage(manifest=manifest, media_type=DOCKER_MANIFEST, config=config, layers=(data,))


def docker_bsroot(tmp_path: Path) -> Path:
    description = tmp_path / "cluster-desc.yml"
    description.write_text(
        EXAMPLE.read_text() + f"\nregistry:\n  mode: docker\n  image: {REGISTRY_IMAGE}\n"
    )
    return init_bsroot(description, tmp_path / "bsroot").root


async def test_docker_mode_loads_runs_pushes_and_removes(site: Namespace, tmp_path: Path) -> None:
    need_tools("dockerd", "docker", "ldd")
    bsroot = docker_bsroot(tmp_path)
    write_images(bsroot / "images" / "registry.tar", {REGISTRY_IMAGE: registry_image()})
    write_images(bsroot / "images" / "cluster.tar", {"registry.k8s.io/pause:3.9": PAUSE})
    try:
        engine = DockerDaemon.start(tmp_path / "docker")
    except DockerUnavailable as exc:
        unavailable(f"no Docker engine can run here: {exc}")
    with engine:
        await _docker_mode(bsroot, engine)


async def _docker_mode(bsroot: Path, engine: DockerDaemon) -> None:
    async def engine_never_asked(endpoint: str | None) -> bool:
        raise AssertionError("mode docker must not probe the engine as auto does")

    def run() -> RegistryService:
        return service(
            bsroot, environ={"DOCKER_HOST": engine.host}, engine_check=engine_never_asked
        )

    def container() -> dict[str, Any] | None:
        found = engine.docker("inspect", CONTAINER_NAME, check=False)
        return json.loads(found.stdout)[0] if found.returncode == 0 else None

    assert engine.docker("image", "inspect", REGISTRY_IMAGE, check=False).returncode != 0
    registry = run()
    await registry.start()
    try:
        await until(lambda: registry.push_done or registry.state == "failed", "push")
        status = registry.status()
        assert status["backend"] == "docker", status
        assert status["state"] == "ready", status
        assert states(status) == {"cluster.tar": "pushed", "registry.tar": "pushed"}
        await pull_back(bsroot, "registry.k8s.io/pause:3.9", PAUSE)
        inspect = container()
        assert inspect is not None
        assert inspect["State"]["Running"] is True
        assert inspect["HostConfig"]["NetworkMode"] == "host"
        assert inspect["Config"]["Labels"][LABEL] == "registry"
        binds = inspect["HostConfig"]["Binds"]
        assert any(b.endswith(":/var/lib/registry") for b in binds)
        assert not any(b.startswith(f"{bsroot / 'tls'}:") for b in binds)  # never the CA key
        # The storage is under bsroot on the host.
        blobs = bsroot / "state/registry/data/docker/registry/v2/blobs/sha256"
        assert (blobs / PAUSE.digest[7:9] / PAUSE.digest[7:] / "data").is_file()
    finally:
        await registry.stop()
    assert container() is None
    assert engine.docker("image", "inspect", REGISTRY_IMAGE, check=False).returncode == 0

    # A container of ours that a crashed run left behind is replaced.
    label = f"{LABEL}=registry"
    engine.docker(
        "create", "--name", CONTAINER_NAME, "--label", label, "--network", "none", REGISTRY_IMAGE
    )
    stale = container()
    assert stale is not None
    registry = run()
    await registry.start()
    try:
        await until(lambda: registry.push_done or registry.state == "failed", "second push")
        status = registry.status()
        assert status["state"] == "ready", status
        assert states(status) == {"cluster.tar": "present", "registry.tar": "present"}
        running = container()
        assert running is not None
        assert running["Id"] != stale["Id"]
    finally:
        await registry.stop()
    assert container() is None

    # Someone else's container of that name is left alone, and the service says why it waits.
    engine.docker("create", "--name", CONTAINER_NAME, "--network", "none", REGISTRY_IMAGE)
    foreign = container()
    assert foreign is not None
    registry = run()
    await registry.start()
    try:
        await until(lambda: registry.state == "failed", "refusal")
        assert "did not make" in (registry.status()["detail"] or "")
    finally:
        await registry.stop()
    left = container()
    assert left is not None
    assert left["Id"] == foreign["Id"]
    engine.docker("rm", CONTAINER_NAME)
