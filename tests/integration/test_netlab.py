"""The lab harness itself: everything it made is gone afterwards, even when the body failed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab, unavailable_reason
from tests.conftest import need, need_tools

pytestmark = pytest.mark.netns


def _exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def test_teardown_after_failure_removes_namespaces_and_processes() -> None:
    reason = unavailable_reason()
    need(reason is None, reason or "")
    lab = NetLab()
    # The block builds a lab and raises in it: what is checked is what the teardown left.
    with pytest.raises(RuntimeError, match="boom"), lab:  # noqa: PT012
        a = lab.namespace("a")
        b = lab.namespace("b")
        lab.veth(a, "va", b, "vb", "10.99.0.1/24", "10.99.0.2/24")
        lab.bridge(b, "br0", "02:00:00:99:00:02", ports=["vb"])
        lab.tap(b, "tap0", bridge="br0")
        sleeper = a.spawn(["sleep", "300"])
        # a daemonised child that is not in lab.processes: found through `ip netns pids`
        a.run(["setsid", "-f", "sh", "-c", "exec sleep 301 </dev/null >/dev/null 2>&1"], check=True)
        names = (a.name, b.name)
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert not any(_exists(n) for n in names)
    leftover = subprocess.run(["pgrep", "-f", "sleep 301"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


def test_links_connect_the_two_namespaces(netlab: NetLab) -> None:
    a = netlab.namespace("a")
    b = netlab.namespace("b")
    netlab.veth(a, "va", b, "vb", "10.99.0.1/24", "10.99.0.2/24")
    need_tools("busybox")
    b.run(["busybox", "ping", "-c", "1", "-W", "2", "10.99.0.1"], check=True)
    route = b.run(["ip", "-4", "route", "get", "10.99.0.1"], check=True).stdout
    assert "dev vb" in route
    assert "10.99.0.1/24" in a.run(["ip", "-4", "addr", "show", "va"], check=True).stdout
    host_links = subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert " va:" not in host_links
    assert " vb:" not in host_links
