"""The site side with no network at all: a bsroot packed on the "laptop" (the lab's signed
mirror for the OS, the wheelhouse ``scripts/setup.sh`` fills for bootstrapperd's own install),
copied to a "bootstrapper" that is a fresh network namespace with no route out (its only link
is a veth to a client namespace) and a private mount namespace (its own ``/opt``, a copy of
``/etc``, bsroot at ``/srv/bsroot``), where ``bsroot/install-bootstrapper.sh`` installs it and
runs ``serve``, which then answers a real DHCP client and HTTP. Then what the script does when
run again, and how it refuses a machine that lacks something, one refusal at a time."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from bootstrapperd import __version__
from bootstrapperd.bsroot.layout import Bsroot
from bootstrapperd.bsroot.manifest import Manifest
from bootstrapperd.lab.netlab import LabError, Namespace, NetLab, unavailable_reason, wait_for_http
from bootstrapperd.lab.vm.lab import pack_bsroot
from bootstrapperd.runtime.resources import example_cluster
from tests.conftest import need, need_tools, unavailable
from tests.docs import GETTING_STARTED, marked_block
from tests.registry_lab import DockerDaemon, DockerUnavailable
from tests.site_image import build_rootfs
from tests.wheelhouse import local_pip_environment

ADDRESS = "10.77.0.1"  # the example's bootstrapper address
CLIENT_ADDRESS = "10.77.0.250"  # outside the example's pool
WORKER_MAC = "52:54:00:77:00:11"  # the example's worker (a static reservation is not needed)
PACK = Path(sys.executable).with_name("bootstrapperd-pack")

# The site: a private /opt (the venv goes there) kept between runs of one test, a copy of /etc
# (the system user, the units, /etc/default), and the copied bsroot at /srv/bsroot.
WRAPPER = """\
set -e
mount --bind "$SITE_OPT" /opt
[ -e "$SITE_ETC/passwd" ] || cp -a /etc/. "$SITE_ETC"/
mount --bind "$SITE_ETC" /etc
mkdir -p /srv/bsroot
mount --bind "$SITE_BSROOT" /srv/bsroot
if [ -z "${SITE_DOCKER:-}" ]; then exec /srv/bsroot/install-bootstrapper.sh "$@"; fi
# The site's own container engine, in the site's namespaces: its host network is the site's,
# and it sees /srv/bsroot. Stopped when the script ends.
# (ip netns exec mounts a fresh /sys, without the cgroup tree dockerd needs: a cgroup2 one.)
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup
ns=bsdsite$(basename "$SITE_DOCKER" | tr -cd 'a-z0-9' | tail -c 6)
dockerd --iptables=false --ip-masq=false --ip-forward=false --bridge=none \
  --data-root "$SITE_DOCKER/data" --exec-root "$SITE_DOCKER/exec" \
  -H "unix://$SITE_DOCKER/docker.sock" --pidfile "$SITE_DOCKER/docker.pid" \
  --containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" \
  >"$SITE_DOCKER/dockerd.log" 2>&1 &
dockerd=$!
export DOCKER_HOST="unix://$SITE_DOCKER/docker.sock"
for _ in $(seq 1 300); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
/srv/bsroot/install-bootstrapper.sh "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
while :; do
  if wait "$child"; then status=0; else status=$?; fi
  kill -0 "$child" 2>/dev/null || break
