"""Real DHCP clients (ISC dhclient, busybox udhcpc) against `bootstrapperd serve`, in namespaces:
static reservation and pool, every option the issue lists, renew, release, restart."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.integration.dhcp_lab import UDHCPC_SCRIPT, DHCPLab, events, wait_until

pytestmark = pytest.mark.netns

MASTER = "52:54:00:77:00:10"  # static 10.77.0.10 in the bundled example
UNKNOWN = "52:54:00:ab:cd:01"


def test_dhclient_gets_the_static_reservation_and_every_option(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("dhclient")
    lab = DHCPLab.build(netlab, bsroot, MASTER)
    lab.start_daemon()
    log, output = lab.dhclient()
    bound = [e for e in events(log) if e.get("reason") == "BOUND"]
    assert bound, output
    lease = bound[-1]
    assert lease["new_ip_address"] == "10.77.0.10"
    assert lease["new_subnet_mask"] == "255.255.255.0"
    assert lease["new_routers"] == "10.77.0.1"
    assert lease["new_domain_name_servers"] == "10.77.0.1"
    assert lease["new_domain_name"] == "cluster.example"
    assert lease["new_host_name"] == "master1"
    assert lease["new_broadcast_address"] == "10.77.0.255"
    assert lease["new_ntp_servers"] == "10.77.0.1"
    assert lease["new_dhcp_lease_time"] == "43200"
    assert lease["new_dhcp_renewal_time"] == "21600"
    assert lease["new_dhcp_server_identifier"] == "10.77.0.1"
    assert ("10.77.0.10", MASTER, "bound") in lab.leases()


def test_dhclient_release_frees_the_lease(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dhclient")
    lab = DHCPLab.build(netlab, bsroot, UNKNOWN)
    daemon = lab.start_daemon()
    log, output = lab.dhclient()
    assert any(e.get("new_ip_address") == "10.77.0.100" for e in events(log)), output
    lab.dhclient("-r")
    wait_until(lambda: "RELEASE" in daemon.output, what="RELEASE logged")
    wait_until(lambda: ("10.77.0.100", UNKNOWN, "released") in lab.leases(), what="released row")
    log, output = lab.dhclient(name="again")
    again = [e for e in events(log) if e.get("reason") == "BOUND"]
    assert again, output
    assert again[-1]["new_ip_address"] == "10.77.0.100", output  # same address back


def test_udhcpc_pool_lease_renew_release_and_restart(netlab: NetLab, bsroot: Path) -> None:
    need_tools("busybox")
    lab = DHCPLab.build(netlab, bsroot, UNKNOWN)
    daemon = lab.start_daemon()
    script, log = lab.script("udhcpc", UDHCPC_SCRIPT)
    client = lab.cli.spawn(
        ["busybox", "udhcpc", "-f", "-i", "node0", "-t", "5", "-T", "1", "-s", str(script)]
    )
    wait_until(lambda: any(e["reason"] == "bound" for e in events(log)), what="udhcpc bound")
    bound = next(e for e in events(log) if e["reason"] == "bound")
    assert bound["ip"] == "10.77.0.100"
    assert bound["subnet"] == "255.255.255.0"
    assert bound["router"] == "10.77.0.1"
    assert bound["dns"] == "10.77.0.1"
    assert bound["domain"] == "cluster.example"
    assert bound["hostname"] == "52-54-00-ab-cd-01"  # Sextant's name for a MAC not in the model
    assert bound["lease"] == "43200"
    assert bound["serverid"] == "10.77.0.1"

    client.send_signal(signal.SIGUSR1)  # renew: a unicast REQUEST with ciaddr
    wait_until(lambda: any(e["reason"] == "renew" for e in events(log)), what="udhcpc renew")
    wait_until(lambda: "state=renewing" in daemon.output, what="renewal ACK logged")

    netlab.stop(daemon.proc)  # restart the daemon: the lease is still there
    daemon = lab.start_daemon()
    assert "leases=1" in daemon.output
    assert ("10.77.0.100", UNKNOWN, "bound") in lab.leases()
    client.send_signal(signal.SIGUSR1)
    wait_until(
        lambda: sum(e["reason"] == "renew" for e in events(log)) >= 2, what="renew after restart"
    )
    wait_until(lambda: "state=renewing" in daemon.output, what="renewal ACK after restart")

    client.send_signal(signal.SIGUSR2)  # release
    wait_until(lambda: "RELEASE" in daemon.output, what="RELEASE logged")
    wait_until(lambda: ("10.77.0.100", UNKNOWN, "released") in lab.leases(), what="released row")
    netlab.stop(client)
