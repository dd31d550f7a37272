"""Files never leave their tree, against ``bootstrapperd serve`` in namespaces with real clients:
tftp-hpa and atftp for TFTP names, curl for HTTP ``/boot/<name>`` and ``/static/...``. Links to
the host, to ``tls/``, ``state/`` and ``config/``, directory links, loops and ``..`` in names get
nothing; links inside a route's trees work; a FIFO does not stall the daemon; refusals are
logged and counted."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import SERVER, DHCPLab, wait_until

pytestmark = pytest.mark.netns

CLIENT_IP = "10.77.0.10"
BASE = f"http://{SERVER}"
STATE_SECRET = b"what only the daemon reads\n"
GOOD = os.urandom(70_000)  # an "iPXE binary" over more than one TFTP block
KERNEL = os.urandom(3_000)

# name in tftpboot/ → link target; every one leaves the trees TFTP and /boot serve from
OUT_OF_TFTPBOOT = {
    "hostname": "/etc/hostname",
    "ca-key.pem": "../tls/ca-key.pem",
    "secret.db": "../state/secret.db",
    "cluster-desc.yml": "../config/cluster-desc.yml",
    "ca-key-abs.pem": "{root}/tls/ca-key.pem",
    "loop": "loop",
}
# TFTP names that reach out through a directory link or ``..``
OUT_BY_NAME = (
    "keys/ca-key.pem",
    "etc/hostname",
    "../tls/ca-key.pem",
    "static/../../tls/ca-key.pem",
)
# name in html/static/ → link target, each leaving the mirror
OUT_OF_MIRROR = {
    "hostname": "/etc/hostname",
    "ca-key.pem": "../../tls/ca-key.pem",
    "secret.db": "../../state/secret.db",
    "cluster-desc.yml": "../../config/cluster-desc.yml",
    "loop": "loop",
}


def lay_out(bsroot: Path) -> list[bytes]:
    """Files to serve, the hostile and the friendly links, and a secret in ``state/``: the
    secrets no client may get (the CA key, that file, the description, the host's name)."""
    tftpboot, static = bsroot / "tftpboot", bsroot / "html" / "static"
    (bsroot / "state").mkdir(exist_ok=True)
    (bsroot / "state" / "secret.db").write_bytes(STATE_SECRET)
    (tftpboot / "ipxe.efi").write_bytes(GOOD)
    (static / "flatcar").mkdir(parents=True)
    (static / "flatcar" / "kernel").write_bytes(KERNEL)
    for name, target in OUT_OF_TFTPBOOT.items():
        (tftpboot / name).symlink_to(target.format(root=bsroot))
    (tftpboot / "keys").symlink_to("../tls")
    (tftpboot / "etc").symlink_to("/etc")
    for name, target in OUT_OF_MIRROR.items():
        (static / name).symlink_to(target)
    (tftpboot / "relative.efi").symlink_to("ipxe.efi")
    (tftpboot / "absolute.efi").symlink_to(tftpboot / "ipxe.efi")
    (tftpboot / "mirror").symlink_to("../html/static")  # Sextant's link: TFTP only
    (static / "flatcar" / "vmlinuz").symlink_to("kernel")
    secrets = (bsroot / "tls" / "ca-key.pem", bsroot / "config" / "cluster-desc.yml")
    return [STATE_SECRET, Path("/etc/hostname").read_bytes(), *(p.read_bytes() for p in secrets)]


def start(netlab: NetLab, bsroot: Path) -> tuple[DHCPLab, DaemonProcess, list[bytes]]:
    secrets = lay_out(bsroot)
    lab = DHCPLab.build(netlab, bsroot)
    lab.cli.ip("addr", "add", f"{CLIENT_IP}/24", "dev", "node0")
    daemon = lab.start_daemon()
    wait_until(lambda: "service=tftp" in daemon.output, what="tftp listening")
    wait_until(lambda: "service=http" in daemon.output, what="http listening")
    return lab, daemon, secrets


# Each TFTP client as a user runs it: argv for (remote name, local path).
TFTP_CLIENTS: dict[str, Callable[[str, Path], list[str]]] = {
    "tftp": lambda name, out: ["tftp", "-m", "binary", SERVER, "-c", "get", name, str(out)],
    "atftp": lambda name, out: ["atftp", "-g", "-r", name, "-l", str(out), SERVER],
}


def tftp_get(lab: DHCPLab, client: str, name: str) -> bytes | None:
    """What ``client`` fetched for ``name``: its bytes, or None when it left no file."""
    out = lab.scratch / f"{client}-{name.replace('/', '_')}"
    out.unlink(missing_ok=True)
    lab.cli.run(TFTP_CLIENTS[client](name, out), timeout=60)
    return out.read_bytes() if out.exists() else None


def curl(lab: DHCPLab, path: str) -> tuple[str, bytes]:
    """The HTTP status and body curl gets for ``path`` (``--path-as-is``: ``..`` is sent)."""
    out = lab.scratch / "curl.out"
    out.unlink(missing_ok=True)
    argv = ["curl", "-sS", "--path-as-is", "--max-time", "30", "-o", str(out)]
    result = lab.cli.run([*argv, "-w", "%{http_code}", f"{BASE}{path}"], timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout, out.read_bytes() if out.exists() else b""


def metric(lab: DHCPLab, name: str, **labels: str) -> int:
    """The value of one sample of /metrics (0 when absent)."""
    text = curl(lab, "/metrics")[1].decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        found = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if found and found[1] == name and ",".join(sorted(found[2].split(","))) == wanted:
            return int(float(found[3]))
    return 0


@pytest.mark.parametrize("client", sorted(TFTP_CLIENTS))
def test_tftp_clients_get_nothing_from_outside_the_tree(
    netlab: NetLab, bsroot: Path, client: str
) -> None:
    need_tools(client)
    lab, daemon, secrets = start(netlab, bsroot)
    refused_before = metric(lab, "bootstrapperd_tftp_events_total", event="refused")
    hostile = [*OUT_OF_TFTPBOOT, *OUT_BY_NAME]
    for name in hostile:
        got = tftp_get(lab, client, name)
        assert not any(secret in (got or b"") for secret in secrets), name
    for name, data in (
        ("ipxe.efi", GOOD),
        ("relative.efi", GOOD),
        ("absolute.efi", GOOD),
        ("mirror/flatcar/kernel", KERNEL),
        ("static/flatcar/vmlinuz", KERNEL),
    ):
        assert tftp_get(lab, client, name) == data, name
    refused = metric(lab, "bootstrapperd_tftp_events_total", event="refused") - refused_before
    assert refused >= len(hostile)
    wait_until(lambda: "route=tftp" in daemon.output and "kind=loop" in daemon.output)
    # One line per kind a minute, however many were refused.
    lines = [x for x in daemon.output.splitlines() if "file refused" in x and "kind=outside" in x]
    assert len(lines) == 1, lines


def test_curl_gets_nothing_from_outside_the_tree(netlab: NetLab, bsroot: Path) -> None:
    need_tools("curl")
    lab, daemon, secrets = start(netlab, bsroot)
    hostile = [
        *(f"/boot/{name}" for name in OUT_OF_TFTPBOOT),
        "/boot/mirror",  # the mirror is TFTP's second tree, not /boot's
        *(f"/static/{name}" for name in OUT_OF_MIRROR),
        "/static/../tls/ca-key.pem",
        "/static/flatcar/../../../tls/ca-key.pem",
        "/boot/..%2ftls%2fca-key.pem",
        "/static/%2e%2e/%2e%2e/tls/ca-key.pem",
    ]
    for path in hostile:
        status, body = curl(lab, path)
        assert status == "404", path
        assert not any(secret in body for secret in secrets), path
    for path, data in (
        ("/boot/ipxe.efi", GOOD),
        ("/boot/relative.efi", GOOD),
        ("/boot/absolute.efi", GOOD),
        ("/static/flatcar/kernel", KERNEL),
        ("/static/flatcar/vmlinuz", KERNEL),
    ):
        assert curl(lab, path) == ("200", data), path
    wait_until(lambda: "route=boot" in daemon.output and "route=static" in daemon.output)
    assert metric(lab, "bootstrapperd_http_requests_total", route="boot-file", code="404") >= 7


def test_a_fifo_in_the_tree_does_not_stall_the_daemon(netlab: NetLab, bsroot: Path) -> None:
    need_tools("tftp", "curl")
    lab, daemon, _ = start(netlab, bsroot)
    for fifo in (bsroot / "tftpboot" / "fifo", bsroot / "html" / "static" / "fifo"):
        os.mkfifo(fifo)
    # Whatever the daemon did, nothing writes into the FIFO: a daemon that opened it for
    # reading would wait for ever, and answer no one.
    assert not tftp_get(lab, "tftp", "fifo")
    assert curl(lab, "/boot/fifo")[0] == "404"
    assert curl(lab, "/static/fifo")[0] == "404"
    assert tftp_get(lab, "tftp", "ipxe.efi") == GOOD
    assert curl(lab, "/boot/ipxe.efi") == ("200", GOOD)
    wait_until(lambda: "kind=special" in daemon.output)