done
kill -TERM "$dockerd" && wait "$dockerd" || true
exit "$status"
"""


@dataclass(frozen=True)
class Packed:
    bsroot: Path
    mirror: Path  # the lab's signed mirror the OS came from (signing-key.asc beside it)
    pip_env: dict[str, str]


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    need_tools("gpg", "gpgv", "unshare", "setpriv", "useradd", "systemctl")
    pip_env = local_pip_environment("pip-", "hatchling-")
    workdir = tmp_path_factory.mktemp("laptop")
    env = {**os.environ, **pip_env}
    result = pack_bsroot(example_cluster(), workdir, pack_options=(), env=env)
    return Packed(result.bsroot, workdir / "mirror", pip_env)


@dataclass
class Site:
    lab: NetLab
    ns: Namespace
    client: Namespace
    root: Path  # the scratch directory holding the site's /opt, /etc and bsroot
    bsroot: Path
    docker: Path | None = None  # the site's container engine's directory, when it has one

    def command(self, *args: str) -> list[str]:
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            WRAPPER,
            "--",
            *args,
        ]

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SITE_OPT": str(self.root / "opt"),
            "SITE_ETC": str(self.root / "etc"),
            "SITE_BSROOT": str(self.bsroot),
            **({"SITE_DOCKER": str(self.docker)} if self.docker else {}),
        }

    def install(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.ns.run(self.command(*args), timeout=timeout, env=self.env)


@contextlib.contextmanager
def open_site(packed_bsroot: Path, root: Path, docker: bool = False) -> Iterator[Site]:
    """The bootstrapper: bsroot copied over as the operator would, a network namespace whose
    only link is a veth to the client's, the address put on it as the guide says."""
    reason = unavailable_reason()
    need(reason is None, reason or "")
    bsroot = root / "bsroot"
    shutil.copytree(packed_bsroot, bsroot, symlinks=True)
    (root / "opt").mkdir()
    (root / "etc").mkdir()
    engine = Path(tempfile.mkdtemp(prefix="bsd-site-", dir="/tmp")) if docker else None
    try:
        with NetLab() as lab:
            ns = lab.namespace("site")
            client = lab.namespace("client")
            lab.veth(ns, "eth1", client, "eth0")
            client.ip("link", "set", "eth0", "address", WORKER_MAC)
            client.ip("addr", "add", f"{CLIENT_ADDRESS}/24", "dev", "eth0")  # for curl
            for line in marked_block(GETTING_STARTED, "address"):
                ns.run(shlex.split(line), check=True)
            yield Site(lab, ns, client, root, bsroot, engine)
    finally:
        if engine is not None:
            shutil.rmtree(engine, ignore_errors=True)


@pytest.fixture
def site(packed: Packed, tmp_path: Path) -> Iterator[Site]:
    with open_site(packed.bsroot, tmp_path) as opened:
        yield opened


