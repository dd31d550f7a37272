"""DHCP codec: the message dataclass, ``parse``/``serialize`` and the option vocabulary."""

from .options import (
    BOOTREPLY,
    BOOTREQUEST,
    FLAG_BROADCAST,
    INFINITE,
    MessageType,
    Opt,
    decode_suboptions,
    encode_ip,
    encode_ips,
    encode_str,
    encode_suboptions,
    encode_u8,
    encode_u16,
    encode_u32,
)
from .packet import Packet, parse, serialize

__all__ = [
    "BOOTREPLY",
    "BOOTREQUEST",
    "FLAG_BROADCAST",
    "INFINITE",
    "MessageType",
    "Opt",
    "Packet",
    "decode_suboptions",
    "encode_ip",
    "encode_ips",
    "encode_str",
    "encode_suboptions",
    "encode_u8",
    "encode_u16",
    "encode_u32",
    "parse",
    "serialize",
]
