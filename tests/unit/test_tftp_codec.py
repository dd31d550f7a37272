"""TFTP codec: every opcode both ways, client quirks (NUL padding, unpaired options),
truncation at every byte, fuzzing (only ``MalformedPacket`` may escape); option negotiation
tables; netascii conversion across read boundaries."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MalformedPacket
from protocols.tftp import (
    Ack,
    Data,
    Error,
    ErrorCode,
    Negotiated,
    NetasciiReader,
    Opcode,
    OptionAck,
    Packet,
    Request,
    error_packet,
    negotiate,
    netascii_size,
    parse,
    serialize,
)

RRQ, WRQ = Opcode.RRQ, Opcode.WRQ

# (name, wire bytes, packet): parse(wire) == packet and serialize(packet) == wire.
CANONICAL: list[tuple[str, bytes, Packet]] = [
    ("rrq", b"\0\1pxelinux.0\0octet\0", Request(RRQ, "pxelinux.0", "octet", ())),
    ("wrq", b"\0\2upload.bin\0netascii\0", Request(WRQ, "upload.bin", "netascii", ())),
    (
        "rrq with options",
        b"\0\1boot/ipxe.efi\0octet\0tsize\0000\0blksize\0001468\0windowsize\0004\0",
        Request(
            RRQ,
            "boot/ipxe.efi",
            "octet",
            (("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")),
        ),
    ),
    ("rrq utf-8 filename", "\0\1ñ/é\0octet\0".encode(), Request(RRQ, "ñ/é", "octet", ())),
    (
        "rrq raw bytes",
        b"\0\1a\xff\xfeb\0octet\0x\0\xe9\0",
        Request(RRQ, "a\udcff\udcfeb", "octet", (("x", "\udce9"),)),
    ),
    ("data", b"\0\3\0\1hello", Data(1, b"hello")),
    ("data empty", b"\0\3\xff\xff", Data(65535, b"")),
    ("data block 0", b"\0\3\0\0" + bytes(512), Data(0, bytes(512))),
    ("ack", b"\0\4\0\0", Ack(0)),
    ("ack 65535", b"\0\4\xff\xff", Ack(65535)),
    ("error", b"\0\5\0\1file not found\0", Error(ErrorCode.FILE_NOT_FOUND, "file not found")),
    ("error empty", b"\0\5\0\0\0", Error(0, "")),
    ("error utf-8", "\0\5\0\0é\0".encode(), Error(0, "é")),
    (
        "oack",
        b"\0\6blksize\0001468\0tsize\0001024\0",
        OptionAck((("blksize", "1468"), ("tsize", "1024"))),
    ),
    ("oack empty", b"\0\6", OptionAck(())),
]

# (name, wire bytes, packet): tolerated input; parse(wire) == packet.
LENIENT: list[tuple[str, bytes, Packet]] = [
    ("mode upper case", b"\0\1f\0OCTET\0", Request(RRQ, "f", "octet", ())),
    (
        "option name case",
        b"\0\1f\0octet\0BlkSize\x00512\0",
        Request(RRQ, "f", "octet", (("blksize", "512"),)),
    ),
    ("nul padding", b"\0\1f\0octet\0\0\0\0\0", Request(RRQ, "f", "octet", ())),
    (
        "nul padding after options",
        b"\0\1f\0octet\0tsize\0000\0\0\0",
        Request(RRQ, "f", "octet", (("tsize", "0"),)),
    ),
    (
        "unpaired option",
        b"\0\1f\0octet\0tsize\0000\0blksize\0",
        Request(RRQ, "f", "octet", (("tsize", "0"),)),
    ),
    (
        "empty option value",
        b"\0\1f\0octet\0tsize\0\0",
        Request(RRQ, "f", "octet", (("tsize", ""),)),
    ),
    ("unknown mode", b"\0\1f\0mail\0", Request(RRQ, "f", "mail", ())),
    ("empty mode", b"\0\1f\0\0", Request(RRQ, "f", "", ())),
    (
        "repeated option",
        b"\0\1f\0octet\0a\0001\0a\0002\0",
        Request(RRQ, "f", "octet", (("a", "1"), ("a", "2"))),
    ),
    ("ack padded", b"\0\4\0\7\0\0", Ack(7)),
    ("error without nul", b"\0\5\0\2denied", Error(2, "denied")),
    ("error trailing bytes", b"\0\5\0\2denied\0junk", Error(2, "denied")),
    ("error bad utf-8", b"\0\5\0\0\xff\0", Error(0, "\ufffd")),
    ("error no message", b"\0\5\0\3", Error(3, "")),
    ("oack unpaired", b"\0\6blksize\x00512\0tsize\0", OptionAck((("blksize", "512"),))),
]

MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("one byte", b"\0"),
    ("opcode 0", b"\0\0\0\0"),
    ("opcode 7", b"\0\7x\0y\0"),
    ("opcode 0x0101", b"\1\1f\0octet\0"),
    ("rrq no strings", b"\0\1"),
    ("rrq filename unterminated", b"\0\1file"),
    ("rrq no mode", b"\0\1file\0"),
    ("rrq mode unterminated", b"\0\1file\0octet"),
    ("rrq empty filename", b"\0\1\0octet\0"),
    ("rrq option unterminated", b"\0\1f\0octet\0blksize\x00512"),
    ("wrq no mode", b"\0\2file\0"),
    ("data short", b"\0\3\0"),
    ("ack short", b"\0\4\0"),
    ("error short", b"\0\5\0"),
    ("oack unterminated", b"\0\6blksize\x00512"),
]


@pytest.mark.parametrize(("name", "wire", "packet"), CANONICAL, ids=[c[0] for c in CANONICAL])
def test_canonical_both_ways(name: str, wire: bytes, packet: Packet) -> None:
    assert parse(wire) == packet
    assert serialize(packet) == wire
    assert parse(serialize(packet)) == packet


@pytest.mark.parametrize(("name", "wire", "packet"), LENIENT, ids=[c[0] for c in LENIENT])
def test_tolerated_quirks(name: str, wire: bytes, packet: Packet) -> None:
    assert parse(wire) == packet


@pytest.mark.parametrize(("name", "wire"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed(name: str, wire: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse(wire)


def test_parse_types() -> None:
    request = parse(b"\0\1f\0octet\0")
    assert isinstance(request, Request)
    assert request.opcode is Opcode.RRQ
    assert parse(bytearray(b"\0\4\0\1")) == Ack(1)  # type: ignore[arg-type]
    assert parse(memoryview(b"\0\3\0\1x")) == Data(1, b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize("wire", [c[1] for c in CANONICAL + LENIENT])
def test_truncation_at_every_byte(wire: bytes) -> None:
    for n in range(len(wire)):
        with contextlib.suppress(MalformedPacket):
            parse(wire[:n])


@settings(max_examples=2000, deadline=None, database=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        parse(data)


@settings(max_examples=1000, deadline=None, database=None)
@given(
    st.sampled_from([b"\0\1", b"\0\2", b"\0\3", b"\0\4", b"\0\5", b"\0\6"]),
    st.lists(st.sampled_from([b"\0", b"octet", b"blksize", b"512", b"\xff", b"x"]), max_size=12),
)
def test_fuzz_structured(opcode: bytes, pieces: list[bytes]) -> None:
    try:
        packet = parse(opcode + b"".join(pieces))
    except MalformedPacket:
        return
    assert parse(serialize(packet)) == packet


@pytest.mark.parametrize(
    "packet",
    [
        Data(65536, b""),
        Data(-1, b""),
        Ack(70000),
        Error(65536, "x"),
        Error(0, "a\0b"),
        Request(RRQ, "", "octet", ()),
        Request(RRQ, "a\0b", "octet", ()),
        Request(RRQ, "f", "octet", (("bad\0name", "1"),)),
        Request(Opcode.DATA, "f", "octet", ()),
        OptionAck((("blksize", "1\x00"),)),
    ],
)
def test_serialize_rejects(packet: Packet) -> None:
    with pytest.raises(ValueError, match=r"out of range|contains a NUL|a request"):
        serialize(packet)


def test_error_packet() -> None:
    assert error_packet(ErrorCode.UNKNOWN_TID, "unknown transfer ID") == (
        b"\0\5\0\5unknown transfer ID\0"
    )
    # Unencodable text (a lone surrogate from a filename) is replaced, not an exception.
    assert error_packet(1, "no \ud800") == b"\0\5\0\1no ?\0"


# -- negotiation -------------------------------------------------------------------------


def _negotiate(*options: tuple[str, str], file_size: int | None = 1000, **kw: int) -> Negotiated:
    limits: dict[str, int] = {"max_blksize": 65464, "max_window": 64, "max_window_bytes": 1 << 20}
    limits.update(kw)
    return negotiate(options, file_size=file_size, default_timeout=1.0, **limits)


NONE = Negotiated(blksize=512, timeout=1.0, windowsize=1, tsize=None, acknowledged=())


@pytest.mark.parametrize(
    ("options", "kw", "blksize", "acked"),
    [
        ((("blksize", "7"),), {}, 512, ()),
        ((("blksize", "8"),), {}, 8, (("blksize", "8"),)),
        ((("blksize", "1468"),), {}, 1468, (("blksize", "1468"),)),
        ((("blksize", "65464"),), {}, 65464, (("blksize", "65464"),)),
        ((("blksize", "65465"),), {}, 65464, (("blksize", "65464"),)),
        ((("blksize", "9" * 40),), {}, 65464, (("blksize", "65464"),)),
        ((("blksize", "01468"),), {}, 1468, (("blksize", "1468"),)),
        ((("blksize", "65464"),), {"max_blksize": 1468}, 1468, (("blksize", "1468"),)),
        ((("blksize", "abc"),), {}, 512, ()),
        ((("blksize", ""),), {}, 512, ()),
        ((("blksize", "-1"),), {}, 512, ()),
        ((("blksize", " 512"),), {}, 512, ()),
        ((("blksize", "1_000"),), {}, 512, ()),
        ((("blksize", "١٢٣"),), {}, 512, ()),  # non-ASCII digits
        ((("BLKSIZE", "1024"),), {}, 1024, (("blksize", "1024"),)),
    ],
)
def test_blksize(
    options: tuple[tuple[str, str], ...], kw: dict[str, int], blksize: int, acked: object
) -> None:
    result = _negotiate(*options, **kw)
    assert (result.blksize, result.acknowledged) == (blksize, acked)


@pytest.mark.parametrize(
    ("value", "timeout", "acked"),
    [
        ("0", 1.0, ()),
        ("1", 1.0, (("timeout", "1"),)),
        ("5", 5.0, (("timeout", "5"),)),
        ("005", 5.0, (("timeout", "5"),)),
        ("255", 255.0, (("timeout", "255"),)),
        ("256", 1.0, ()),
        ("1.5", 1.0, ()),
    ],
)
def test_timeout(value: str, timeout: float, acked: object) -> None:
    result = _negotiate(("timeout", value))
    assert (result.timeout, result.acknowledged) == (timeout, acked)


@pytest.mark.parametrize(
    ("value", "file_size", "tsize", "acked"),
    [
        ("0", 1000, 1000, (("tsize", "1000"),)),
        ("0", 0, 0, (("tsize", "0"),)),
        ("123", 1000, 1000, (("tsize", "1000"),)),
        ("0", None, None, ()),
        ("x", 1000, None, ()),
    ],
)
def test_tsize(value: str, file_size: int | None, tsize: int | None, acked: object) -> None:
    result = _negotiate(("tsize", value), file_size=file_size)
    assert (result.tsize, result.acknowledged) == (tsize, acked)


@pytest.mark.parametrize(
    ("options", "kw", "windowsize"),
    [
        ((("windowsize", "0"),), {}, 1),
        ((("windowsize", "1"),), {}, 1),
        ((("windowsize", "16"),), {}, 16),
        ((("windowsize", "65535"),), {}, 64),
        ((("windowsize", "65536"),), {}, 1),
        ((("windowsize", "65535"),), {"max_window": 65535, "max_window_bytes": 1 << 40}, 65535),
        ((("windowsize", "16"),), {"max_window_bytes": 4096}, 8),  # 512-byte blocks
        ((("windowsize", "16"),), {"max_window_bytes": 100}, 1),  # never below one block
        # blksize after windowsize still limits the window
        ((("windowsize", "16"), ("blksize", "1024")), {"max_window_bytes": 4096}, 4),
        ((("blksize", "1024"), ("windowsize", "16")), {"max_window_bytes": 4096}, 4),
    ],
)
def test_windowsize(
    options: tuple[tuple[str, str], ...], kw: dict[str, int], windowsize: int
) -> None:
    result = _negotiate(*options, **kw)
    assert result.windowsize == windowsize
    acked = dict(result.acknowledged)
    if "windowsize" in acked:
        assert acked["windowsize"] == str(windowsize)


def test_no_options() -> None:
    assert _negotiate(file_size=None) == NONE
    assert _negotiate(("foo", "1"), ("multicast", ""), file_size=None) == NONE


def test_order_duplicates_and_unknowns() -> None:
    result = _negotiate(
        ("windowsize", "8"),
        ("foo", "bar"),
        ("TSIZE", "0"),
        ("blksize", "1024"),
        ("blksize", "2048"),
        ("Timeout", "3"),
        ("tsize", "5"),
        max_window_bytes=4096,
    )
    assert result == Negotiated(
        blksize=1024,
        timeout=3.0,
        windowsize=4,
        tsize=1000,
        acknowledged=(
            ("windowsize", "4"),
            ("tsize", "1000"),
            ("blksize", "1024"),
            ("timeout", "3"),
        ),
    )


def test_first_occurrence_decides_even_when_bad() -> None:
    result = _negotiate(("blksize", "abc"), ("blksize", "1024"))
    assert result.blksize == 512
    assert result.acknowledged == ()


# -- netascii ----------------------------------------------------------------------------


class Trickle:
    """An in-memory source recording the sizes asked for."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.asked: list[int] = []

    def read(self, size: int) -> bytes:
        self.asked.append(size)
        return self._data.read(size)


