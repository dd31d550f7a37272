"""DHCP codec: client captures decoded and re-encoded, truncation at every byte, malformed
options, long options, overload, and fuzzing (only ``MalformedPacket`` may escape)."""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    FLAG_BROADCAST,
    INFINITE,
    MessageType,
    Opt,
    Packet,
    decode_suboptions,
    encode_ip,
    encode_ips,
    encode_str,
    encode_suboptions,
    encode_u8,
    encode_u16,
    encode_u32,
    parse,
    serialize,
)
from protocols.errors import MalformedPacket

ZERO = IPv4Address(0)
COOKIE = "63 82 53 63"
NO_SNAME = " 00" * 64
NO_FILE = " 00" * 128


def _hex(*parts: str) -> bytes:
    return bytes.fromhex(" ".join(parts))


@dataclass(frozen=True)
class Capture:
    """A client message as seen on the wire: header, cookie and options up to END
    (``wire``), then zero padding up to ``padded_to`` bytes, and what it decodes to."""

    name: str
    wire: bytes
    expect: dict[str, object]
    padded_to: int = 300
    canonical: bool = True
    """``serialize(parse(data)) == data`` byte for byte."""

    @property
    def data(self) -> bytes:
        return self.wire + bytes(max(0, self.padded_to - len(self.wire)))


ABSENT: dict[str, object] = {
    "htype": 1,
    "hops": 0,
    "secs": 0,
    "flags": 0,
    "ciaddr": ZERO,
    "yiaddr": ZERO,
    "siaddr": ZERO,
    "giaddr": ZERO,
    "sname": b"",
    "file": b"",
    "message_type": None,
    "requested_ip": None,
    "server_id": None,
    "client_id": None,
    "parameter_requests": (),
    "max_message_size": None,
    "hostname": None,
    "vendor_class": None,
    "user_classes": (),
    "client_arch": (),
    "client_ndi": None,
    "client_uuid": None,
    "relay_agent": None,
    "vendor_specific": None,
    "ipxe": None,
    "lease_time": None,
}

ACCESSORS = tuple(name for name, attr in vars(Packet).items() if isinstance(attr, property))

PXE_GUID = bytes.fromhex("44 45 4c 4c 4b 00 10 35 80 4c c4 c0 4f 42 4e 32")

DHCLIENT_DISCOVER = Capture(
    name="isc-dhclient",
    wire=_hex(
        "01 01 06 00",  # op BOOTREQUEST, htype Ethernet, hlen 6, hops 0
        "3c 9d 1f 7a",  # xid
        "00 03 00 00",  # secs 3, flags 0
        "00 00 00 00" * 4,  # ciaddr, yiaddr, siaddr, giaddr
        "52 54 00 12 34 56" + " 00" * 10,  # chaddr
        NO_SNAME,
        NO_FILE,
        COOKIE,
        "35 01 01",  # 53 DISCOVER
        "32 04 0a 00 02 0f",  # 50 requested 10.0.2.15
        "0c 06 6e 6f 64 65 2d 31",  # 12 hostname "node-1"
        "37 0d 01 1c 02 03 0f 06 77 0c 2c 2f 1a 79 2a",  # 55 parameter request list
        "ff",
    ),
    expect={
        "op": BOOTREQUEST,
        "xid": 0x3C9D1F7A,
        "secs": 3,
        "mac": "52:54:00:12:34:56",
        "codes": (53, 50, 12, 55),
        "message_type": MessageType.DISCOVER,
        "requested_ip": IPv4Address("10.0.2.15"),
        "hostname": "node-1",
        "parameter_requests": (1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42),
    },
)

UDHCPC_DISCOVER = Capture(
    name="busybox-udhcpc",
    wire=_hex(
        "01 01 06 00",  # op, htype, hlen, hops
        "5a 1b 2c 3d",  # xid
        "00 00 00 00",  # secs, flags
        "00 00 00 00" * 4,  # ciaddr, yiaddr, siaddr, giaddr
        "02 42 ac 11 00 02" + " 00" * 10,  # chaddr
        NO_SNAME,
        NO_FILE,
        COOKIE,
        "35 01 01",  # 53 DISCOVER
        "3d 07 01 02 42 ac 11 00 02",  # 61 client id: type 1 (Ethernet) + MAC
        "39 02 02 40",  # 57 max message size 576
        "37 07 01 03 06 0c 0f 1c 2a",  # 55 parameter request list
        "3c 0c 75 64 68 63 70 20 31 2e 33 36 2e 31",  # 60 "udhcp 1.36.1"
        "ff",
    ),
    expect={
        "op": BOOTREQUEST,
        "xid": 0x5A1B2C3D,
        "mac": "02:42:ac:11:00:02",
        "codes": (53, 61, 57, 55, 60),
        "message_type": MessageType.DISCOVER,
        "client_id": bytes.fromhex("010242ac110002"),
        "max_message_size": 576,
        "parameter_requests": (1, 3, 6, 12, 15, 28, 42),
        "vendor_class": b"udhcp 1.36.1",
    },
)

