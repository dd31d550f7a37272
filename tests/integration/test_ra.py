"""IPv6 Router Advertisements from `bootstrapperd serve`, seen by real clients in a client
namespace: `rdisc6` (ndisc6) and the Linux kernel's own SLAAC; disabled, malformed RSs that are
counted and survived, reloads that turn RAs off and on or change the prefix, and an interface
without IPv6 that leaves the rest serving."""

from __future__ import annotations

import re
import signal
import sys
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import Namespace, NetLab, wait_for_http
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import SERVER, DHCPLab, wait_until

pytestmark = pytest.mark.netns

DHCP_LINE = "  unknown_machines: allow"  # the bundled example's last dhcp key: RA settings follow
METRICS = f"http://{SERVER}/metrics"
CLIENT_IF = "node0"

# RSs no host sends, from a raw ICMPv6 socket in the client namespace (the kernel fills in the
# checksum): each argument is "<hop limit>:<hex message>", sent to ff02::2 on the interface.
SEND_RS = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
index = socket.if_nametoindex(sys.argv[1])
for item in sys.argv[2:]:
    hops, message = item.split(":")
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, int(hops))
    s.sendto(bytes.fromhex(message), ("ff02::2", 0, 0, index))
"""
MALFORMED = {
    "code": "255:8501000000000000",  # code 1
    "options": "255:85000000000000000100000000000000",  # an option of length 0
    "hop_limit": "64:8500000000000000",  # routed from afar, not from this link
    "short": "255:85000000",  # 4 bytes
}


def with_ra(bsroot: Path, block: str) -> None:
    """The bundled example with ``dhcp.router_advertisement`` set to ``block`` (YAML)."""
    desc = bsroot / "config" / "cluster-desc.yml"
    original = bsroot.parent / "cluster-desc.original.yml"  # outside bsroot: not served
    if not original.exists():
        original.write_text(desc.read_text())
    text = original.read_text()
    line = next(x for x in text.splitlines() if x.startswith(DHCP_LINE))
    assert text.count(line) == 1
    desc.write_text(text.replace(line, f"{line}\n  router_advertisement: {block}"))


def link_local(ns: Namespace, ifname: str) -> str | None:
    """The interface's link-local address once duplicate address detection is over."""
    out = ns.run(["ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"]).stdout
    if not out.strip() or "tentative" in out:
        return None
    match = re.search(r"inet6 (fe80::[0-9a-f:]+)/", out)
    return match.group(1) if match else None


def mac_of(ns: Namespace, ifname: str) -> str:
    out = ns.run(["ip", "-o", "link", "show", "dev", ifname], check=True).stdout
    match = re.search(r"link/ether ([0-9a-f:]{17})", out)
    assert match, out
    return match.group(1)


def start(netlab: NetLab, bsroot: Path, block: str | None) -> tuple[DHCPLab, DaemonProcess]:
    need_tools("rdisc6", "curl")
    if block is not None:
        with_ra(bsroot, block)
    lab = DHCPLab.build(netlab, bsroot)
    for ns, ifname in ((lab.srv, "bs0"), (lab.cli, CLIENT_IF)):
        wait_until(lambda: link_local(ns, ifname) is not None, 30, f"DAD on {ifname}")  # noqa: B023
    daemon = lab.start_daemon()
    wait_until(
        lambda: "service=ra" in daemon.output or daemon.proc.poll() is not None,
        what="ra started",
    )
    assert daemon.proc.poll() is None, daemon.output
    return lab, daemon


def rdisc6(lab: DHCPLab) -> tuple[int, str]:
    result = lab.cli.run(["rdisc6", "-1", "-w", "3000", "-r", "3", CLIENT_IF], timeout=60)
    return result.returncode, result.stdout + result.stderr


def field(output: str, name: str) -> str:
    match = re.search(rf"^\s*{re.escape(name)}\s*:\s*(.+)$", output, re.MULTILINE)
    assert match, f"no {name!r} in:\n{output}"
    return match.group(1).strip()


def assert_bootstrapper_ra(lab: DHCPLab, output: str) -> None:
    """An RA from the daemon's link-local address that claims no router and no DHCPv6."""
    server = link_local(lab.srv, "bs0")
    assert server is not None
    assert re.search(rf"^\s*from {re.escape(server)}\s*$", output, re.MULTILINE), output
    assert field(output, "Stateful address conf.") == "No"
    assert field(output, "Stateful other conf.") == "No"
    assert field(output, "Router lifetime").split()[0] == "0"
    assert field(output, "Hop limit").split()[0] == "64"
    assert field(output, "Source link-layer address").lower() == mac_of(lab.srv, "bs0")


def prefixes(output: str) -> list[str]:
    return re.findall(r"^\s*Prefix\s*:\s*(\S+)", output, re.MULTILINE)


