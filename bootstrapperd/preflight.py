"""``bootstrapperd preflight``: can bootstrapperd serve this bsroot on this machine, now?

The site's install script (``bsroot/install-bootstrapper.sh``) runs it before it starts the
daemon, so that a machine lacking something is refused with the reason instead of a unit that
fails in a restart loop. It checks what ``serve`` needs, in the order ``serve`` needs it: a
bsroot with a cluster description that loads, the bootstrapper address on an interface (or the
``--interface``/``--address`` given), and every port free: DHCP 67 (and 4011 in proxy mode) on
the interface, TFTP 69, DNS 53 (UDP and TCP) and the HTTP port on the address — and the files
every machine boots from (the iPXE binaries, the OS kernel and initrd), which ``serve`` also
refuses to start without. Each port is tried with the very socket the service opens, then
closed; nothing is served.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from protocols.dhcp.endpoint import open_socket as open_dhcp
from protocols.dhcp.server import PXE_PORT
from protocols.dhcp.server import SERVER_PORT as DHCP_PORT
from protocols.dns.endpoint import open_udp as open_dns
from protocols.tftp.endpoint import SERVER_PORT as TFTP_PORT
from protocols.tftp.endpoint import open_socket as open_tftp

from .bsroot.layout import Bsroot, Refused, open_inside
from .bsroot.mirror import Mirror
from .daemon import Listen, StartupError, resolve_listen
from .dns.service import PORT as DNS_PORT
from .machines.boot import default_spec
from .model import ClusterModel, ConfigError, DHCPMode, load_cluster_file
from .pack.binaries import IPXE_FILES
from .routes import base_url

__all__ = ["Report", "missing_boot_files", "preflight"]

# Who usually holds each service's port on a machine that was not a bootstrapper before.
_USUAL = {
    "dhcp": "another DHCP server (dnsmasq, isc-dhcp-server, kea, Sextant's dnsmasq container)",
    "tftp": "another TFTP server (dnsmasq, tftpd-hpa, atftpd)",
    "dns": "another DNS server (dnsmasq, bind9, unbound)",
    "http": "another web server (nginx, apache2, Sextant's cloud-config-server)",
}


@dataclass
class Report:
    """What preflight found: ``problems`` refuse the start; ``facts`` say what will be served."""

    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def preflight(
    bsroot: Bsroot,
    interface: str | None = None,
    address: IPv4Address | None = None,
    http_port: int | None = None,
) -> Report:
    report = Report()
    if not bsroot.root.is_dir():
        report.problems.append(f"{bsroot.root}: no such directory (the bsroot to serve)")
        return report
    if not bsroot.cluster_desc.is_file():
        report.problems.append(
            f"{bsroot.root} is not a bsroot: it has no config/cluster-desc.yml "
            "(bootstrapperd-pack makes one)"
        )
        return report
    try:
        model = load_cluster_file(bsroot.cluster_desc)
    except ConfigError as exc:
        report.problems += [f"{bsroot.cluster_desc}: {p}" for p in exc.problems]
        return report
    report.facts.append(f"{bsroot.cluster_desc}: cluster {model.domain}, {len(model.nodes)} nodes")
    missing = missing_boot_files(bsroot, model)
    for path, why in missing:
        report.problems.append(
            f"boot file {path}: {why} (bootstrapperd-pack {bsroot.cluster_desc} -o {bsroot.root} "
            "fills bsroot)"
        )
    if not missing:
        report.facts.append("the iPXE binaries, kernel and initrd machines boot from are there")
    try:
        listen = resolve_listen(model, interface, address, http_port)
    except StartupError as exc:
        report.problems.append(str(exc))
        return report
    report.facts.append(f"serving on {listen.interface} {listen.address}")
    for service, where, opener in _sockets(model, listen):
        try:
            opener().close()
        except OSError as exc:
            report.problems.append(_port_problem(service, where, exc))
    if report.ok:
        report.facts.append(
            f"ports free; status page {base_url(listen.address, listen.http_port)}/"
        )
    return report


def _unservable(opener: Callable[[], int]) -> str | None:
    """Why a file cannot be served, opened as its server opens it; None when it can."""
    try:
        os.close(opener())
    except FileNotFoundError:
        return "missing"
    except Refused as exc:
        return f"not served: {exc}"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


def missing_boot_files(bsroot: Bsroot, model: ClusterModel) -> list[tuple[Path, str]]:
    """What a machine fetches to boot and bsroot cannot serve, with why: the iPXE binaries
    pack puts in ``tftpboot/`` (DHCP names them; TFTP and ``/boot/`` serve them) and the OS
    kernel and initrd the boot scripts name (``/static/``, ``current`` resolved as the image
    mirror resolves it). Each is opened as its server opens it."""
    missing = []
    for name in IPXE_FILES:
        path = bsroot.tftpboot / name
        why = _unservable(functools.partial(open_inside, path, bsroot.boot_trees))
        if why is not None:
            missing.append((path, why))
    mirror = Mirror(bsroot.html_static)
    spec = default_spec(model, base_url(model.bootstrapper, model.http_port))
    for relative in (spec.kernel, spec.initrd):
        located = mirror.locate(relative)
        if located is None:  # no release version in the mirror at all
            missing.append((bsroot.html_static / relative, "missing"))
            continue
        why = _unservable(functools.partial(mirror.open, located))
        if why is not None:
            missing.append((located, why))
    return missing


def _sockets(
    model: ClusterModel, listen: Listen
) -> list[tuple[str, str, Callable[[], socket.socket]]]:
    """(service, port description, the service's own socket opener) for every port it binds."""
    address = str(listen.address)
    sockets: list[tuple[str, str, Callable[[], socket.socket]]] = []
    if model.dhcp.mode is not DHCPMode.OFF:
        ports = [DHCP_PORT] + ([PXE_PORT] if model.dhcp.mode is DHCPMode.PROXY else [])
        for port in ports:
            sockets.append(
                (
                    "dhcp",
                    f"{port}/udp on {listen.interface}",
                    _bind(open_dhcp, listen.interface, port),
                )
            )
    sockets += [
        ("tftp", f"{TFTP_PORT}/udp on {address}", _bind(open_tftp, address, TFTP_PORT)),
        ("dns", f"{DNS_PORT}/udp on {address}", _bind(open_dns, address, DNS_PORT)),
        ("dns", f"{DNS_PORT}/tcp on {address}", _bind(_listen_tcp, address, DNS_PORT)),
        (
            "http",
            f"{listen.http_port}/tcp on {address}",
            _bind(_listen_tcp, address, listen.http_port),
        ),
    ]
    return sockets


def _bind(
    opener: Callable[[str, int], socket.socket], where: str, port: int
) -> Callable[[], socket.socket]:
    return lambda: opener(where, port)


def _listen_tcp(address: str, port: int) -> socket.socket:
    """A TCP listener as aiohttp and the DNS service make it (SO_REUSEADDR: only a listener,
    not a connection in TIME_WAIT, makes the port busy)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    return sock


def _port_problem(service: str, where: str, exc: OSError) -> str:
    port = where.split("/", 1)[0]
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{service}: port {where} is in use — is {_USUAL[service]} running here? "
            f"`ss -lnp 'sport = :{port}'` names it; stop and disable it, then run this again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{service}: port {where}: {exc.strerror} (run as root or with CAP_NET_BIND_SERVICE)"
    return f"{service}: port {where}: {exc.strerror or exc}"