PXE_BIOS_DISCOVER = Capture(
    name="pxe-rom-bios",
    wire=_hex(
        "01 01 06 00",  # op, htype, hlen, hops
        "7c 5a 3e 21",  # xid
        "00 04 80 00",  # secs 4, flags BROADCAST
        "00 00 00 00" * 4,  # ciaddr, yiaddr, siaddr, giaddr
        "00 25 90 c0 f7 80" + " 00" * 10,  # chaddr
        NO_SNAME,
        NO_FILE,
        COOKIE,
        "35 01 01",  # 53 DISCOVER
        "39 02 04 ec",  # 57 max message size 1260
        "5d 02 00 00",  # 93 client arch 0 (x86 BIOS)
        "5e 03 01 02 01",  # 94 client NDI: UNDI 2.1
        "61 11 00 44 45 4c 4c 4b 00 10 35 80 4c c4 c0 4f 42 4e 32",  # 97 type 0 + GUID
        "37 18 01 02 03 05 06 0b 0c 0d 0f 10 11 12 2b 36 3c 43"  # 55 parameter requests
        " 80 81 82 83 84 85 86 87",
        "3c 20 50 58 45 43 6c 69 65 6e 74 3a 41 72 63 68 3a 30 30 30 30 30 3a 55 4e 44 49"
        " 3a 30 30 32 30 30 31",  # 60 "PXEClient:Arch:00000:UNDI:002001"
        "ff",
    ),
    padded_to=548,
    canonical=False,
    expect={
        "op": BOOTREQUEST,
        "xid": 0x7C5A3E21,
        "secs": 4,
        "flags": FLAG_BROADCAST,
        "mac": "00:25:90:c0:f7:80",
        "codes": (53, 57, 93, 94, 97, 55, 60),
        "message_type": MessageType.DISCOVER,
        "max_message_size": 1260,
        "client_arch": (0,),
        "client_ndi": b"\x01\x02\x01",
        "client_uuid": b"\x00" + PXE_GUID,
        "parameter_requests": (
            *(1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 67),
            *range(128, 136),
        ),
        "vendor_class": b"PXEClient:Arch:00000:UNDI:002001",
    },
)

UEFI_X64_DISCOVER = Capture(
    name="uefi-x64",
    wire=_hex(
        "01 01 06 00",  # op, htype, hlen, hops
        "0b 7e 44 19",  # xid
        "00 00 00 00",  # secs, flags
        "00 00 00 00" * 4,  # ciaddr, yiaddr, siaddr, giaddr
        "52 54 00 ab cd ef" + " 00" * 10,  # chaddr
        NO_SNAME,
        NO_FILE,
        COOKIE,
        "35 01 01",  # 53 DISCOVER
        "39 02 05 c0",  # 57 max message size 1472
        "37 23 01 02 03 04 05 06 0c 0d 0f 11 12 16 17 1c 28 29 2a 2b 32 33 36 3a 3b 3c"
        " 42 43 61 80 81 82 83 84 85 86 87",  # 55 parameter requests (35)
        "61 11 00 8e 3c 56 4d 1b 21 4c 9a 99 d8 c6 2b 5a 1e 60 74",  # 97 type 0 + GUID
        "5e 03 01 03 00",  # 94 UNDI 3.0
        "5d 02 00 07",  # 93 EFI x64
        "3c 20 50 58 45 43 6c 69 65 6e 74 3a 41 72 63 68 3a 30 30 30 30 37 3a 55 4e 44 49"
        " 3a 30 30 33 30 30 30",  # 60 "PXEClient:Arch:00007:UNDI:003000"
        "ff",
    ),
    expect={
        "op": BOOTREQUEST,
        "xid": 0x0B7E4419,
        "mac": "52:54:00:ab:cd:ef",
        "codes": (53, 57, 55, 97, 94, 93, 60),
        "message_type": MessageType.DISCOVER,
        "max_message_size": 1472,
        "parameter_requests": (
            *(1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42),
            *(43, 50, 51, 54, 58, 59, 60, 66, 67, 97),
            *range(128, 136),
        ),
        "client_uuid": bytes.fromhex("008e3c564d1b214c9a99d8c62b5a1e6074"),
        "client_ndi": b"\x01\x03\x00",
        "client_arch": (7,),
        "vendor_class": b"PXEClient:Arch:00007:UNDI:003000",
    },
)

