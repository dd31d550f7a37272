"""A hostile cluster description on SIGHUP: the running daemon logs why it refuses the file,
tells systemd READY=1 again, and keeps answering DHCP and HTTP with the model it had; and
`bootstrapperd check` refuses the same files with exit 1 and no traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab, wait_for_http
from bootstrapperd.model.yamlsrc import MAX_DEPTH, MAX_VALUES
from tests.conftest import EXAMPLE, need_tools
from tests.daemon_proc import DaemonProcess, bootstrapperd_command
from tests.integration.dhcp_lab import SERVER, DHCPLab, events, wait_until

pytestmark = pytest.mark.netns

MASTER_MAC = "52:54:00:77:00:10"  # master1 of the bundled example: reserved 10.77.0.10
HEALTHZ = f"http://{SERVER}/healthz"


def nested_file() -> str:
    """The reported file: a valid description plus one value nested 50,000 deep (line 64)."""
    return EXAMPLE.read_text() + "deep: " + "[" * 50_000 + "]" * 50_000 + "\n"


def alias_bomb_file() -> str:
    """A valid description plus a billion laughs: 9 levels of 9 aliases of the level before."""
    lines = ['lol0: &lol0 "lol"']
    for level in range(1, 10):
        refs = ", ".join([f"*lol{level - 1}"] * 9)
        lines.append(f"lol{level}: &lol{level} [{refs}]")
    return EXAMPLE.read_text() + "\n".join(lines) + "\n"


EXAMPLE_LINES = EXAMPLE.read_text().count("\n")
HOSTILE = [
    pytest.param(
        nested_file(),
        f"the document is nested deeper than {MAX_DEPTH} levels (line {EXAMPLE_LINES + 1})",
        id="nested",
    ),
    pytest.param(
        alias_bomb_file(),
        f"aliases expand the document to more than {MAX_VALUES} values (line {EXAMPLE_LINES + 7})",
        id="alias-bomb",
    ),
]


class NotifyListener:
    """The datagram socket systemd would listen on: NOTIFY_SOCKET for the daemon."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(30)  # a deadline for the message, not a measurement

    def next(self) -> list[str]:
        """The states of the next notification, one per line."""
        return self.sock.recv(4096).decode().split("\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(bsroot: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(bsroot.parent / "notify.sock")
    yield listener
    listener.close()


def healthz_model(lab: DHCPLab) -> dict[str, object]:
    health = json.loads(wait_for_http(lab.cli, HEALTHZ))
    model: dict[str, object] = health["model"]
    return model


def dhcp_address(lab: DHCPLab, name: str) -> str:
    """The address ISC dhclient is given (and configures inside the client namespace)."""
    log, output = lab.dhclient(name=name)
    bound = [e for e in events(log) if e.get("reason") == "BOUND"]
    assert bound, output
    return bound[-1]["new_ip_address"]


def test_sighup_with_hostile_files_finishes_and_keeps_serving(
    netlab: NetLab, bsroot: Path, notify: NotifyListener
) -> None:
    need_tools("curl", "dhclient")
    lab = DHCPLab.build(netlab, bsroot, MASTER_MAC)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    daemon = DaemonProcess(lab.srv, bsroot, env=env)
    assert notify.next()[0] == "READY=1"
    assert dhcp_address(lab, "first") == "10.77.0.10"
    assert healthz_model(lab)["generation"] == 1

    desc = bsroot / "config" / "cluster-desc.yml"
    for param in HOSTILE:
        text, reason = param.values
        assert isinstance(text, str)
        desc.write_text(text)
        daemon.proc.send_signal(signal.SIGHUP)
        assert notify.next()[0] == "RELOADING=1"
        ready = notify.next()
        assert ready[0] == "READY=1", (param.id, daemon.output[-2000:])
        assert "STATUS=serving 3 nodes (model generation 1)" in ready
        wait_until(lambda r=reason: r in daemon.output, what=f"{param.id} refusal logged")
        assert "Traceback" not in daemon.output
        assert daemon.proc.poll() is None
        model = healthz_model(lab)
        assert (model["generation"], model["nodes"]) == (1, 3)  # the old model serves
        assert dhcp_address(lab, f"after-{param.id}") == "10.77.0.10"

    assert daemon.output.count("reload failed; keeping the model loaded at generation 1") == 2
    desc.write_text(EXAMPLE.read_text())  # a good file loads again: nothing was left stuck
    daemon.proc.send_signal(signal.SIGHUP)
    assert notify.next()[0] == "RELOADING=1"
    assert "STATUS=serving 3 nodes (model generation 2)" in notify.next()
    daemon.proc.send_signal(signal.SIGTERM)
    assert notify.next() == ["STOPPING=1"]
    assert daemon.wait(timeout=10) == 0


@pytest.mark.parametrize(("text", "reason"), HOSTILE)
def test_check_refuses_hostile_files_without_traceback(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "cluster-desc.yml"
    path.write_text(text)
    result = subprocess.run(
        [*bootstrapperd_command(), "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"  {reason}" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
