"""IPv6 Router Advertisements: the RA and RS codec byte for byte (both directions, truncation
at every byte), malformed RSs, ``dhcp.router_advertisement`` in the model and the schema, and
the advertiser's policy with a fake socket (unicast answers at once, multicast rate-limited,
reloads, no IPv6)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from bootstrapperd.model import ConfigError, load_cluster_text
from bootstrapperd.model.holder import ModelHolder
from bootstrapperd.model.types import RouterAdvertisement
from bootstrapperd.ra.service import Link, RAUnavailable, RouterAdvertiser
from protocols.errors import MalformedPacket
from protocols.ndp import (
    ALL_NODES,
    Advertisement,
    MalformedSolicitation,
    Solicitation,
    parse_advertisement,
    parse_solicitation,
    serialize_advertisement,
    serialize_solicitation,
)

ROOT = Path(__file__).resolve().parents[2]
MAC = bytes.fromhex("525400770001")
LINK_LOCAL = IPv6Address("fe80::5054:ff:fe77:1")
CLIENT = IPv6Address("fe80::5054:ff:fe77:10")
UNSPECIFIED = IPv6Address("::")

# ---- the RA, byte for byte --------------------------------------------------------------------

RA_HEADER = (
    "86 00 0000"  # type 134, code 0, checksum (the kernel's)
    " 40 00 0000"  # cur hop limit 64, M=0 O=0, router lifetime 0
    " 00000000 00000000"  # reachable time, retrans timer: unspecified
)
SLLA = " 01 01 525400770001"  # Source Link-Layer Address, 8 bytes
PIO = (
    " 03 04 40 c0"  # Prefix Information, 32 bytes, /64, L=1 A=1
    " 00015180 00003840 00000000"  # valid 86400 s, preferred 14400 s, reserved
    " fd770000000000000000000000000000"
)
RA_CASES = [
    pytest.param(Advertisement(MAC, None), RA_HEADER + SLLA, id="no-prefix"),
    pytest.param(Advertisement(MAC, IPv6Network("fd77::/64")), RA_HEADER + SLLA + PIO, id="prefix"),
    pytest.param(Advertisement(None, None), RA_HEADER, id="no-mac"),
]


@pytest.mark.parametrize(("ad", "wire"), RA_CASES)
def test_ra_encoding(ad: Advertisement, wire: str) -> None:
    assert serialize_advertisement(ad).hex() == wire.replace(" ", "")
    assert parse_advertisement(bytes.fromhex(wire)) == ad


def test_ra_defaults_are_a_non_router_without_dhcpv6() -> None:
    ad = Advertisement(MAC, IPv6Network("2001:db8:1:2::/64"))
    wire = serialize_advertisement(ad)
    assert wire[4] == 64
    assert wire[5] == 0
    assert wire[6:8] == b"\0\0"
    assert wire[-16:] == IPv6Address("2001:db8:1:2::").packed


FULL_RA = bytes.fromhex((RA_HEADER + SLLA + PIO).replace(" ", ""))


@pytest.mark.parametrize("cut", range(len(FULL_RA)))
def test_ra_truncated_at_every_byte(cut: int) -> None:
    wire = FULL_RA[:cut]
    if cut in (16, 24):  # whole options only: a shorter RA, still valid
        assert parse_advertisement(wire).prefix is None
    else:
        with pytest.raises(MalformedPacket):
            parse_advertisement(wire)


# ---- the RS ------------------------------------------------------------------------------------

RS = "85 00 0000 00000000"
RS_CASES = [
    pytest.param(RS, CLIENT, Solicitation(CLIENT, None), id="bare"),
    pytest.param(RS + SLLA, CLIENT, Solicitation(CLIENT, MAC), id="with-lladdr"),
    pytest.param(RS, UNSPECIFIED, Solicitation(UNSPECIFIED, None), id="from-unspecified"),
    pytest.param(  # an option it does not know (a nonce) is skipped
        RS + " 0e 01 010203040506" + SLLA, CLIENT, Solicitation(CLIENT, MAC), id="unknown-option"
    ),
]


@pytest.mark.parametrize(("wire", "source", "rs"), RS_CASES)
def test_rs_parsing(wire: str, source: IPv6Address, rs: Solicitation) -> None:
    assert parse_solicitation(bytes.fromhex(wire), source, 255) == rs
    assert parse_solicitation(bytes.fromhex(wire), source, None) == rs  # no hop limit known


def test_rs_serialize_both_directions() -> None:
    assert serialize_solicitation(MAC).hex() == (RS + SLLA).replace(" ", "")
    assert serialize_solicitation(None).hex() == RS.replace(" ", "")
    assert parse_solicitation(serialize_solicitation(MAC), CLIENT, 255).source_lladdr == MAC


MALFORMED = [
    pytest.param("", CLIENT, 255, "short", id="empty"),
    pytest.param("85000000", CLIENT, 255, "short", id="4-bytes"),
    pytest.param("86 00 0000 00000000", CLIENT, 255, "type", id="an-ra"),
    pytest.param(RS, CLIENT, 64, "hop_limit", id="hop-limit-64"),
    pytest.param(RS, CLIENT, 254, "hop_limit", id="hop-limit-254"),
    pytest.param("85 01 0000 00000000", CLIENT, 255, "code", id="code-1"),
    pytest.param(RS + " 01 00 000000000000", CLIENT, 255, "options", id="option-length-0"),
    pytest.param(RS + " 01 02 525400770001", CLIENT, 255, "options", id="option-overlong"),
    pytest.param(RS + " 01", CLIENT, 255, "options", id="option-header-cut"),
    pytest.param(RS + SLLA, UNSPECIFIED, 255, "lladdr", id="lladdr-from-unspecified"),
]


@pytest.mark.parametrize(("wire", "source", "hops", "reason"), MALFORMED)
def test_malformed_rs_is_rejected(wire: str, source: IPv6Address, hops: int, reason: str) -> None:
    with pytest.raises(MalformedSolicitation) as info:
        parse_solicitation(bytes.fromhex(wire), source, hops)
    assert info.value.reason == reason
    assert isinstance(info.value, MalformedPacket)  # what endpoints catch


@pytest.mark.parametrize("cut", range(16))
def test_rs_truncated_at_every_byte(cut: int) -> None:
    wire = bytes.fromhex((RS + SLLA).replace(" ", ""))[:cut]
    if cut < 8:
        with pytest.raises(MalformedSolicitation, match="bytes, an RS"):
            parse_solicitation(wire, CLIENT, 255)
    elif cut == 8:
        assert parse_solicitation(wire, CLIENT, 255) == Solicitation(CLIENT, None)
    else:
        with pytest.raises(MalformedSolicitation) as info:
            parse_solicitation(wire, CLIENT, 255)
        assert info.value.reason == "options"


# ---- the model ---------------------------------------------------------------------------------

BASE = """\
bootstrapper: 10.0.0.2
subnet: 10.0.0.0
netmask: 255.255.255.0
iplow: 10.0.0.100
iphigh: 10.0.0.200
routers: [10.0.0.1]
nodes:
  - mac: "00:25:90:c0:f7:80"
    kube_master: y
    etcd_member: y