IPXE_DISCOVER = Capture(
    name="ipxe-undionly",
    wire=_hex(
        "01 01 06 00",  # op, htype, hlen, hops
        "a3 51 0e 9f",  # xid
        "00 00 00 00",  # secs, flags
        "00 00 00 00" * 4,  # ciaddr, yiaddr, siaddr, giaddr
        "00 25 90 c0 f7 80" + " 00" * 10,  # chaddr
        NO_SNAME,
        NO_FILE,
        COOKIE,
        "35 01 01",  # 53 DISCOVER
        "39 02 05 c0",  # 57 max message size 1472
        "5d 02 00 00",  # 93 x86 BIOS
        "5e 03 01 02 01",  # 94 UNDI 2.1
        "3c 20 50 58 45 43 6c 69 65 6e 74 3a 41 72 63 68 3a 30 30 30 30 30 3a 55 4e 44 49"
        " 3a 30 30 32 30 30 31",  # 60 "PXEClient:Arch:00000:UNDI:002001"
        "4d 04 69 50 58 45",  # 77 user class, bare "iPXE"
        "37 17 01 03 06 07 0c 0f 11 1a 2b 3c 42 43 77 80 81 82 83 84 85 86 87 af cb",  # 55
        "af 21",  # 175 iPXE encapsulated options, 33 bytes:
        " b1 05 01 80 86 10 0e",  # 177 bus id: PCI 8086:100e
        " eb 03 01 00 00",  # 235 version 1.0.0
        " 10 01 02 13 01 01 15 01 01 17 01 01",  # features PXE_EXT=2, HTTP, TFTP, DNS
        " 18 01 01 21 01 01 22 01 01",  # features bzImage, PXE, ELF
        "3d 07 01 00 25 90 c0 f7 80",  # 61 client id
        "61 11 00 44 45 4c 4c 4b 00 10 35 80 4c c4 c0 4f 42 4e 32",  # 97 type 0 + GUID
        "ff",
    ),
    expect={
        "op": BOOTREQUEST,
        "xid": 0xA3510E9F,
        "mac": "00:25:90:c0:f7:80",
        "codes": (53, 57, 93, 94, 60, 77, 55, 175, 61, 97),
        "message_type": MessageType.DISCOVER,
        "max_message_size": 1472,
        "client_arch": (0,),
        "client_ndi": b"\x01\x02\x01",
        "vendor_class": b"PXEClient:Arch:00000:UNDI:002001",
        "user_classes": (b"iPXE",),
        "parameter_requests": (
            *(1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119),
            *range(128, 136),
            *(175, 203),
        ),
        "ipxe": {
            177: bytes.fromhex("018086100e"),
            235: b"\x01\x00\x00",
            16: b"\x02",
            19: b"\x01",
            21: b"\x01",
            23: b"\x01",
            24: b"\x01",
            33: b"\x01",
            34: b"\x01",
        },
        "client_id": bytes.fromhex("01002590c0f780"),
        "client_uuid": b"\x00" + PXE_GUID,
    },
)

DHCPCD_DISCOVER = Capture(
    name="dhcpcd-rfc3004-user-class",
    wire=_hex(
        "01 01 06 00",  # op, htype, hlen, hops
        "e1 0c 77 02",  # xid
        "00 00 00 00",  # secs, flags
        "00 00 00 00" * 4,  # ciaddr, yiaddr, siaddr, giaddr
        "3c ec ef 1a 2b 3c" + " 00" * 10,  # chaddr
        NO_SNAME,
        NO_FILE,
        COOKIE,
        "35 01 01",  # 53 DISCOVER
        "3d 07 01 3c ec ef 1a 2b 3c",  # 61 client id
        "39 02 05 dc",  # 57 max message size 1500
        "3c 0c 64 68 63 70 63 64 2d 39 2e 34 2e 31",  # 60 "dhcpcd-9.4.1"
        "0c 08 77 6f 72 6b 65 72 2d 33",  # 12 "worker-3"
        "4d 0e 05 72 61 63 6b 31 07 63 6f 6d 70 75 74 65",  # 77 RFC 3004: "rack1", "compute"
        "37 0e 01 79 21 03 06 0c 0f 1a 1c 33 36 3a 3b 77",  # 55
        "ff",
    ),
    expect={
        "op": BOOTREQUEST,
        "xid": 0xE10C7702,
        "mac": "3c:ec:ef:1a:2b:3c",
        "codes": (53, 61, 57, 60, 12, 77, 55),
        "message_type": MessageType.DISCOVER,
        "client_id": bytes.fromhex("013cecef1a2b3c"),
        "max_message_size": 1500,
        "vendor_class": b"dhcpcd-9.4.1",
        "hostname": "worker-3",
        "user_classes": (b"rack1", b"compute"),
        "parameter_requests": (1, 121, 33, 3, 6, 12, 15, 26, 28, 51, 54, 58, 59, 119),
    },
)

