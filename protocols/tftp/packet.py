"""TFTP packets: one frozen dataclass per opcode, ``parse`` and ``serialize`` (RFC 1350,
option extension RFC 2347). Strings on the wire are NUL-terminated bytes; filenames decode as
UTF-8 and mode, option names and values as ASCII, all with ``surrogateescape`` so any bytes
survive a round trip; error messages decode as UTF-8 with bad bytes replaced."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ..errors import MalformedPacket


class Opcode(IntEnum):
    """The first two bytes of every TFTP packet."""

    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    """The error codes of RFC 1350 and RFC 2347 (8: the client refuses our options)."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


@dataclass(frozen=True, slots=True)
class Request:
    """A read (RRQ) or write (WRQ) request. ``mode`` is lower-cased but not checked;
    ``options`` are (lower-cased name, value as sent) pairs in request order, repeats kept."""

    opcode: Opcode
    filename: str
    mode: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Data:
    """One block of file data; ``block`` is the 16-bit number on the wire."""

    block: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """The acknowledgement of a DATA block (or, block 0, of an OACK)."""

    block: int


@dataclass(frozen=True, slots=True)
class Error:
    """An error that ends the transfer; ``code`` is usually an ``ErrorCode``."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class OptionAck:
    """The server's acknowledgement of the options it accepts (RFC 2347)."""

    options: tuple[tuple[str, str], ...]


Packet = Request | Data | Ack | Error | OptionAck

_HEADER = struct.Struct("!HH")
_OPCODE = struct.Struct("!H")
_NUL = b"\0"


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "surrogateescape")


def _options(parts: list[bytes], start: int) -> tuple[tuple[str, str], ...]:
    """(name, value) pairs from ``parts[start:]``; an empty name is NUL padding and ends the
    list, an unpaired trailing name is dropped."""
    pairs: list[tuple[str, str]] = []
    end = len(parts) - 1
    i = start
    while i < end:
        name = parts[i]
        if not name:
            break
        pairs.append((_text(name).lower(), _text(parts[i + 1])))
        i += 2
    return tuple(pairs)


def _strings(body: bytes, what: str) -> list[bytes]:
    """``body`` split at NULs; the last string must be terminated."""
    parts = body.split(_NUL)
    if parts.pop():
        raise MalformedPacket(f"{what}: last string is not NUL-terminated")
    return parts


def parse(data: bytes) -> Packet:
    """Decode one TFTP packet. Raises ``MalformedPacket`` (and nothing else) for bad input:
    too short, unknown opcode, a missing NUL terminator or an empty filename. Tolerated:
    NUL padding after a request's last string, an unpaired trailing option name, bytes
    after an ACK's block number, an ERROR message without its NUL."""
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < 2:
        raise MalformedPacket(f"{n} bytes is shorter than a TFTP opcode")
    opcode = (data[0] << 8) | data[1]
    if opcode == Opcode.ACK or opcode == Opcode.DATA or opcode == Opcode.ERROR:
        if n < 4:
            raise MalformedPacket(f"{Opcode(opcode).name} of {n} bytes is shorter than 4")
        block = (data[2] << 8) | data[3]
        if opcode == Opcode.ACK:
            return Ack(block)
        if opcode == Opcode.DATA:
            return Data(block, data[4:])
        nul = data.find(0, 4)
        message = data[4:] if nul < 0 else data[4:nul]
        return Error(block, message.decode("utf-8", "replace"))
    if opcode == Opcode.RRQ or opcode == Opcode.WRQ:
        parts = _strings(data[2:], "request")
        if len(parts) < 2:
            raise MalformedPacket("request without a NUL-terminated filename and mode")
        if not parts[0]:
            raise MalformedPacket("request with an empty filename")
        return Request(
            Opcode(opcode),
            parts[0].decode("utf-8", "surrogateescape"),
            _text(parts[1]).lower(),
            _options(parts, 2),
        )
    if opcode == Opcode.OACK:
        return OptionAck(_options(_strings(data[2:], "OACK"), 0))
    raise MalformedPacket(f"unknown TFTP opcode {opcode}")


def _cstring(text: str, encoding: str, errors: str) -> bytes:
    raw = text.encode(encoding, errors)
    if _NUL in raw:
        raise ValueError(f"{text!r} contains a NUL")
    return raw + _NUL


def _pairs(options: tuple[tuple[str, str], ...]) -> bytes:
    return b"".join(
        _cstring(name, "utf-8", "surrogateescape") + _cstring(value, "utf-8", "surrogateescape")
        for name, value in options
    )


def serialize(packet: Packet) -> bytes:
    """Encode ``packet``. Raises ``ValueError`` for a block or code outside 0..65535, a
    string containing NUL, an empty filename or a request whose opcode is not RRQ/WRQ."""
    try:
        if isinstance(packet, Data):
            return _HEADER.pack(Opcode.DATA, packet.block) + packet.payload
        if isinstance(packet, Ack):
            return _HEADER.pack(Opcode.ACK, packet.block)
        if isinstance(packet, Error):
            message = _cstring(packet.message, "utf-8", "replace")
            return _HEADER.pack(Opcode.ERROR, packet.code) + message
    except struct.error as e:
        raise ValueError(f"block or code out of range: {e}") from None
    if isinstance(packet, OptionAck):
        return _OPCODE.pack(Opcode.OACK) + _pairs(packet.options)
    if packet.opcode not in (Opcode.RRQ, Opcode.WRQ):
        raise ValueError(f"a request cannot have opcode {packet.opcode}")
    if not packet.filename:
        raise ValueError("a request needs a filename")
    return (
        _OPCODE.pack(packet.opcode)
        + _cstring(packet.filename, "utf-8", "surrogateescape")
        + _cstring(packet.mode, "utf-8", "surrogateescape")
        + _pairs(packet.options)
    )


def error_packet(code: int, message: str) -> bytes:
    """An ERROR packet, ready to send."""
    return serialize(Error(code, message))