"""  # 10 lines: a dhcp block appended starts on line 11


def ra_of(extra: str) -> RouterAdvertisement:
    return load_cluster_text(BASE + extra).dhcp.router_advertisement


def errors_of(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_cluster_text(BASE + extra)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", RouterAdvertisement(True, None, 600)),
        ("dhcp: {mode: full}", RouterAdvertisement(True, None, 600)),
        ("dhcp: {mode: proxy}", RouterAdvertisement(False, None, 600)),
        ("dhcp: {mode: 'off'}", RouterAdvertisement(False, None, 600)),
        ("start_pxe: n", RouterAdvertisement(False, None, 600)),
        ("dhcp: {router_advertisement: false}", RouterAdvertisement(False, None, 600)),
        ("dhcp: {router_advertisement: n}", RouterAdvertisement(False, None, 600)),
        ("dhcp: {router_advertisement: 'off'}", RouterAdvertisement(False, None, 600)),
        ("dhcp: {mode: proxy, router_advertisement: y}", RouterAdvertisement(True, None, 600)),
        ("dhcp: {router_advertisement: }", RouterAdvertisement(True, None, 600)),
        ("dhcp: {router_advertisement: {}}", RouterAdvertisement(True, None, 600)),
        (
            "dhcp:\n  router_advertisement:\n    prefix: fd77::/64\n    interval: 30",
            RouterAdvertisement(True, IPv6Network("fd77::/64"), 30),
        ),
        (
            "dhcp: {mode: proxy, router_advertisement: "
            "{enabled: yes, prefix: '2001:DB8:0:1::/64'}}",
            RouterAdvertisement(True, IPv6Network("2001:db8:0:1::/64"), 600),
        ),
        (
            "dhcp: {router_advertisement: {enabled: false, prefix: 'fd77::/64', interval: '1800'}}",
            RouterAdvertisement(False, IPv6Network("fd77::/64"), 1800),
        ),
        ("dhcp: {router_advertisement: {interval: 10}}", RouterAdvertisement(True, None, 10)),
    ],
)
def test_model_defaults_and_forms(extra: str, expected: RouterAdvertisement) -> None:
    assert ra_of(extra) == expected


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (
            "dhcp:\n  router_advertisement:\n    prefix: 'fd77::/48'",
            "dhcp.router_advertisement.prefix: 'fd77::/48' is not a /64: SLAAC makes addresses "
            "only in /64 prefixes (write it like fd77::/64) (line 13)",
        ),
        (
            "dhcp:\n  router_advertisement:\n    prefix: 'fd77::'",
            "dhcp.router_advertisement.prefix: 'fd77::' is not a /64: SLAAC makes addresses "
            "only in /64 prefixes (write it like fd77::/64) (line 13)",
        ),
        (
            "dhcp:\n  router_advertisement:\n    prefix: 10.0.0.0/24",
            "dhcp.router_advertisement.prefix: '10.0.0.0/24' is not an IPv6 prefix "
            "(like fd77::/64) (line 13)",
        ),
        (
            "dhcp:\n  router_advertisement:\n    prefix: fe80::/64",
            "dhcp.router_advertisement.prefix: 'fe80::/64' is a link-local prefix; "
            "advertise a global or ULA /64 (line 13)",
        ),
        (
            "dhcp:\n  router_advertisement:\n    prefix: [fd77::/64]",
            "dhcp.router_advertisement.prefix: expected a string, got a list (line 13)",
        ),
        (
            "dhcp:\n  router_advertisement:\n    interval: 5",
            "dhcp.router_advertisement.interval: 5 is not a whole number from 10 to 1800 (line 13)",
        ),
        (
            "dhcp:\n  router_advertisement:\n    interval: 1801",
            "dhcp.router_advertisement.interval: 1801 is not a whole number from 10 to 1800 "
            "(line 13)",
        ),
        (
            "dhcp:\n  router_advertisement:\n    interval: 1m",
            "dhcp.router_advertisement.interval: '1m' is not a whole number from 10 to 1800 "
            "(line 13)",
        ),
        (
            "dhcp:\n  router_advertisement:\n    enabled: sometimes",
            "dhcp.router_advertisement.enabled: 'sometimes' is not a boolean "
            "(use y/n, yes/no, true/false) (line 13)",
        ),
        (
            "dhcp:\n  router_advertisement: fd77::/64",
            "dhcp.router_advertisement: 'fd77::/64' is not a boolean or a mapping "
            "(with enabled, prefix, interval) (line 12)",
        ),
        (
            "dhcp:\n  router_advertisement: [true]",
            "dhcp.router_advertisement: [True] is not a boolean or a mapping "
            "(with enabled, prefix, interval) (line 12)",
        ),
    ],
)
def test_model_errors_name_the_key_and_line(extra: str, error: str) -> None:
    assert errors_of(extra) == [error]


def test_model_every_error_at_once() -> None:
    extra = "dhcp:\n  router_advertisement: {prefix: 'fd77::/32', interval: 0, enabled: 2}"
    assert [e.split(":")[0] for e in errors_of(extra)] == [
        "dhcp.router_advertisement.enabled",
        "dhcp.router_advertisement.interval",
        "dhcp.router_advertisement.prefix",
    ]


def test_model_warnings_unknown_key_and_host_bits() -> None:
    model = load_cluster_text(
        BASE + "dhcp:\n  router_advertisement:\n    prefix: 'fd77::1/64'\n    intreval: 30"
    )
    assert model.dhcp.router_advertisement == RouterAdvertisement(
        True, IPv6Network("fd77::/64"), 600
    )
    warnings = [str(w) for w in model.warnings if w.path.startswith("dhcp.router_advertisement")]
    assert warnings == [
        "dhcp.router_advertisement.intreval: unknown key, ignored (line 14)",
        "dhcp.router_advertisement.prefix: 'fd77::1/64' has host bits set; using fd77::/64 "
        "(line 13)",
    ]


def _descriptions() -> list[Path]:
    files = [p for p in sorted((ROOT / "tests" / "fixtures" / "sextant").iterdir()) if p.is_file()]
    return files + sorted((ROOT / "config" / "examples").glob("*.yml"))


@pytest.mark.parametrize("path", _descriptions(), ids=lambda p: p.name)
def test_sextant_and_examples_load_with_the_mode_default(path: Path) -> None:
    model = load_cluster_text(path.read_text(), source=str(path))  # every one of them loads
    ra = model.dhcp.router_advertisement
    assert ra.enabled is (model.dhcp.mode.value == "full")
    assert (ra.prefix, ra.interval) == (None, 600)
    assert not [w for w in model.warnings if "router_advertisement" in w.path]


# ---- the schema: in step with the loader -------------------------------------------------------

SCHEMA = json.loads((ROOT / "config" / "cluster-desc.schema.json").read_text())
SCHEMA_ACCEPTS = [
    "dhcp: {router_advertisement: false}",
    "dhcp: {router_advertisement: n}",
    "dhcp: {router_advertisement: }",
    "dhcp: {router_advertisement: {enabled: y, prefix: 'fd77::/64', interval: 600}}",
    "dhcp: {router_advertisement: {prefix: ' 2001:db8:0:1::/64 ', interval: '30'}}",
    "dhcp: {router_advertisement: {prefix: fd77::1/64}}",
    "dhcp: {router_advertisement: {enabled: , prefix: , interval: }}",
]
SCHEMA_REJECTS = [
    "dhcp: {router_advertisement: {prefix: 'fd77::/48'}}",
    "dhcp: {router_advertisement: {prefix: 10.0.0.0/24}}",
    "dhcp: {router_advertisement: {interval: 5}}",
    "dhcp: {router_advertisement: {interval: 3600}}",
    "dhcp: {router_advertisement: {enabled: maybe}}",
    "dhcp: {router_advertisement: 'fd77::/64'}",
]


def _schema_errors(text: str) -> list[str]:
    validator = Draft202012Validator(SCHEMA)
    return [e.message for e in validator.iter_errors(yaml.safe_load(text))]


def test_schema_knows_the_keys() -> None:
    block = SCHEMA["properties"]["dhcp"]["properties"]["router_advertisement"]
    mapping = next(s for s in block["anyOf"] if s.get("type") == "object")
    assert set(mapping["properties"]) == {"enabled", "prefix", "interval"}


@pytest.mark.parametrize("extra", SCHEMA_ACCEPTS)
def test_schema_accepts_what_the_loader_accepts(extra: str) -> None:
    load_cluster_text(BASE + extra)
    assert _schema_errors(BASE + extra) == []


@pytest.mark.parametrize("extra", SCHEMA_REJECTS)
def test_schema_rejects_what_the_loader_rejects(extra: str) -> None:
    with pytest.raises(ConfigError):
        load_cluster_text(BASE + extra)
    assert _schema_errors(BASE + extra) != []


# ---- the advertiser's policy, with a fake socket -------------------------------------------------


class FakeSocket:
    """Records what is sent; its descriptor is a pipe nobody writes to (the loop reads it)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.sent: list[tuple[bytes, tuple[Any, ...], list[tuple[int, int, bytes]]]] = []
        self.closed = False

    def fileno(self) -> int:
        return self.read_fd

    def sendmsg(
        self, buffers: list[bytes], ancdata: list[tuple[int, int, bytes]], flags: int, to: Any
    ) -> int:
        self.sent.append((b"".join(buffers), tuple(to), ancdata))
        return sum(map(len, buffers))

    def close(self) -> None:
        if not self.closed:
            os.close(self.read_fd)
            os.close(self.write_fd)
        self.closed = True