RELAYED_DISCOVER = Capture(
    name="relayed-option-82",
    wire=_hex(
        "01 01 06 01",  # op, htype, hlen, hops 1
        "19 44 c2 7d",  # xid
        "00 08 80 00",  # secs 8, flags BROADCAST
        "00 00 00 00",  # ciaddr
        "00 00 00 00",  # yiaddr
        "00 00 00 00",  # siaddr
        "0a 01 02 01",  # giaddr 10.1.2.1
        "00 25 90 c0 f7 82" + " 00" * 10,  # chaddr
        NO_SNAME,
        NO_FILE,
        COOKIE,
        "35 01 01",  # 53 DISCOVER
        "39 02 04 ec",  # 57 max message size 1260
        "5d 02 00 00",  # 93 x86 BIOS
        "5e 03 01 02 01",  # 94 UNDI 2.1
        "3c 20 50 58 45 43 6c 69 65 6e 74 3a 41 72 63 68 3a 30 30 30 30 30 3a 55 4e 44 49"
        " 3a 30 30 32 30 30 31",  # 60 "PXEClient:Arch:00000:UNDI:002001"
        "37 08 01 03 06 0c 0f 2b 3c 43",  # 55
        "52 12",  # 82 relay agent information, 18 bytes:
        " 01 06 00 04 00 0a 01 03",  # circuit-id: VLAN 10, module 1, port 3
        " 02 08 00 06 00 1b 21 aa bb cc",  # remote-id: the relay's MAC
        "ff",
    ),
    expect={
        "op": BOOTREQUEST,
        "xid": 0x1944C27D,
        "hops": 1,
        "secs": 8,
        "flags": FLAG_BROADCAST,
        "giaddr": IPv4Address("10.1.2.1"),
        "mac": "00:25:90:c0:f7:82",
        "codes": (53, 57, 93, 94, 60, 55, 82),
        "message_type": MessageType.DISCOVER,
        "max_message_size": 1260,
        "client_arch": (0,),
        "client_ndi": b"\x01\x02\x01",
        "vendor_class": b"PXEClient:Arch:00000:UNDI:002001",
        "parameter_requests": (1, 3, 6, 12, 15, 43, 60, 67),
        "relay_agent": {1: bytes.fromhex("0004000a0103"), 2: bytes.fromhex("0006001b21aabbcc")},
    },
)

OVERLOADED_ACK = Capture(
    name="overloaded-ack",
    wire=_hex(
        "02 01 06 00",  # op BOOTREPLY, htype, hlen, hops
        "2b 7e 91 04",  # xid
        "00 00 00 00",  # secs, flags
        "00 00 00 00",  # ciaddr
        "0a 01 02 32",  # yiaddr 10.1.2.50
        "0a 01 02 0a",  # siaddr 10.1.2.10
        "0a 01 02 01",  # giaddr 10.1.2.1
        "00 25 90 c0 f7 81" + " 00" * 10,  # chaddr
        "2a 04 0a 01 02 0a ff" + " 00" * 57,  # sname carries 42 NTP 10.1.2.10, END
        "0f 0f 63 6c 75 73 74 65 72 2e 65 78 61 6d 70 6c 65",  # file: 15 "cluster.example"
        "06 08 0a 01 02 0a 0a 01 02 0b",  # 6 DNS 10.1.2.10, 10.1.2.11
        "0c 02 30 37 ff" + " 00" * 96,  # 12 "07" (continues "node-"), END
        COOKIE,
        "35 01 05",  # 53 ACK
        "36 04 0a 01 02 0a",  # 54 server id 10.1.2.10
        "34 01 03",  # 52 overload: file and sname
        "33 04 00 00 0e 10",  # 51 lease 3600
        "01 04 ff ff ff 00",  # 1 subnet mask
        "03 04 0a 01 02 01",  # 3 router
        "0c 05 6e 6f 64 65 2d",  # 12 "node-" (RFC 3396: joined with the part in file)
        "ff",
    ),
    canonical=False,
    expect={
        "op": BOOTREPLY,
        "xid": 0x2B7E9104,
        "yiaddr": IPv4Address("10.1.2.50"),
        "siaddr": IPv4Address("10.1.2.10"),
        "giaddr": IPv4Address("10.1.2.1"),
        "mac": "00:25:90:c0:f7:81",
        "codes": (53, 54, 51, 1, 3, 12, 15, 6, 42),
        "message_type": MessageType.ACK,
        "server_id": IPv4Address("10.1.2.10"),
        "lease_time": 3600,
        "hostname": "node-07",
    },
)

