"""Proxy mode on a network that already has a DHCP server: dnsmasq (started by the test in its
own namespace on the same bridge) hands out the address, bootstrapperd only the boot file; a
PXE client gets both, and its boot-server request on port 4011 is answered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.l2 import Ether

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import wait_until
from tests.integration.test_dhcp_pxe import PROBE, frame, options_of, pxe

pytestmark = pytest.mark.netns

PXE_MAC = "52:54:00:00:05:01"
DNSMASQ_CONF = """port=0
interface=dh0
bind-interfaces
dhcp-range=10.77.0.150,10.77.0.160,255.255.255.0,1h
dhcp-leasefile={scratch}/dnsmasq.leases
pid-file={scratch}/dnsmasq.pid
dhcp-authoritative
no-ping
log-dhcp
user=root
"""
# A PXE client's boot-server request (PXE 2.1): unicast from its new address to port 4011.
ASK_4011 = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.0.155", 68))
s.settimeout(3)
s.sendto(bytes.fromhex(sys.argv[1]), ("10.77.0.1", 4011))
data, peer = s.recvfrom(4096)
print(data.hex(), peer[0], peer[1])
"""


def test_proxy_mode_alongside_dnsmasq(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dnsmasq")
    desc = bsroot / "config" / "cluster-desc.yml"
    desc.write_text(desc.read_text().replace("mode: full", "mode: proxy"))
    srv = netlab.namespace("srv")
    other = netlab.namespace("dhcp")
    cli = netlab.namespace("cli")
    netlab.veth(srv, "bs0", cli, "p0", "10.77.0.1/24", None)
    netlab.veth(other, "dh0", cli, "p1", "10.77.0.2/24", None)
    netlab.bridge(cli, "br0", "02:00:00:77:00:02", ["p0", "p1"])
    scratch = bsroot.parent
    conf = scratch / "dnsmasq.conf"
    conf.write_text(DNSMASQ_CONF.format(scratch=scratch))
    dnsmasq_log = scratch / "dnsmasq.log"
    with dnsmasq_log.open("wb") as out:
        other.spawn(
            ["dnsmasq", "-C", str(conf), "--keep-in-foreground", "--log-facility=-"],
            stdout=out,
            stderr=out,
        )
    daemon = DaemonProcess(srv, bsroot)
    wait_until(lambda: "port=4011" in daemon.output, what="proxy listening on 4011")
    assert "mode=proxy" in daemon.output

    discover = frame(PXE_MAC, options=pxe(0), broadcast=True)
    result = cli.run([sys.executable, str(PROBE), "br0", "2", discover.hex()], check=True)
    offers = [Ether(bytes.fromhex(h)) for h in json.loads(result.stdout)]
    by_server = {str(options_of(o)["server_id"]): o for o in offers}
    assert set(by_server) == {"10.77.0.1", "10.77.0.2"}, [o.summary() for o in offers]

    address_offer = by_server["10.77.0.2"][BOOTP]
    assert address_offer.yiaddr.startswith("10.77.0.15") or address_offer.yiaddr == "10.77.0.160"
    boot_offer = by_server["10.77.0.1"][BOOTP]
    assert boot_offer.yiaddr == "0.0.0.0"
    assert boot_offer.siaddr == "10.77.0.1"
    assert boot_offer.file.rstrip(b"\0") == b"undionly.kpxe"
    boot_options = options_of(by_server["10.77.0.1"])
    assert boot_options["vendor_class_id"] == b"PXEClient"
    assert "lease_time" not in boot_options
    assert "router" not in boot_options

    cli.ip("addr", "add", "10.77.0.155/24", "dev", "br0")  # as if bound by dnsmasq's offer
    packet = BOOTP(frame(PXE_MAC, "request", options=pxe(7), broadcast=False)[42:])
    packet.ciaddr = "10.77.0.155"  # the DHCP payload, sent over a UDP socket
    asked = cli.run([sys.executable, "-c", ASK_4011, bytes(packet).hex()], timeout=10)
    assert asked.returncode == 0, asked.stderr
    reply_hex, peer, port = asked.stdout.split()
    assert (peer, port) == ("10.77.0.1", "4011")
    ack = BOOTP(bytes.fromhex(reply_hex))
    assert ack.file.rstrip(b"\0") == b"ipxe.efi"
    options: dict[str, object] = {o[0]: o[1] for o in ack[DHCP].options if isinstance(o, tuple)}
    assert options["message-type"] == 5
    assert "undionly.kpxe" in daemon.output
    assert "proxy=True" in daemon.output


HOLD_PORT_67 = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 67))
print("bound", flush=True)
time.sleep(60)
"""


def test_dhcp_off_opens_no_socket_and_a_taken_port_fails_fast(netlab: NetLab, bsroot: Path) -> None:
    srv = netlab.namespace("srv")
    cli = netlab.namespace("cli")
    netlab.veth(srv, "bs0", cli, "node0", "10.77.0.1/24", None)
    desc = bsroot / "config" / "cluster-desc.yml"
    original = desc.read_text()

    desc.write_text(original.replace("mode: full", "mode: off"))
    daemon = DaemonProcess(srv, bsroot)
    wait_until(lambda: "ready" in daemon.output, what="daemon ready")
    assert "dhcp is off" in daemon.output
    assert ":67 " not in srv.run(["ss", "-lun"]).stdout
    netlab.stop(daemon.proc)

    desc.write_text(original)
    holder = srv.spawn([sys.executable, "-c", HOLD_PORT_67], stdout=subprocess.PIPE)
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"bound\n"
    daemon = DaemonProcess(srv, bsroot, log=bsroot.parent / "taken.log")
    assert daemon.wait(timeout=15) == 1
    assert "dhcp: cannot listen on bs0:67: address already in use" in daemon.output
    assert "another DHCP server" in daemon.output
    netlab.stop(holder)
    holder.stdout.close()