class Rig:
    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        self.path = tmp_path / "cluster-desc.yml"
        self.path.write_text(BASE + extra)
        self.holder = ModelHolder.load(self.path)
        self.sockets: list[FakeSocket] = []
        self.source: IPv6Address | None = LINK_LOCAL
        self.now = 1000.0
        self.unavailable: str | None = None
        self.ra = RouterAdvertiser(
            self.holder,
            "bs0",
            opener=self.open,
            source_of=lambda interface: self.source,
            clock=lambda: self.now,
        )

    def open(self, interface: str) -> Link:
        if self.unavailable is not None:
            raise RAUnavailable(self.unavailable)
        sock = FakeSocket()
        self.sockets.append(sock)
        return Link(sock, 7, MAC, True)  # type: ignore[arg-type]

    @property
    def sent(self) -> list[tuple[bytes, tuple[Any, ...], list[tuple[int, int, bytes]]]]:
        return [s for sock in self.sockets for s in sock.sent]

    def destinations(self) -> list[str]:
        return [to[0] for _, to, _ in self.sent]

    def reload(self, extra: str) -> None:
        self.path.write_text(BASE + extra)
        assert self.holder.reload()


def running(rig: Rig) -> bool:
    """Read afresh each time (an assert on the attribute would narrow it for the type checker,
    which cannot see that a reload changes it)."""
    return rig.ra.running


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_first_unsolicited_ra_goes_out_at_start(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "dhcp: {router_advertisement: {prefix: 'fd77::/64'}}")
    rig.ra.start()
    await settle()
    assert running(rig)
    [(payload, to, ancdata)] = rig.sent
    assert to == (str(ALL_NODES), 0, 0, 7)
    assert payload == serialize_advertisement(Advertisement(MAC, IPv6Network("fd77::/64")))
    [(_, _, info)] = ancdata  # IPV6_PKTINFO: from the link-local address, on the interface
    assert info == LINK_LOCAL.packed + struct.pack("@I", 7)
    assert rig.ra.counters["sent_unsolicited"] == 1
    await rig.ra.stop()
    assert rig.sockets[0].closed