CAPTURES = [
    DHCLIENT_DISCOVER,
    UDHCPC_DISCOVER,
    PXE_BIOS_DISCOVER,
    UEFI_X64_DISCOVER,
    IPXE_DISCOVER,
    DHCPCD_DISCOVER,
    RELAYED_DISCOVER,
    OVERLOADED_ACK,
]
by_name = pytest.mark.parametrize("capture", CAPTURES, ids=[c.name for c in CAPTURES])


def _observe(packet: Packet, names: object) -> dict[str, object]:
    assert isinstance(names, dict)
    seen = {name: getattr(packet, name) for name in names if name != "codes"}
    seen["codes"] = tuple(packet.options)
    return seen


def _touch_accessors(packet: Packet) -> None:
    """Read every accessor; only ``MalformedPacket`` may come out."""
    for name in ACCESSORS:
        with contextlib.suppress(MalformedPacket):
            getattr(packet, name)


def test_table_checks_every_accessor() -> None:
    header = {"htype", "hops", "secs", "flags", "ciaddr", "yiaddr", "siaddr", "giaddr"}
    assert set(ACCESSORS) | header | {"sname", "file"} == set(ABSENT) | {"mac"}


@by_name
def test_capture_parses(capture: Capture) -> None:
    expected = {**ABSENT, **capture.expect}
    assert _observe(parse(capture.data), expected) == expected


@by_name
def test_capture_round_trips(capture: Capture) -> None:
    packet = parse(capture.data)
    again = serialize(packet)
    assert parse(again) == packet
    assert parse(serialize(packet, max_size=1500)) == packet
    if capture.canonical:
        assert again == capture.data


@by_name
def test_capture_truncated_at_every_byte(capture: Capture) -> None:
    for cut in range(len(capture.wire)):
        with pytest.raises(MalformedPacket):
            parse(capture.data[:cut])


@by_name
def test_bytes_after_end_are_ignored(capture: Capture) -> None:
    assert parse(capture.data + b"\x35\x01\x02junk") == parse(capture.data)


