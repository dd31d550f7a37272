"""Which local interface holds which IPv4 address (getifaddrs, through psutil)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

import psutil


@dataclass(frozen=True)
class InterfaceAddress:
    interface: str
    address: IPv4Interface


def ipv4_addresses() -> list[InterfaceAddress]:
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        for addr in addrs:
            if addr.family == socket.AF_INET and addr.netmask:
                out.append(InterfaceAddress(name, IPv4Interface(f"{addr.address}/{addr.netmask}")))
    return out


def interface_exists(name: str) -> bool:
    return name in psutil.net_if_addrs() or name in {n for _, n in socket.if_nameindex()}


def interface_holding(address: IPv4Address) -> str | None:
    for entry in ipv4_addresses():
        if entry.address.ip == address:
            return entry.interface
    return None


def addresses_of(interface: str) -> list[IPv4Interface]:
    return [e.address for e in ipv4_addresses() if e.interface == interface]
