"""TFTP: the sans-IO codec (``parse``/``serialize``), option negotiation, netascii and the
read-session state machine."""

from .netascii import NetasciiReader, Source, netascii_size
from .options import DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE, Negotiated, negotiate
from .packet import (
    Ack,
    Data,
    Error,
    ErrorCode,
    Opcode,
    OptionAck,
    Packet,
    Request,
    error_packet,
    parse,
    serialize,
)
from .session import Address, Outcome, ReadSession, Send

__all__ = [
    "DEFAULT_BLKSIZE",
    "MAX_BLKSIZE",
    "MIN_BLKSIZE",
    "Ack",
    "Address",
    "Data",
    "Error",
    "ErrorCode",
    "Negotiated",
    "NetasciiReader",
    "Opcode",
    "OptionAck",
    "Outcome",
    "Packet",
    "ReadSession",
    "Request",
    "Send",
    "Source",
    "error_packet",
    "negotiate",
    "netascii_size",
    "parse",
    "serialize",
]