def repack(packed: Packed, bsroot: Path, *extra: str, env: dict[str, str]) -> CompletedProcess[str]:
    """pack again over ``bsroot`` from the lab's mirror (everything but ``extra`` is there)."""
    mirror = packed.mirror
    return subprocess.run(
        [str(PACK), str(bsroot / "config" / "cluster-desc.yml"), "-o", str(bsroot), "--plain",
         "--no-images", "--mirror", f"file://{mirror}/{{channel}}",
         "--kubernetes-mirror", f"file://{mirror}/kubernetes",
         "--signing-key", str(mirror / "signing-key.asc"), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )  # fmt: skip


def serve_and_probe(site: Site, *args: str) -> str:
    """Run the install script with ``args`` (it ends by running the daemon in the foreground),
    then a real DHCP client and HTTP from the client's namespace; SIGTERM; its output."""
    log = (site.root / "site.log").open("wb")
    proc = site.ns.spawn(site.command(*args), stdout=log, stderr=subprocess.STDOUT, env=site.env)
    try:
        health = json.loads(wait_for_health(site, proc))
        assert health["version"] == __version__
        lease = site.client.run(
            ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-s", "/bin/true"],
            timeout=60,
        )
        assert lease.returncode == 0, lease.stdout + lease.stderr
        assert "lease of 10.77.0." in lease.stdout + lease.stderr
        assert "bootstrapperd" in wait_for_http(site.client, f"http://{ADDRESS}/", timeout=10)
    finally:
        code = site.lab.stop(proc, timeout=30)
        log.close()
    output = (site.root / "site.log").read_text()
    assert code == 0, output[-3000:]
    return output


def wait_for_health(site: Site, proc: subprocess.Popen[bytes], timeout: float = 300) -> str:
    """/healthz's body once the daemon answers; fails at once when the script or daemon exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (site.root / "site.log").read_text()
            pytest.fail(f"the site install exited {proc.returncode}:\n{log[-3000:]}")
        try:
            return wait_for_http(site.client, f"http://{ADDRESS}/healthz", timeout=2)
        except LabError:
            continue
    pytest.fail(f"/healthz did not answer within {timeout} s")


def test_pack_puts_the_bootstrapper_into_bsroot_and_its_manifest(packed: Packed) -> None:
    bsroot = packed.bsroot
    site = bsroot / "bootstrapper"
    env = dict(line.split("=", 1) for line in (site / "site.env").read_text().splitlines())
    assert env["VERSION"] == __version__
    assert env["PYTHON"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    wheels = sorted(p.name for p in (site / "wheels").glob("*.whl"))
    assert f"bootstrapperd-{__version__}-py3-none-any.whl" in wheels
    assert any(w.startswith("pip-") for w in wheels)
    for dependency in ("aiohttp-", "cryptography-", "pyyaml-", "jinja2-", "dnslib-"):
        assert any(w.lower().startswith(dependency) for w in wheels), dependency
    assert not any(w.startswith(("pytest", "mypy", "ruff", "hatchling")) for w in wheels)
    for unit in ("bootstrapperd.service", "bootstrapperd-container.service"):
        assert (site / "systemd" / unit).read_text().startswith("#")
    script = bsroot / "install-bootstrapper.sh"
    assert os.access(script, os.X_OK)
    listed = Manifest.load(Bsroot(bsroot)).files
    for path in [
        script,
        site / "site.env",
        *(site / "wheels").iterdir(),
        *(site / "systemd").iterdir(),
    ]:
        assert path.relative_to(bsroot).as_posix() in listed
    verified = subprocess.run([str(PACK), "--verify", str(bsroot)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr


def test_a_pack_that_cannot_get_the_wheels_says_so_and_keeps_the_old_wheelhouse(
    packed: Packed, tmp_path: Path
) -> None:
    bsroot = tmp_path / "bsroot"
    shutil.copytree(packed.bsroot, bsroot, symlinks=True)
    before = sorted(p.name for p in (bsroot / "bootstrapper" / "wheels").iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(empty),
    }
    # Everything else comes from the lab's mirror again: only the bootstrapper's part fails.
    result = repack(packed, bsroot, env=env)
    assert result.returncode == 1
    assert "bootstrapper: pip could not get" in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("bootstrapperd-pack")]
    assert failed[0].startswith("bootstrapperd-pack: bootstrapper: ")  # the one part that failed
    assert sorted(p.name for p in (bsroot / "bootstrapper" / "wheels").iterdir()) == before
    assert not [p for p in (bsroot / "bootstrapper").iterdir() if p.name.startswith(".")]


def test_the_site_installs_from_bsroot_alone_and_serves_dhcp_and_http(site: Site) -> None:
    need_tools("busybox", "curl")
    routes = site.ns.run(["ip", "route", "show", "table", "all"]).stdout
    assert "default" not in routes  # no way out: every package must come from bsroot
    check, install = (shlex.split(line) for line in marked_block(GETTING_STARTED, "install"))
    assert check[0] == install[0] == "/srv/bsroot/install-bootstrapper.sh"
    checked = site.install(*check[1:])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "check passed: nothing was changed" in checked.stdout
    assert not list((site.root / "opt").iterdir())  # the check's scratch install is gone
    # The guide's install line; no systemd here, so it runs the daemon in the foreground.
    output = serve_and_probe(site, *install[1:], "--foreground")
    assert f"installing bootstrapperd {__version__} into /opt/bootstrapperd" in output
    assert "ok: ports free" in output
    # The daemon ran as the unit's user, which owns state/ (and only state/ and tls/).
    user = next(
        line for line in (site.root / "etc" / "passwd").read_text().splitlines()
        if line.startswith("bootstrapperd:")
    )  # fmt: skip
    uid = int(user.split(":")[2])
    assert uid != 0
    assert (site.bsroot / "state").stat().st_uid == uid
    assert (site.bsroot / "state" / "bootstrapperd.db").stat().st_uid == uid
    assert (site.bsroot / "html").stat().st_uid != uid


def test_run_again_it_changes_nothing_and_it_refuses_what_is_missing(site: Site) -> None:
    first = site.install("--no-start")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "systemd is not running on this machine" in first.stdout
    unit = (site.root / "etc" / "systemd" / "system" / "bootstrapperd.service").read_text()
    assert "ExecStart=/opt/bootstrapperd/bin/bootstrapperd serve --bsroot /srv/bsroot" in unit

    again = site.install("--no-start")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"bootstrapperd {__version__} is already installed" in again.stdout
    assert "installing" not in again.stdout
    assert "wrote /etc/systemd/system" not in again.stdout

    # A port taken by another server: refused, naming the port and the usual suspects.
    holder = site.ns.spawn(
        [sys.executable, "-c",
         "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         f"s.bind(('{ADDRESS}', 53)); print('bound', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"bound\n"
        taken = site.install("--no-start")
    finally:
        site.lab.stop(holder)
        if holder.stdout is not None:
            holder.stdout.close()
    assert taken.returncode == 1
    assert f"dns: port 53/udp on {ADDRESS} is in use" in taken.stderr
    assert "refused: this machine cannot serve the bsroot yet" in taken.stderr

    # The bootstrapper address on no interface.
    site.ns.ip("addr", "flush", "dev", "eth1")
    moved = site.install("--no-start")
    assert moved.returncode == 1
    assert f"no interface holds the bootstrapper address {ADDRESS}" in moved.stderr

    # A wheelhouse for another Python, and a container form the bsroot does not carry.
    env_file = site.bsroot / "bootstrapper" / "site.env"
    env_file.write_text(env_file.read_text().replace("PYTHON=", "PYTHON=3.99\nOLD_PYTHON="))
    wrong = site.install("--no-start")
    assert wrong.returncode == 1
    assert "but the wheelhouse was packed for CPython 3.99" in wrong.stderr
    container = site.install("--container")
    assert container.returncode == 1
    assert "carries no container image" in container.stderr
    usage = site.install("--interface")
    assert usage.returncode == 2
    assert "--interface needs an interface name" in usage.stderr
    for result in (taken, moved, wrong, container, usage):
        assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def packed_image(packed: Packed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bsroot packed again, with the container image (made here: tests/site_image.py) saved
    from the laptop's container engine by ``--bootstrapper-image``."""
    need_tools("dockerd", "docker", "ldd")
    workdir = tmp_path_factory.mktemp("laptop-image")
    bsroot = workdir / "bsroot"
    shutil.copytree(packed.bsroot, bsroot, symlinks=True)
    rootfs = build_rootfs(bsroot / "bootstrapper" / "wheels", __version__, workdir)
    name = f"bootstrapperd:{__version__}-lab"
    try:
        engine = DockerDaemon.start(workdir / "docker")
    except DockerUnavailable as exc:
        unavailable(str(exc))
    with engine:
        engine.docker(
            "import",
            "--change", 'ENTRYPOINT ["/opt/bootstrapperd/bin/bootstrapperd"]',
            "--change", "ENV PATH=/opt/bootstrapperd/bin:/usr/bin:/bin",
            str(rootfs), name, timeout=300,
        )  # fmt: skip
        env = {**os.environ, **packed.pip_env, "DOCKER_HOST": engine.host}
        result = repack(packed, bsroot, "--bootstrapper-image", name, env=env)
    assert result.returncode == 0, result.stderr
    assert f"bootstrapper: image {name} saved as" in result.stderr
    return bsroot


def test_pack_saves_the_image_into_bsroot_and_its_manifest(packed_image: Path) -> None:
    site = packed_image / "bootstrapper"
    archive = site / "bootstrapperd-image.tar"
    assert f"IMAGE=bootstrapperd:{__version__}-lab\n" in (site / "site.env").read_text()
    with tarfile.open(archive) as tar:  # docker save's format: manifest.json names the tag
        index = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert index[0]["RepoTags"] == [f"bootstrapperd:{__version__}-lab"]
    listed = Manifest.load(Bsroot(packed_image)).files
    assert "bootstrapper/bootstrapperd-image.tar" in listed
    assert listed["bootstrapper/bootstrapperd-image.tar"].size == archive.stat().st_size


def test_the_container_form_installs_from_bsroot_alone_and_serves(
    packed_image: Path, tmp_path: Path
) -> None:
    need_tools("busybox", "curl")
    with open_site(packed_image, tmp_path, docker=True) as site:
        output = serve_and_probe(site, "--container", "--foreground")
        unit = site.root / "etc" / "systemd" / "system" / "bootstrapperd-container.service"
        text = unit.read_text()
    assert f"loading the image bootstrapperd:{__version__}-lab" in output
    assert "ok: ports free" in output  # preflight ran inside the image
    assert f"bootstrapperd:{__version__}-lab serve --bsroot /srv/bsroot" in text
    assert "-v /srv/bsroot:/srv/bsroot" in text
    assert not (site.root / "opt" / "bootstrapperd").exists()  # no venv in this form