async def test_unicast_answers_at_once_multicast_is_rate_limited(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ra.start()
    await settle()
    assert rig.destinations() == ["ff02::1"]  # the first unsolicited RA, at clock 1000
    rs = serialize_solicitation(MAC)
    rig.now += 1
    rig.ra.solicited(rs, CLIENT, 255)  # unicast: never delayed
    assert rig.destinations() == ["ff02::1", str(CLIENT)]
    bare = serialize_solicitation(None)
    rig.ra.solicited(bare, UNSPECIFIED, 255)  # multicast within 3 s of the last: waits
    rig.ra.solicited(bare, UNSPECIFIED, 255)  # ... and the waiting RA answers this one too
    assert rig.destinations() == ["ff02::1", str(CLIENT)]
    assert rig.ra.counters["solicitations_coalesced"] == 1
    rig.ra.solicited(rs, CLIENT, 255)
    assert rig.destinations() == ["ff02::1", str(CLIENT), str(CLIENT)]
    rig.now += 3
    rig.ra.solicited(bare, UNSPECIFIED, 255)  # 4 s after the last multicast: at once
    assert rig.destinations() == ["ff02::1", str(CLIENT), str(CLIENT), "ff02::1"]
    assert rig.ra.counters["solicitations"] == 5
    assert rig.ra.counters["sent_solicited"] == 3
    await rig.ra.stop()


async def test_malformed_rs_is_counted_and_not_answered(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ra.start()
    await settle()
    before = len(rig.sent)
    rig.ra.solicited(bytes.fromhex("8501000000000000"), CLIENT, 255)
    rig.ra.solicited(serialize_solicitation(MAC), CLIENT, 64)
    rig.ra.solicited(b"\x85", CLIENT, 255)
    assert len(rig.sent) == before
    assert rig.ra.counters["dropped_code"] == 1
    assert rig.ra.counters["dropped_hop_limit"] == 1
    assert rig.ra.counters["dropped_short"] == 1
    assert rig.ra.counters["solicitations"] == 0
    rig.ra.solicited(serialize_solicitation(MAC), CLIENT, 255)  # and it keeps answering
    assert len(rig.sent) == before + 1
    await rig.ra.stop()


async def test_no_link_local_yet_sends_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.source = None  # tentative: duplicate address detection still running
    rig.ra.start()
    await settle()
    rig.ra.solicited(serialize_solicitation(MAC), CLIENT, 255)
    assert rig.sent == []
    assert running(rig)
    assert rig.ra.counters["sent_unsolicited"] == 0
    await rig.ra.stop()


async def test_disabled_opens_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "dhcp: {mode: proxy}")
    rig.ra.start()
    await settle()
    assert not running(rig)
    assert rig.sockets == []
    await rig.ra.stop()


async def test_reload_turns_off_on_and_changes_the_prefix(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ra.start()
    await settle()
    rig.reload("dhcp: {router_advertisement: false}")
    await settle()
    assert not running(rig)
    assert rig.sockets[0].closed
    rig.reload("dhcp: {router_advertisement: {prefix: 'fd78::/64', interval: 60}}")
    await settle()
    assert running(rig)
    assert len(rig.sockets) == 2
    payload = rig.sockets[1].sent[0][0]
    assert parse_advertisement(payload).prefix == IPv6Network("fd78::/64")
    assert rig.ra.settings.interval == 60
    rig.reload("dhcp: {router_advertisement: {prefix: 'fd78::/64', interval: 60}}\n# same")
    await settle()
    assert len(rig.sockets) == 2  # nothing changed: the same socket, no new initial RAs
    await rig.ra.stop()
    assert all(s.closed for s in rig.sockets)


async def test_no_ipv6_warns_once_and_stays_idle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    rig.unavailable = "IPv6 is disabled on bs0 (net.ipv6.conf.bs0.disable_ipv6=1)"
    with caplog.at_level(logging.INFO, logger="bootstrapperd.ra"):
        rig.ra.start()
        await settle()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "no router advertisements: IPv6 is disabled on bs0 (net.ipv6.conf.bs0.disable_ipv6=1)"
    ]
    assert not running(rig)
    rig.unavailable = None
    rig.reload("# unchanged settings, but a reload tries again\n")
    await settle()
    assert running(rig)
    await rig.ra.stop()