def metric(lab: DHCPLab, event: str) -> float:
    text = wait_for_http(lab.srv, METRICS)
    match = re.search(rf'^bootstrapperd_ra_events_total{{event="{event}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_rdisc6_gets_an_ra_from_the_link_local_address(netlab: NetLab, bsroot: Path) -> None:
    lab, daemon = start(netlab, bsroot, None)  # the example: dhcp.mode full, RAs by default
    code, output = rdisc6(lab)
    assert code == 0, output
    assert_bootstrapper_ra(lab, output)
    assert prefixes(output) == []
    assert "advertising service=ra interface=bs0 prefix=none interval=600" in daemon.output
    assert metric(lab, "solicitations") >= 1
    assert metric(lab, "sent_solicited") >= 1


def test_rdisc6_sees_the_configured_prefix(netlab: NetLab, bsroot: Path) -> None:
    lab, daemon = start(netlab, bsroot, '{prefix: "fd77::/64", interval: 30}')
    code, output = rdisc6(lab)
    assert code == 0, output
    assert_bootstrapper_ra(lab, output)
    assert prefixes(output) == ["fd77::/64"]
    assert field(output, "On-link") == "Yes"
    assert field(output, "Autonomous address conf.") == "Yes"
    assert field(output, "Valid time").split()[0] == "86400"
    assert field(output, "Pref. time").split()[0] == "14400"
    assert "prefix=fd77::/64 interval=30" in daemon.output


def test_the_client_kernel_autoconfigures_an_address_in_the_prefix(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("rdisc6", "curl")
    with_ra(bsroot, '{prefix: "fd77:0:0:5::/64"}')
    lab = DHCPLab.build(netlab, bsroot)
    for name in ("accept_ra", "autoconf"):
        lab.cli.run(["sysctl", "-w", f"net.ipv6.conf.{CLIENT_IF}.{name}=1"], check=True)
    for ns, ifname in ((lab.srv, "bs0"), (lab.cli, CLIENT_IF)):
        wait_until(lambda: link_local(ns, ifname) is not None, 30, f"DAD on {ifname}")  # noqa: B023
    lab.start_daemon()  # no client program: the kernel's RS, or the daemon's unsolicited RAs

    def slaac() -> list[IPv6Address]:
        out = lab.cli.run(["ip", "-6", "-o", "addr", "show", "dev", CLIENT_IF]).stdout
        found = [IPv6Address(a) for a in re.findall(r"inet6 ([0-9a-f:]+)/64", out)]
        return [a for a in found if a in IPv6Network("fd77:0:0:5::/64")]

    wait_until(lambda: slaac(), 90, "a SLAAC address in fd77:0:0:5::/64")
    routes = lab.cli.run(["ip", "-6", "route", "show", "default"]).stdout
    assert routes.strip() == "", routes  # router lifetime 0: no default route via us
    server = lab.srv.run(["ip", "-6", "-o", "addr", "show", "dev", "bs0"]).stdout
    assert "fd77:" not in server  # the bootstrapper does not configure itself from its own RAs


def test_disabled_sends_nothing(netlab: NetLab, bsroot: Path) -> None:
    lab, daemon = start(netlab, bsroot, "false")
    code, output = rdisc6(lab)
    assert code != 0, output
    assert "No response" in output, output
    assert "router advertisements are off service=ra interface=bs0" in daemon.output
    assert metric(lab, "sent_unsolicited") == 0


def test_malformed_solicitations_are_counted_and_survived(netlab: NetLab, bsroot: Path) -> None:
    lab, daemon = start(netlab, bsroot, "{enabled: y}")
    lab.cli.run([sys.executable, "-c", SEND_RS, CLIENT_IF, *MALFORMED.values()], check=True)
    for reason in MALFORMED:
        wait_until(lambda: metric(lab, f"dropped_{reason}") == 1, what=f"dropped_{reason}")  # noqa: B023
    code, output = rdisc6(lab)
    assert code == 0, output
    assert_bootstrapper_ra(lab, output)
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.output


def test_reload_turns_ras_off_and_on_and_changes_the_prefix(netlab: NetLab, bsroot: Path) -> None:
    lab, daemon = start(netlab, bsroot, '{prefix: "fd77::/64"}')
    assert prefixes(rdisc6(lab)[1]) == ["fd77::/64"]

    def reload(block: str, generation: int, line: str) -> None:
        before = daemon.output.count(line)
        with_ra(bsroot, block)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: f"generation={generation}" in daemon.output, what="reloaded")
        wait_until(lambda: daemon.output.count(line) > before, what=line)

    reload('{prefix: "fd78::/64"}', 2, "advertising service=ra interface=bs0 prefix=fd78::/64")
    code, output = rdisc6(lab)
    assert code == 0, output
    assert prefixes(output) == ["fd78::/64"], output

    reload("off", 3, "router advertisements are off")
    code, output = rdisc6(lab)
    assert code != 0, output
    assert "No response" in output, output

    reload("{enabled: true}", 4, "advertising service=ra interface=bs0 prefix=none")
    code, output = rdisc6(lab)
    assert code == 0, output
    assert_bootstrapper_ra(lab, output)
    assert prefixes(output) == []
    assert daemon.proc.poll() is None


def test_no_ipv6_on_the_interface_leaves_the_rest_serving(netlab: NetLab, bsroot: Path) -> None:
    need_tools("curl")
    lab = DHCPLab.build(netlab, bsroot)
    lab.srv.run(["sysctl", "-w", "net.ipv6.conf.bs0.disable_ipv6=1"], check=True)
    daemon = lab.start_daemon()
    wait_until(lambda: "service=http" in daemon.output, what="http listening")
    wait_for_http(lab.srv, f"http://{SERVER}/healthz")
    lines = [x for x in daemon.output.splitlines() if "bootstrapperd.ra" in x]
    warnings = [x for x in lines if "WARNING" in x]
    assert len(warnings) == 1, daemon.output
    assert "IPv6 is disabled on bs0" in warnings[0], daemon.output
    assert daemon.proc.poll() is None
