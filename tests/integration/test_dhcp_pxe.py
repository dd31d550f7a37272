"""scapy-crafted DHCP from every kind of firmware against `bootstrapperd serve` in a namespace:
the boot file each gets, how replies are addressed (unicast to the MAC, broadcast, relay), and
malformed packets dropped and counted while a real client still gets its lease."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import UDHCPC_SCRIPT, DHCPLab, events, wait_until

pytestmark = pytest.mark.netns

PROBE = Path(__file__).with_name("frame_probe.py")
CLIENT_MAC = "52:54:00:ab:cd:02"
PARAMS = bytes([1, 3, 6, 12, 15, 28, 51, 54, 60, 66, 67, 43, 175])


def frame(
    mac: str,
    kind: str = "discover",
    *,
    options: Sequence[tuple[object, ...]] = (),
    broadcast: bool = True,
    giaddr: str = "0.0.0.0",
    src: str = "0.0.0.0",
    dst: str = "255.255.255.255",
    sport: int = 68,
    xid: int = 0x42,
) -> bytes:
    dhcp_options: list[object] = [("message-type", kind), (55, PARAMS), *options, "end"]
    packet = (
        Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=src, dst=dst)
        / UDP(sport=sport, dport=67)
        / BOOTP(
            chaddr=bytes.fromhex(mac.replace(":", "")),
            xid=xid,
            flags=0x8000 if broadcast else 0,
            giaddr=giaddr,
        )
        / DHCP(options=dhcp_options)
    )
    return bytes(packet)


def pxe(arch: int, vendor: str | None = None) -> list[tuple[object, ...]]:
    vendor = vendor or f"PXEClient:Arch:{arch:05d}:UNDI:003016"
    return [
        (93, arch.to_bytes(2, "big")),
        (94, b"\x01\x03\x10"),
        (97, b"\x00" + bytes(range(16))),
        (60, vendor.encode()),
    ]


class Probe:
    def __init__(self, lab: DHCPLab) -> None:
        self.lab = lab

    def exchange(self, *frames: bytes, seconds: float = 1.5) -> list[Ether]:
        argv = [sys.executable, str(PROBE), "node0", str(seconds), *(f.hex() for f in frames)]
        result = self.lab.cli.run(argv, timeout=30, check=True)
        return [Ether(bytes.fromhex(h)) for h in json.loads(result.stdout)]

    def reply(self, *frames: bytes) -> Ether:
        replies = self.exchange(*frames)
        assert len(replies) == 1, [r.summary() for r in replies]
        return replies[0]


def options_of(reply: Ether) -> dict[object, object]:
    found: dict[object, object] = {}
    for option in reply[DHCP].options:
        if isinstance(option, tuple):
            found[option[0]] = option[1] if len(option) == 2 else option[1:]
    return found


@pytest.fixture
def lab(netlab: NetLab, bsroot: Path) -> tuple[DHCPLab, DaemonProcess]:
    dhcp_lab = DHCPLab.build(netlab, bsroot, CLIENT_MAC)
    dhcp_lab.cli.ip("link", "set", "node0", "promisc", "on")  # see unicast to any client MAC
    daemon = dhcp_lab.start_daemon("--log-level", "debug")
    return dhcp_lab, daemon


@pytest.mark.parametrize(
    ("arch", "file", "vendor"),
    [
        (0, "undionly.kpxe", "PXEClient"),
        (7, "ipxe.efi", "PXEClient"),
        (9, "ipxe.efi", "PXEClient"),
    ],
)
def test_pxe_firmware_gets_the_ipxe_binary(
    lab: tuple[DHCPLab, DaemonProcess], arch: int, file: str, vendor: str
) -> None:
    reply = Probe(lab[0]).reply(frame("52:54:00:00:01:01", options=pxe(arch)))
    opts = options_of(reply)
    assert opts["message-type"] == 2
    assert reply[BOOTP].file.rstrip(b"\0") == file.encode()
    assert reply[BOOTP].siaddr == "10.77.0.1"
    assert opts["vendor_class_id"] == vendor.encode()
    assert opts["tftp_server_name"] == b"10.77.0.1"
    assert opts["boot-file-name"] == file.encode()
    assert opts["vendor_specific"] == b"\x06\x01\x08"  # PXE discovery control: use this file


def test_arm64_uefi_gets_its_binary_only_when_bsroot_has_it(
    lab: tuple[DHCPLab, DaemonProcess],
) -> None:
    dhcp_lab, daemon = lab
    probe = Probe(dhcp_lab)
    without = probe.reply(frame("52:54:00:00:01:02", options=pxe(11)))
    assert without[BOOTP].file.rstrip(b"\0") == b""
    assert "bsroot has no ipxe-arm64.efi" in daemon.output
    (dhcp_lab.bsroot / "tftpboot" / "ipxe-arm64.efi").write_bytes(b"arm64 iPXE")
    with_binary = probe.reply(frame("52:54:00:00:01:02", options=pxe(11)))
    assert with_binary[BOOTP].file.rstrip(b"\0") == b"ipxe-arm64.efi"


def test_uefi_http_boot_gets_a_url(lab: tuple[DHCPLab, DaemonProcess]) -> None:
    options = [(93, b"\x00\x10"), (60, b"HTTPClient:Arch:00016:UNDI:003001")]
    reply = Probe(lab[0]).reply(frame("52:54:00:00:01:03", options=options))
    assert reply[BOOTP].file.rstrip(b"\0") == b"http://10.77.0.1/boot/ipxe.efi"
    assert options_of(reply)["vendor_class_id"] == b"HTTPClient"


@pytest.mark.parametrize("user_class", [b"iPXE", b"\x04iPXE"], ids=["bare", "rfc3004"])
def test_ipxe_gets_its_script_url_and_no_pxedhcp(
    lab: tuple[DHCPLab, DaemonProcess], user_class: bytes
) -> None:
    mac = "52:54:00:00:01:04"
    options = [*pxe(0), (77, user_class), (175, b"\x13\x01\x01")]
    reply = Probe(lab[0]).reply(frame(mac, options=options))
    assert reply[BOOTP].file.rstrip(b"\0") == f"http://10.77.0.1/ipxe/{mac}".encode()
    assert options_of(reply)[175] == b"\xb0\x01\x01"  # sub-option 176 = 1


def test_offer_unicast_to_the_client_mac_unless_broadcast_is_asked(
    lab: tuple[DHCPLab, DaemonProcess],
) -> None:
    probe = Probe(lab[0])
    unicast = probe.reply(frame("52:54:00:00:02:01", broadcast=False))
    assert unicast[Ether].dst == "52:54:00:00:02:01"
    assert unicast[IP].dst == unicast[BOOTP].yiaddr != "0.0.0.0"
    broadcast = probe.reply(frame("52:54:00:00:02:02", broadcast=True))
    assert broadcast[Ether].dst == "ff:ff:ff:ff:ff:ff"
    assert broadcast[IP].dst == "255.255.255.255"


def test_relayed_request_is_answered_to_the_relay(lab: tuple[DHCPLab, DaemonProcess]) -> None:
    dhcp_lab, _daemon = lab
    dhcp_lab.cli.ip("addr", "add", "10.77.0.254/24", "dev", "node0")  # the relay agent
    relay_agent = (82, b"\x01\x05port7\x02\x04sw01")
    reply = Probe(dhcp_lab).reply(
        frame(
            "52:54:00:00:03:01",
            options=[relay_agent],
            broadcast=False,
            giaddr="10.77.0.254",
            src="10.77.0.254",
            dst="10.77.0.1",
            sport=67,
        )
    )
    assert reply[IP].dst == "10.77.0.254"
    assert reply[UDP].dport == 67
    assert reply[BOOTP].giaddr == "10.77.0.254"
    assert options_of(reply)["relay_agent_information"] == b"\x01\x05port7\x02\x04sw01"


def test_malformed_packets_are_dropped_counted_and_service_goes_on(
    lab: tuple[DHCPLab, DaemonProcess],
) -> None:
    need_tools("busybox")
    dhcp_lab, daemon = lab
    good = bytes(Ether(frame("52:54:00:00:04:01"))[BOOTP])
    payloads = [
        b"\x01\x02\x03",  # a few bytes
        good[:-30],  # cut inside the options, no END
        bytes(236) + b"\x00\x00\x00\x00",  # no magic cookie
        good.replace(b"\x35\x01\x01", b"\x35\x01\x63"),  # unknown message type 99
    ]
    garbage = [
        bytes(
            Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
            / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67)
            / Raw(payload)
        )
        for payload in payloads
    ]
    assert Probe(dhcp_lab).exchange(*garbage) == []
    wait_until(
        lambda: daemon.output.count("malformed packet") >= len(garbage), what="malformed logged"
    )
    assert daemon.proc.poll() is None
    script, log = dhcp_lab.script("udhcpc", UDHCPC_SCRIPT)
    result = dhcp_lab.cli.run(
        [
            "busybox",
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-i",
            "node0",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            str(script),
        ],
        timeout=30,
    )
    assert any(e["reason"] == "bound" for e in events(log)), result.stderr


def test_other_interfaces_are_never_answered(
    netlab: NetLab, lab: tuple[DHCPLab, DaemonProcess]
) -> None:
    dhcp_lab, daemon = lab
    side = netlab.namespace("side")
    netlab.veth(dhcp_lab.srv, "bs1", side, "node1", "10.66.0.1/24", None)
    argv = [sys.executable, str(PROBE), "node1", "1.5", frame("52:54:00:00:06:01").hex()]
    result = side.run(argv, timeout=30, check=True)
    assert json.loads(result.stdout) == []
    assert "52:54:00:00:06:01" not in daemon.output
    assert Probe(dhcp_lab).reply(frame("52:54:00:00:06:02"))  # bs0 still answers