def _raw(
    options: bytes,
    *,
    hlen: int = 6,
    sname: bytes = b"",
    file: bytes = b"",
    cookie: bytes = bytes.fromhex(COOKIE),
) -> bytes:
    header = struct.pack(
        "!BBBBIHH16s16s64s128s", 1, 1, hlen, 0, 7, 0, 0, b"", b"\x02" * 6, sname, file
    )
    return header + cookie + options


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(_raw(b"\xff")[:239], id="239-bytes"),
        pytest.param(_raw(b"\xff", cookie=b"\x63\x82\x53\x64"), id="bad-cookie"),
        pytest.param(_raw(b"\xff", hlen=17), id="hlen-17"),
        pytest.param(_raw(b""), id="no-options-no-end"),
        pytest.param(_raw(b"\x35\x01\x01"), id="no-end"),
        pytest.param(_raw(b"\x35\x01\x01\x00\x00"), id="pad-but-no-end"),
        pytest.param(_raw(b"\x35\x05\x01\xff"), id="option-overruns"),
        pytest.param(_raw(b"\x35"), id="code-without-length"),
        pytest.param(_raw(b"\x34\x01\x00\xff"), id="overload-0"),
        pytest.param(_raw(b"\x34\x01\x04\xff"), id="overload-4"),
        pytest.param(_raw(b"\x34\x00\xff"), id="overload-empty"),
        pytest.param(_raw(b"\x34\x02\x01\x01\xff"), id="overload-2-bytes"),
        pytest.param(_raw(b"\x34\x01\x01\x34\x01\x01\xff"), id="overload-repeated"),
        pytest.param(_raw(b"\x34\x01\x01\xff"), id="overloaded-file-without-end"),
        pytest.param(_raw(b"\x34\x01\x02\xff"), id="overloaded-sname-without-end"),
        pytest.param(_raw(b"\x34\x01\x03\xff", file=b"\xff"), id="overload-3-sname-no-end"),
        pytest.param(_raw(b"\x34\x01\x01\xff", file=b"\x0c\x7f"), id="file-option-overruns"),
    ],
)
def test_malformed_packets(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse(data)


def test_hlen_16_and_zero() -> None:
    assert parse(_raw(b"\xff", hlen=16)).chaddr == b"\x02" * 6 + bytes(10)
    empty = parse(_raw(b"\xff", hlen=0))
    assert (empty.chaddr, empty.mac) == (b"", "")


def test_pad_is_skipped_and_repeats_are_joined() -> None:
    packet = parse(_raw(b"\x00\x00\x0c\x02no\x00\x0c\x03de1\x35\x01\x03\x00\xff\x0c\x01X"))
    assert packet.options == {12: b"node1", 53: b"\x03"}
    assert packet.hostname == "node1"


def test_overload_order_is_options_then_file_then_sname() -> None:
    data = _raw(
        b"\x34\x01\x03\x43\x01a\xff",
        file=b"\x43\x01b\x34\x01\x02\xff",
        sname=b"\x43\x01c\xff",
    )
    packet = parse(data)
    assert packet.options == {67: b"abc"}
    assert (packet.file, packet.sname) == (b"", b"")


def test_sname_and_file_are_c_strings_when_not_overloaded() -> None:
    packet = parse(_raw(b"\xff", sname=b"bootstrapper\x00junk", file=b"undionly.kpxe"))
    assert (packet.sname, packet.file) == (b"bootstrapper", b"undionly.kpxe")


def test_overload_1_keeps_sname() -> None:
    packet = parse(_raw(b"\x34\x01\x01\xff", sname=b"host", file=b"\x42\x02ab\xff"))
    assert (packet.sname, packet.file, packet.options) == (b"host", b"", {66: b"ab"})


def _with(code: int, payload: bytes) -> Packet:
    return Packet(op=BOOTREQUEST, xid=1, chaddr=b"\x02" * 6, options={code: payload})


@pytest.mark.parametrize(
    ("accessor", "code", "payload"),
    [
        ("message_type", 53, b""),
        ("message_type", 53, b"\x01\x01"),
        ("message_type", 53, b"\x00"),
        ("message_type", 53, b"\x09"),
        ("requested_ip", 50, b"\x0a\x00\x00"),
        ("requested_ip", 50, b"\x0a\x00\x00\x01\x00"),
        ("server_id", 54, b""),
        ("client_id", 61, b""),
        ("client_id", 61, b"\x01"),
        ("parameter_requests", 55, b""),
        ("max_message_size", 57, b"\x02\x3f"),
        ("max_message_size", 57, b"\x00\x00"),
        ("max_message_size", 57, b"\x05"),
        ("max_message_size", 57, b"\x00\x05\xc0"),
        ("hostname", 12, b""),
        ("vendor_class", 60, b""),
        ("user_classes", 77, b""),
        ("client_arch", 93, b""),
        ("client_arch", 93, b"\x00"),
        ("client_arch", 93, b"\x00\x07\x00"),
        ("client_ndi", 94, b"\x01\x02"),
        ("client_ndi", 94, b"\x01\x02\x01\x00"),
        ("client_uuid", 97, b"\x00" * 16),
        ("client_uuid", 97, b"\x00" * 18),
        ("client_uuid", 97, b"\x01" + b"\x00" * 16),
        ("relay_agent", 82, b""),
        ("relay_agent", 82, b"\x01\x06\x00\x04"),
        ("relay_agent", 82, b"\x01"),
        ("vendor_specific", 43, b""),
        ("ipxe", 175, b"\x13\x02\x01"),
        ("ipxe", 175, b"\x13"),
        ("lease_time", 51, b"\x00\x00\x0e"),
        ("lease_time", 51, b"\x00\x00\x0e\x10\x00"),
    ],
)
def test_malformed_accessor(accessor: str, code: int, payload: bytes) -> None:
    with pytest.raises(MalformedPacket):
        getattr(_with(code, payload), accessor)


@pytest.mark.parametrize(
    ("accessor", "code", "payload", "value"),
    [
        ("message_type", 53, b"\x08", MessageType.INFORM),
        ("max_message_size", 57, b"\x02\x40", 576),
        ("lease_time", 51, b"\xff\xff\xff\xff", INFINITE),
        ("client_arch", 93, b"\x00\x07\x00\x09", (7, 9)),
        ("user_classes", 77, b"iPXE", (b"iPXE",)),
        ("user_classes", 77, b"\x04iPXE", (b"iPXE",)),
        ("user_classes", 77, b"\x04iPXE\x00", (b"\x04iPXE\x00",)),
        ("user_classes", 77, b"\x04iPX", (b"\x04iPX",)),
        ("user_classes", 77, b"\x01a\x02bc", (b"a", b"bc")),
        ("hostname", 12, b"node-1\x00\x00", "node-1"),
        ("hostname", 12, b"n\xffde", "n\ufffdde"),
        ("vendor_specific", 43, b"\x06\x01\x08\xff", b"\x06\x01\x08\xff"),
        ("relay_agent", 82, b"\x01\x01a\x00\x02\x01b\xff\x03", {1: b"a", 2: b"b"}),
        ("ipxe", 175, b"\x01\x01\x80\x01\x01\x01", {1: b"\x80\x01"}),
    ],
)
def test_accessor_values(accessor: str, code: int, payload: bytes, value: object) -> None:
    assert getattr(_with(code, payload), accessor) == value


def test_suboption_codec() -> None:
    subs = {1: b"eth0/3", 2: b"", 177: b"\x01\x80\x86\x10\x0e"}
    encoded = encode_suboptions(subs)
    assert encoded == b"\x01\x06eth0/3\x02\x00\xb1\x05\x01\x80\x86\x10\x0e"
    assert decode_suboptions(encoded) == subs
    assert decode_suboptions(b"") == {}
    with pytest.raises(ValueError, match="255"):
        encode_suboptions({1: bytes(256)})
    for bad in (0, 255):
        with pytest.raises(ValueError, match=r"is not in 1\.\.254"):
            encode_suboptions({bad: b"x"})


def test_encoders() -> None:
    assert encode_ip(IPv4Address("10.1.2.3")) == b"\x0a\x01\x02\x03"
    assert encode_ips([IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")]) == bytes.fromhex(
        "0a0000010a000002"
    )
    assert encode_ips([]) == b""
    assert (encode_u8(255), encode_u16(1472), encode_u32(INFINITE)) == (
        b"\xff",
        b"\x05\xc0",
        b"\xff\xff\xff\xff",
    )
    assert encode_str("undionly.kpxe") == b"undionly.kpxe"
    for encoder, bad in ((encode_u8, 256), (encode_u16, 1 << 16), (encode_u32, -1)):
        with pytest.raises(ValueError, match="does not fit in"):
            encoder(bad)
    assert (Opt.IPXE, Opt.RELAY_AGENT, MessageType.NAK) == (175, 82, 6)


def _reply(options: dict[int, bytes], /, **fields: object) -> Packet:
    packet = Packet(op=BOOTREPLY, xid=0x1234, chaddr=bytes.fromhex("002590c0f780"))
    packet.options = options
    for name, value in fields.items():
        setattr(packet, name, value)
    return packet


def test_serialize_layout_and_padding() -> None:
    packet = _reply(
        {1: encode_ip(IPv4Address("255.255.255.0")), 53: b"\x02", 60: b""},
        yiaddr=IPv4Address("10.1.2.50"),
        sname=b"bootstrapper",
        file=b"undionly.kpxe",
    )
    data = serialize(packet)
    assert len(data) == 300
    assert data[:4] == b"\x02\x01\x06\x00"
    assert data[16:20] == b"\x0a\x01\x02\x32"
    assert data[28:44] == bytes.fromhex("002590c0f780") + bytes(10)
    assert data[44:108] == b"bootstrapper".ljust(64, b"\x00")
    assert data[108:236] == b"undionly.kpxe".ljust(128, b"\x00")
    assert data[236:] == bytes.fromhex("63825363 350102 0104ffffff00 3c00 ff") + bytes(48)
    assert parse(data) == packet


def test_long_message_type_is_written_once() -> None:
    packet = _reply({1: b"\xff" * 4, 53: bytes(300)})
    data = serialize(packet, max_size=1500)
    assert data[240:243] == b"\x35\xff\x00"
    assert parse(data) == packet


def test_serialize_does_not_pad_beyond_end_when_long() -> None:
    data = serialize(_reply({53: b"\x02", 43: bytes(100)}))
    assert len(data) == 240 + 3 + 102 + 1
    assert data[-1] == 255


def test_long_option_split_and_joined() -> None:
    payload = bytes(range(256)) * 2 + b"tail"
    packet = _reply({53: b"\x05", 43: payload})
    data = serialize(packet, max_size=1500)
    assert data[240:] == (
        b"\x35\x01\x05"
        + (b"\x2b\xff" + payload[:255])
        + (b"\x2b\xff" + payload[255:510])
        + (b"\x2b\x06" + payload[510:])
        + b"\xff"
    )
    assert parse(data) == packet
    assert parse(data).vendor_specific == payload


def test_serialize_overloads_file_and_sname_when_small() -> None:
    packet = _reply({53: b"\x02", 43: bytes(250), 60: b"v" * 40, 66: b"t" * 100, 67: b"b" * 50})
    data = serialize(packet, max_size=0)
    assert len(data) <= 576 - 28
    assert data[240:246] == b"\x35\x01\x02\x34\x01\x03"
    assert data[108] == 66
    assert data[44] == 67
    assert parse(data) == packet


def test_serialize_overloads_only_the_empty_field() -> None:
    packet = _reply({53: b"\x02", 43: bytes(250), 60: b"v" * 40, 66: b"t" * 60}, sname=b"srv")
    data = serialize(packet)
    assert data[240:246] == b"\x35\x01\x02\x34\x01\x01"
    assert data[44:48] == b"srv\x00"
    assert parse(data) == packet


def test_serialize_splits_an_option_across_regions() -> None:
    packet = _reply({53: b"\x02", 43: bytes(300), 60: b"v" * 150})
    data = serialize(packet)
    assert len(data) <= 548
    assert parse(data) == packet


def test_serialize_too_large() -> None:
    with pytest.raises(ValueError, match="too large"):
        serialize(_reply({53: b"\x02", 43: bytes(600)}))
    with pytest.raises(ValueError, match="too large"):
        serialize(_reply({43: bytes(290), 60: bytes(100)}, sname=b"s", file=b"f"))
    assert parse(serialize(_reply({43: bytes(600)}), max_size=1500)).vendor_specific == bytes(600)


@pytest.mark.parametrize(
    "fields",
    [
        {"options": {0: b""}},
        {"options": {255: b""}},
        {"options": {52: b"\x01"}},
        {"sname": b"s" * 65},
        {"file": b"f" * 129},
        {"chaddr": bytes(17)},
        {"xid": 1 << 32},
        {"secs": -1},
    ],
)
def test_serialize_rejects_unencodable(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"cannot be serialized|longer than|out of range"):
        serialize(_reply({}, **fields))


u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
ips = st.integers(0, 0xFFFFFFFF).map(IPv4Address)
codes = st.integers(1, 254).filter(lambda c: c != 52)


def _cstring(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=size).map(lambda b: b.replace(b"\x00", b"x"))


def _packets(
    payloads: st.SearchStrategy[bytes], count: int, *, at_least: int = 0, often_empty: bool = False
) -> st.SearchStrategy[Packet]:
    """Packets with any header and ``at_least`` to ``count`` options; ``often_empty`` favours
    empty sname/file so that serialize has room to overload them."""
    sname, file = _cstring(64), _cstring(128)
    if often_empty:
        sname, file = st.just(b"") | sname, st.just(b"") | file
    return st.builds(
        Packet,
        op=u8,
        xid=st.integers(0, 0xFFFFFFFF),
        chaddr=st.binary(max_size=16),
        htype=u8,
        hops=u8,
        secs=u16,
        flags=u16,
        ciaddr=ips,
        yiaddr=ips,
        siaddr=ips,
        giaddr=ips,
        sname=sname,
        file=file,
        options=st.dictionaries(codes, payloads, min_size=at_least, max_size=count),
    )


@settings(database=None, max_examples=300)
@given(_packets(st.binary(max_size=600), count=12))
def test_round_trip(packet: Packet) -> None:
    data = serialize(packet, max_size=65535)
    assert len(data) >= 300
    assert parse(data) == packet


@settings(database=None, max_examples=300)
@given(
    _packets(st.binary(min_size=40, max_size=300), count=8, at_least=2, often_empty=True),
    st.integers(576, 900),
)
def test_round_trip_within_max_size(packet: Packet, max_size: int) -> None:
    try:
        data = serialize(packet, max_size=max_size)
    except ValueError as e:
        error: str | None = str(e)
    else:
        error = None
    if error is not None:
        assert "too large" in error
        return
    assert 300 <= len(data) <= max_size - 28
    assert parse(data) == packet


def _parse_or_malformed(data: bytes) -> None:
    try:
        packet = parse(data)
    except MalformedPacket:
        return
    _touch_accessors(packet)


@settings(database=None, max_examples=500)
@given(st.binary(max_size=700))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _parse_or_malformed(data)


@settings(database=None, max_examples=500)
@given(
    st.sampled_from(CAPTURES),
    st.lists(st.tuples(st.integers(0, 1000), u8), min_size=1, max_size=8),
    st.integers(0, 1000),
)
def test_fuzz_mutated_captures(capture: Capture, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(capture.data)
    for at, value in edits:
        data[at % len(data)] = value
    _parse_or_malformed(bytes(data))
    _parse_or_malformed(bytes(data[:cut]))
    _parse_or_malformed(capture.data[:cut])


interesting_codes = st.sampled_from([0, 12, 43, 50, 51, 52, 53, 54, 55, 57, 60, 61, 77, 82, 93])
soup_codes = st.one_of(interesting_codes, st.sampled_from([94, 97, 175, 255]), u8)
soup = st.lists(st.tuples(soup_codes, st.binary(max_size=24)), max_size=12).map(
    lambda items: b"".join(bytes((code, len(data))) + data for code, data in items)
)


@settings(database=None, max_examples=500)
@given(soup, st.booleans(), soup, soup, st.binary(max_size=4))
def test_fuzz_option_soup(
    options: bytes, end: bool, in_file: bytes, in_sname: bytes, tail: bytes
) -> None:
    data = _raw(
        options + (b"\xff" if end else b"") + tail,
        file=(in_file + b"\xff")[:128],
        sname=(in_sname + b"\xff")[:64],
    )
    _parse_or_malformed(data)
    _parse_or_malformed(_raw(b"\x34\x01\x03" + options + b"\xff", file=in_file[:128]))
