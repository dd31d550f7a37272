"""Machine states against the daemon in namespaces: a machine that ran the served install.sh is
``installed``, and its next network boot is sent to its own disk (HTTP and TFTP alike), also
after a restart; the operator's commands (``bootstrapperd machines``, ``reinstall``,
``approve``) work over the admin socket and every admin route is refused from the cluster."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bootstrapperd import routes
from bootstrapperd.lab.netlab import NetLab
from tests.browser import need_chromium
from tests.conftest import REPO, need_tools
from tests.daemon_proc import bootstrapperd_command
from tests.integration.dhcp_lab import DHCPLab, events
from tests.integration.test_install_enroll import BASE, MASTER, boot_script_token, install

STRANGER = "52:54:00:aa:bb:01"


def curl(lab: DHCPLab, *args: str) -> str:
    return lab.cli.run(["curl", "-fsS", *args], check=True).stdout


def status_of(lab: DHCPLab, url: str, method: str = "GET") -> int:
    result = lab.cli.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, url])
    return int(result.stdout)


def admin(bsroot: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An operator's command on the bootstrapper (this test runs as root, as the operator)."""
    return subprocess.run(
        [*bootstrapperd_command(), *args, "--bsroot", str(bsroot)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def subprocess_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)


def page_probe(run: Callable[..., subprocess.CompletedProcess[str]], *args: str) -> Any:
    need_chromium()
    probe = run(
        [sys.executable, "-m", "tests.integration.admin_probe", *args], timeout=120, cwd=REPO
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    return json.loads(probe.stdout)


@contextlib.contextmanager
def unix_forward(path: Path) -> Iterator[int]:
    """127.0.0.1:<port> → the Unix socket at ``path``, one thread per connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    opened: list[socket.socket] = []

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            opened.extend((client, upstream))
            upstream.connect(str(path))
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        thread.join(5)
        for sock in opened:
            sock.close()


def test_an_installed_machine_boots_its_disk_until_the_operator_reinstalls_it(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("dhclient", "curl", "openssl", "base64", "tftp")
    lab = DHCPLab.build(netlab, bsroot, MASTER)
    daemon = lab.start_daemon()
    log, output = lab.dhclient()
    assert any(e.get("reason") == "BOUND" for e in events(log)), output
    node = json.loads(curl(lab, f"{BASE}/api/v1/nodes/{MASTER}"))
    assert node["state"] == "ready"

    code, output, _ = install(lab, MASTER, boot_script_token(lab, MASTER), "flatcar")
    assert code == 0, output + daemon.output
    node = json.loads(curl(lab, f"{BASE}/api/v1/nodes/{MASTER}"))
    assert node["state"] == "installed"
    assert node["state_since"] is not None

    # Its next network boot: its own disk, over HTTP and over TFTP, and no install token.
    script = curl(lab, f"{BASE}/ipxe/{MASTER}")
    assert "sanboot --no-describe --drive 0x80" in script
    assert "bootstrapperd.token" not in script
    got = lab.scratch / "ipxe-by-tftp"
    name = f"ipxe/{MASTER.replace(':', '-')}"
    tftp = lab.cli.run(["tftp", "10.77.0.1", "-c", "get", name, str(got)])
    assert "sanboot --no-describe --drive 0x80" in got.read_text(), tftp.stdout + tftp.stderr
    node = json.loads(curl(lab, f"{BASE}/api/v1/nodes/{MASTER}"))
    kinds = [(e["source"], e["kind"]) for e in node["timeline"]]
    assert kinds.count(("http", "local-boot")) == 1
    assert kinds.count(("tftp", "local-boot")) == 1
    assert node["stage"] == "installed"
    assert 'bootstrapperd_machines{state="installed"} 1.0' in curl(lab, f"{BASE}/metrics")

    # The admin routes answer only on the admin socket: every one is refused from here.
    for route in routes.ADMIN_ROUTES:
        parts = {part: MASTER for part in route.parts}
        assert status_of(lab, BASE + route.path(**parts), route.method) == 403, route.name
    assert "admin route refused" in daemon.output

    table = admin(bsroot, "machines")
    assert table.returncode == 0, table.stderr
    (row,) = [line for line in table.stdout.splitlines() if line.startswith(MASTER)]
    assert row.split()[1:5] == ["master1", "master,etcd", "10.77.0.10", "installed"]
    listed = json.loads(admin(bsroot, "machines", "--json").stdout)
    assert {m["mac"]: m["state"] for m in listed}[MASTER] == "installed"

    # The status page offers the actions over the admin socket only (a browser reaches it
    # through a loopback forward, as `ssh -L` would), and they work.
    cluster_view = page_probe(lab.cli.run, f"{BASE}/", MASTER)
    assert cluster_view["actions"] == []
    assert cluster_view["state"] == "installed"
    with unix_forward(bsroot / "state" / "admin.sock") as port:
        admin_view = page_probe(subprocess_run, f"http://127.0.0.1:{port}/", MASTER)
        assert admin_view["actions"] == ["reinstall"]
        clicked = page_probe(
            subprocess_run, f"http://127.0.0.1:{port}/", MASTER, "--click", "reinstall", "ready"
        )
    assert clicked["state"] == "ready"
    assert clicked["errors"] == admin_view["errors"] == cluster_view["errors"] == []
    lab.cli.run(
        ["curl", "-fsS", "-X", "POST", "--data-urlencode", "event=installed",
         f"{BASE}/api/v1/nodes/{MASTER}/report"],
        check=True,
    )  # fmt: skip
    assert json.loads(curl(lab, f"{BASE}/api/v1/nodes/{MASTER}"))["state"] == "installed"

    # A restart keeps the state.
    lab.lab.stop(daemon.proc)
    daemon = lab.start_daemon()
    assert "sanboot" in curl(lab, f"{BASE}/ipxe/{MASTER}")

    # The operator reinstalls it: the next boot installs, with a fresh token.
    again = admin(bsroot, "reinstall", MASTER.replace(":", "-"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"{MASTER}: ready (reinstall by admin)"
    script = curl(lab, f"{BASE}/ipxe/{MASTER}")
    assert "bootstrapperd.token=" in script
    assert "sanboot" not in script
    node = json.loads(curl(lab, f"{BASE}/api/v1/nodes/{MASTER}"))
    assert node["state"] == "ready"
    assert any(e["kind"] == "state" and e["source"] == "admin" for e in node["timeline"])
    refused = admin(bsroot, "approve", MASTER)
    assert refused.returncode == 1
    assert "is ready, not discovered" in refused.stderr


def test_an_unknown_machine_under_approve_waits_until_approved(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("dhclient", "curl")
    desc = bsroot / "config" / "cluster-desc.yml"
    desc.write_text(
        desc.read_text().replace("unknown_machines: allow", "unknown_machines: approve")
    )
    lab = DHCPLab.build(netlab, bsroot, STRANGER)
    lab.start_daemon()
    log, output = lab.dhclient()
    assert any(e.get("reason") == "BOUND" for e in events(log)), output
    script = curl(lab, f"{BASE}/ipxe/{STRANGER}")
    assert "waits for approval" in script
    assert "kernel" not in script
    assert "bootstrapperd.token" not in script
    node = json.loads(curl(lab, f"{BASE}/api/v1/nodes/{STRANGER}"))
    assert node["state"] == "discovered"
    assert "waiting" in [e["kind"] for e in node["timeline"]]

    approved = admin(bsroot, "approve", STRANGER)
    assert approved.returncode == 0, approved.stderr
    script = curl(lab, f"{BASE}/ipxe/{STRANGER}")
    assert "bootstrapperd.token=" in script
    assert json.loads(curl(lab, f"{BASE}/api/v1/nodes/{STRANGER}"))["state"] == "ready"


def test_the_commands_say_when_no_daemon_serves_the_bsroot(bsroot: Path) -> None:
    result = admin(bsroot, "machines")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"bootstrapperd machines: no admin channel at {bsroot}/state/admin.sock: is "
        "bootstrapperd serving this bsroot?"
    )