@pytest.mark.parametrize(
    ("raw", "wire"),
    [
        (b"", b""),
        (b"abc", b"abc"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb", b"a\r\0b"),
        (b"\r\n", b"\r\0\r\n"),
        (b"\n\n\r\r", b"\r\n\r\n\r\0\r\0"),
        (b"x" * 511 + b"\r" + b"y", b"x" * 511 + b"\r\0y"),
    ],
)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 512])
def test_netascii_reader(raw: bytes, wire: bytes, size: int) -> None:
    reader = NetasciiReader(Trickle(raw))
    chunks = []
    while True:
        chunk = reader.read(size)
        chunks.append(chunk)
        if len(chunk) < size:
            break
        assert len(chunk) == size
    assert b"".join(chunks) == wire
    assert netascii_size([raw]) == len(wire)


def test_netascii_cr_at_end_of_read() -> None:
    source = Trickle(b"ab\rcd\n")
    reader = NetasciiReader(source)
    assert reader.read(3) == b"ab\r"
    assert reader.read(3) == b"\0cd"
    assert reader.read(3) == b"\r\n"
    assert reader.read(3) == b""
    assert sum(source.asked) <= 3 + 3 + 3 + 3  # never reads far ahead


def test_netascii_size_over_chunks() -> None:
    # a CR LF split across chunks: "a\r\0\r\nb\r\n"
    assert netascii_size([b"a\r", b"\nb", b"", b"\n"]) == len(b"a\r\0\r\nb\r\n")
    assert netascii_size([]) == 0
