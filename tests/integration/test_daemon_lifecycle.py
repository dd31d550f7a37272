"""`bootstrapperd serve` in a network namespace: bind, answer, reload, refuse, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import Namespace, NetLab, wait_for_http
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess

pytestmark = pytest.mark.netns

SERVER = "10.77.0.1"  # the bundled example's bootstrapper address
HEALTHZ = f"http://{SERVER}/healthz"
NEW_NODE = '  - mac: "52:54:00:77:00:99"\n    cur_host_name: "worker9"\n'


@pytest.fixture
def pair(netlab: NetLab) -> tuple[Namespace, Namespace]:
    need_tools("curl")
    srv = netlab.namespace("srv")
    cli = netlab.namespace("cli")
    netlab.veth(srv, "bs0", cli, "node0", f"{SERVER}/24", "10.77.0.254/24")
    return srv, cli


def _model(cli: Namespace, url: str = HEALTHZ) -> dict[str, object]:
    health = json.loads(wait_for_http(cli, url))
    assert health["status"] == "ok"
    model: dict[str, object] = health["model"]
    return model


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_healthz_answers_from_the_other_namespace(
    pair: tuple[Namespace, Namespace], bsroot: Path
) -> None:
    srv, cli = pair
    daemon = DaemonProcess(srv, bsroot)  # no options: finds bs0 by the bootstrapper address
    model = _model(cli)
    assert model["generation"] == 1
    assert model["nodes"] == 3
    assert "listening service=http interface=bs0 address=10.77.0.1 port=80" in daemon.output
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=5) == 0


def test_reload_broken_reload_and_sigterm(pair: tuple[Namespace, Namespace], bsroot: Path) -> None:
    srv, cli = pair
    daemon = DaemonProcess(srv, bsroot)
    assert _model(cli)["nodes"] == 3
    desc = bsroot / "config" / "cluster-desc.yml"
    original = desc.read_text()

    desc.write_text(original + NEW_NODE)
    daemon.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: _model(cli)["generation"] == 2)
    assert _model(cli)["nodes"] == 4

    desc.write_text(original + "  - mac: 52:54:00:zz\n")
    daemon.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: "reload failed" in daemon.output)
    assert "nodes[3].mac: '52:54:00:zz' is not a MAC address (line 64)" in daemon.output
    model = _model(cli)
    assert (model["generation"], model["nodes"]) == (2, 4)  # the old model keeps serving

    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    assert "SIGTERM: shutting down" in daemon.output
    assert "stopped" in daemon.output


def test_sigint_stops_gracefully(pair: tuple[Namespace, Namespace], bsroot: Path) -> None:
    srv, cli = pair
    daemon = DaemonProcess(srv, bsroot)
    _model(cli)
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.wait(timeout=5) == 0


def test_port_taken_fails_fast(pair: tuple[Namespace, Namespace], bsroot: Path) -> None:
    srv, cli = pair
    first = DaemonProcess(srv, bsroot)
    _model(cli)
    second = DaemonProcess(srv, bsroot, log=bsroot.parent / "second.log")
    assert second.wait(timeout=60) == 1  # a bound for a loaded machine, not a timing claim
    assert "cannot start: dhcp: cannot listen on bs0:67: address already in use" in (second.output)
    assert _model(cli)["generation"] == 1  # the first one is unaffected
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(timeout=5) == 0


HOLD_HTTP = """
import socket, time
s = socket.socket()
s.bind(("10.77.0.1", 80))
s.listen()
print("bound", flush=True)
time.sleep(60)
"""


def test_http_port_taken_fails_fast_and_releases_dhcp(
    pair: tuple[Namespace, Namespace], bsroot: Path
) -> None:
    srv, _ = pair
    holder = srv.spawn([sys.executable, "-c", HOLD_HTTP], stdout=subprocess.PIPE)
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"bound\n"
    daemon = DaemonProcess(srv, bsroot)
    assert daemon.wait(timeout=10) == 1
    assert "cannot start: http: cannot listen on 10.77.0.1:80: address already in use" in (
        daemon.output
    )
    assert ":67 " not in srv.run(["ss", "-lun"]).stdout  # the DHCP socket was closed again
    srv.lab.stop(holder)
    holder.stdout.close()


def test_missing_interface_fails_fast(pair: tuple[Namespace, Namespace], bsroot: Path) -> None:
    srv, _ = pair
    daemon = DaemonProcess(srv, bsroot, "--interface", "nope0")
    assert daemon.wait(timeout=10) == 1
    assert "cannot start: interface 'nope0' does not exist on this machine" in daemon.output


def test_bootstrapper_address_absent_fails_fast(netlab: NetLab, bsroot: Path) -> None:
    lonely = netlab.namespace("lonely")  # only lo: nothing holds 10.77.0.1
    daemon = DaemonProcess(lonely, bsroot)
    assert daemon.wait(timeout=10) == 1
    assert "no interface holds the bootstrapper address 10.77.0.1" in daemon.output


def test_bad_description_refuses_to_start(pair: tuple[Namespace, Namespace], bsroot: Path) -> None:
    srv, _ = pair
    desc = bsroot / "config" / "cluster-desc.yml"
    desc.write_text(desc.read_text().replace("kube_master: y", "kube_master: perhaps"))
    daemon = DaemonProcess(srv, bsroot)
    assert daemon.wait(timeout=10) == 1
    assert "nodes[0].kube_master: 'perhaps' is not a boolean" in daemon.output
    assert "(line 51)" in daemon.output


def test_environment_equivalents_and_json_logs(
    pair: tuple[Namespace, Namespace], bsroot: Path
) -> None:
    srv, cli = pair
    env = {
        **os.environ,
        "BOOTSTRAPPERD_BSROOT": str(bsroot),
        "BOOTSTRAPPERD_INTERFACE": "bs0",
        "BOOTSTRAPPERD_HTTP_PORT": "8080",
        "BOOTSTRAPPERD_LOG_FORMAT": "json",
    }
    daemon = DaemonProcess(srv, Path("/nonexistent"), env=env)
    # --bsroot on the command line wins over the environment: give it the real one instead.
    daemon.wait(timeout=10)
    daemon = DaemonProcess(srv, bsroot, env=env, log=bsroot.parent / "json.log")
    assert _model(cli, f"http://{SERVER}:8080/healthz")["generation"] == 1
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=5) == 0
    records = [json.loads(line) for line in daemon.output.splitlines()]
    listening = next(r for r in records if r["logger"] == "bootstrapperd.http")
    assert listening["msg"] == "listening"
    assert (listening["interface"], listening["port"]) == ("bs0", 8080)
    assert records[-1]["msg"] == "stopped"


def test_systemd_notify_protocol(pair: tuple[Namespace, Namespace], bsroot: Path) -> None:
    srv, cli = pair
    path = bsroot.parent / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        daemon = DaemonProcess(srv, bsroot, env={**os.environ, "NOTIFY_SOCKET": str(path)})
        ready = sock.recv(4096).decode().split("\n")
        assert ready[0] == "READY=1"
        assert f"MAINPID={daemon.proc.pid}" in ready
        _model(cli)  # READY=1 came after the listener was bound
        daemon.proc.send_signal(signal.SIGHUP)
        assert sock.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert sock.recv(4096).decode().startswith("READY=1")
        daemon.proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode() == "STOPPING=1"
        assert daemon.wait(timeout=5) == 0
