"""The DHCP server's state machine (RFC 2131 §4.3), sans IO.

``DHCPServer.handle(packet, now, port)`` takes one decoded request and returns an ``Outcome``:
the reply (or none), where it must go (RFC 2131 §4.1), and whether it may only be sent once
the lease it grants is durable. Everything site-specific (which address, which boot file,
whether to answer this machine at all) is asked of a ``Backend`` that the application
implements from its cluster model; this module knows only the protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from protocols.errors import MalformedPacket

from .options import (
    BOOTREPLY,
    BOOTREQUEST,
    FLAG_BROADCAST,
    INFINITE,
    MessageType,
    Opt,
    encode_ip,
    encode_str,
    encode_suboptions,
    encode_u32,
)
from .packet import Packet

UNSPECIFIED = IPv4Address(0)
BROADCAST = IPv4Address("255.255.255.255")
SERVER_PORT = 67
CLIENT_PORT = 68
PXE_PORT = 4011

# Options a client gets when it sends no parameter request list (55) at all.
DEFAULT_REQUESTS = (Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS, Opt.DOMAIN_NAME, Opt.BROADCAST)
# PXE discovery control (option 43, sub-option 6) = 8: "boot the file named in this reply,
# do not look for boot servers" — spares PXE ROMs a multicast discovery round.
PXE_VENDOR_OPTIONS = encode_suboptions({6: b"\x08"})
# iPXE's encapsulated option 175, sub-option 176 (no-pxedhcp) = 1: do not wait for proxyDHCP.
IPXE_NO_PXEDHCP = encode_suboptions({176: b"\x01"})


class Mode(StrEnum):
    FULL = "full"  # addresses and boot information
    PROXY = "proxy"  # another server hands out addresses; only PXE boot information here


@dataclass(frozen=True)
class Settings:
    """What the server says about itself and the subnet; swapped whole on reload."""

    server_id: IPv4Address
    network: IPv4Network
    lease_seconds: int | None  # None: infinite
    options: Mapping[int, bytes]  # subnet-wide option payloads: mask, routers, DNS, domain, ...
    mode: Mode = Mode.FULL

    @cached_property
    def timer_options(self) -> dict[int, bytes]:
        """Options 51, 58, 59, encoded once: lease time, T1 and T2 (RFC 2131 §4.4.5: 0.5 and
        0.875 of the lease); an infinite lease has no T1/T2."""
        lease = self.lease_seconds
        if lease is None:
            return {Opt.LEASE_TIME: encode_u32(INFINITE)}
        return {
            Opt.LEASE_TIME: encode_u32(lease),
            Opt.RENEWAL_TIME: encode_u32(lease // 2),
            Opt.REBINDING_TIME: encode_u32(lease * 7 // 8),
        }

    @cached_property
    def server_id_option(self) -> bytes:
        return encode_ip(self.server_id)


@dataclass(frozen=True, slots=True)
class Boot:
    """Where a client's boot program is: ``file`` in the reply (a TFTP path or a URL)."""

    file: str
    server: IPv4Address  # siaddr / next-server and option 66
    vendor_class: bytes | None = None  # echoed in option 60 (PXEClient, HTTPClient)
    ipxe: bool = False  # client is iPXE: send 175.176 = 1


@dataclass(frozen=True, slots=True)
class Verdict:
    """The backend's answer to a REQUEST for ``address``."""

    granted: bool
    reason: str = ""  # why not, for the NAK message and the log


class Backend(Protocol):
    """Site policy the server consults; implemented by the application."""

    @property
    def settings(self) -> Settings: ...

    def admit(self, request: Packet) -> bool | None:
        """True: serve this client. False: never answer it (e.g. a MAC not in the model; the
        outcome is logged). None: not now (e.g. too many new clients at once): dropped without
        an outcome, so a flood of them writes no log line and no timeline event."""
        ...

    def choose(
        self, request: Packet, requested: IPv4Address | None, now: float
    ) -> IPv4Address | None:
        """An address to offer (held for this client for a short while), or None: no address."""
        ...

    def grant(self, request: Packet, address: IPv4Address, now: float) -> Verdict:
        """Bind ``address`` to the client (durably, once flushed) or say why not."""
        ...

    def release(self, request: Packet, address: IPv4Address, now: float) -> bool: ...

    def decline(self, request: Packet, address: IPv4Address, now: float) -> bool: ...

    def host_options(self, request: Packet) -> Mapping[int, bytes]:
        """Per-client option payloads, e.g. the hostname (12)."""
        ...

    def boot(self, request: Packet) -> Boot | None: ...


@dataclass(frozen=True, slots=True)
class Destination:
    address: IPv4Address
    port: int
    mac: bytes | None = None  # unicast to this hardware address before the client has its IP


@dataclass(slots=True)
class Outcome:
    """What came of one request: for the endpoint (send) and the application (log, timeline)."""

    request: MessageType
    reply: Packet | None = None
    destination: Destination | None = None
    reply_type: MessageType | None = None
    durable: bool = False  # send only after the backend's pending lease writes are committed
    address: IPv4Address | None = None
    boot: Boot | None = None
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class DHCPServer:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def handle(
        self,
        request: Packet,
        now: float,
        port: int = SERVER_PORT,
        source: tuple[IPv4Address, int] | None = None,
    ) -> Outcome | None:
        """Decide what to do with one request that arrived on ``port`` from ``source``.
        None: not for us (no log line warranted)."""
        if request.op != BOOTREQUEST:
            return None
        kind = request.message_type
        if kind is None:
            return None  # plain BOOTP: not served
        admitted = self.backend.admit(request)
        if admitted is None:
            return None
        if not admitted:
            return Outcome(kind, note="ignored: machine not admitted")
        if self.backend.settings.mode is Mode.PROXY:
            return self._proxy(request, kind, port, source)
        if port != SERVER_PORT:
            return None
        handler = _HANDLERS.get(kind)
        if handler is None:
            return None  # a server's message type (OFFER, ACK, NAK) sent to us
        return handler(self, request, now)

    # ---- full mode ---------------------------------------------------------------------------

    def _discover(self, request: Packet, now: float) -> Outcome:
        if not self._on_our_subnet(request):
            return Outcome(MessageType.DISCOVER, note="ignored: relay from another subnet")
        address = self.backend.choose(request, request.requested_ip, now)
        if address is None:
            return Outcome(MessageType.DISCOVER, note="no free address")
        boot = self.backend.boot(request)
        reply = self._reply(request, MessageType.OFFER, address, boot)
        return Outcome(
            MessageType.DISCOVER,
            reply,
            self._destination(request, reply),
            MessageType.OFFER,
            address=address,
            boot=boot,
        )

    def _request(self, request: Packet, now: float) -> Outcome | None:
        settings = self.backend.settings
        server_id = request.server_id
        requested = request.requested_ip
        if server_id is not None:
            if server_id != settings.server_id:
                return Outcome(MessageType.REQUEST, note=f"client chose server {server_id}")
            if requested is None:
                raise MalformedPacket("REQUEST in SELECTING state without a requested address")
            address, state = requested, "selecting"
        elif requested is not None:
            address, state = requested, "init-reboot"
        elif request.ciaddr != UNSPECIFIED:
            address, state = request.ciaddr, "renewing"
        else:
            raise MalformedPacket("REQUEST names no address (no option 50, no ciaddr)")
        if not self._on_our_subnet(request):
            return Outcome(MessageType.REQUEST, note="ignored: relay from another subnet")
        if address not in settings.network:
            return self._nak(request, address, "wrong subnet")
        verdict = self.backend.grant(request, address, now)
        if not verdict.granted:
            return self._nak(request, address, verdict.reason)
        boot = self.backend.boot(request)
        reply = self._reply(request, MessageType.ACK, address, boot)
        return Outcome(
            MessageType.REQUEST,
            reply,
            self._destination(request, reply),
            MessageType.ACK,
            durable=True,
            address=address,
            boot=boot,
            extra={"state": state},
        )

    def _decline(self, request: Packet, now: float) -> Outcome:
        address = request.requested_ip
        if address is None or request.server_id != self.backend.settings.server_id:
            return Outcome(MessageType.DECLINE, note="ignored: not a decline of our address")
        done = self.backend.decline(request, address, now)
        note = "address quarantined" if done else "ignored: address not leased to this client"
        return Outcome(MessageType.DECLINE, address=address, note=note)

    def _release(self, request: Packet, now: float) -> Outcome:
        address = request.ciaddr
        if address == UNSPECIFIED:
            return Outcome(MessageType.RELEASE, note="ignored: no ciaddr")
        done = self.backend.release(request, address, now)
        note = "released" if done else "ignored: address not leased to this client"
        return Outcome(MessageType.RELEASE, address=address, note=note)

    def _inform(self, request: Packet, now: float) -> Outcome:
        if request.ciaddr == UNSPECIFIED or request.ciaddr not in self.backend.settings.network:
            return Outcome(MessageType.INFORM, note="ignored: ciaddr not on our subnet")
        boot = self.backend.boot(request)
        reply = self._reply(request, MessageType.ACK, None, boot)
        return Outcome(
            MessageType.INFORM,
            reply,
            self._destination(request, reply),
            MessageType.ACK,
            address=request.ciaddr,
            boot=boot,
        )

    # ---- proxy mode (PXE boot information only, RFC 4578 / PXE 2.1) --------------------------

    def _proxy(
        self,
        request: Packet,
        kind: MessageType,
        port: int,
        source: tuple[IPv4Address, int] | None,
    ) -> Outcome | None:
        vendor = request.vendor_class or b""
        if not vendor.startswith((b"PXEClient", b"HTTPClient")):
            return None
        if port == SERVER_PORT and kind is not MessageType.DISCOVER:
            return None  # the real DHCP server's business; PXE clients come to 4011 next
        if port == PXE_PORT and kind not in (MessageType.REQUEST, MessageType.INFORM):
            return None
        boot = self.backend.boot(request)
        if boot is None:
            return Outcome(kind, note="no boot file for this client")
        reply_type = MessageType.OFFER if kind is MessageType.DISCOVER else MessageType.ACK
        reply = self._reply(request, reply_type, None, boot, proxy=True)
        if port == PXE_PORT and source is not None and source[0] != UNSPECIFIED:
            destination = Destination(*source)  # PXE 2.1: back to the client's source port
        elif port == PXE_PORT and request.ciaddr != UNSPECIFIED:
            destination = Destination(request.ciaddr, PXE_PORT)
        else:
            destination = self._destination(request, reply)
        return Outcome(kind, reply, destination, reply_type, boot=boot, extra={"proxy": True})

    # ---- building replies --------------------------------------------------------------------

    def _on_our_subnet(self, request: Packet) -> bool:
        giaddr = request.giaddr
        return giaddr == UNSPECIFIED or giaddr in self.backend.settings.network

    def _reply(
        self,
        request: Packet,
        kind: MessageType,
        address: IPv4Address | None,
        boot: Boot | None,
        *,
        proxy: bool = False,
    ) -> Packet:
        settings = self.backend.settings
        reply = Packet(
            op=BOOTREPLY,
            xid=request.xid,
            chaddr=request.chaddr,
            htype=request.htype,
            flags=request.flags,
            ciaddr=request.ciaddr if kind is MessageType.ACK else UNSPECIFIED,
            yiaddr=address if address is not None else UNSPECIFIED,
            giaddr=request.giaddr,
        )
        options = reply.options
        options[Opt.MESSAGE_TYPE] = bytes((kind,))
        options[Opt.SERVER_ID] = settings.server_id_option
        if address is not None:
            options.update(settings.timer_options)
        if not proxy:
            options[Opt.SUBNET_MASK] = settings.options[Opt.SUBNET_MASK]
            wanted = request.parameter_requests or DEFAULT_REQUESTS
            subnet = settings.options
            host = self.backend.host_options(request)
            for code in wanted:
                payload = host.get(code) or subnet.get(code)
                if payload is not None and code not in options:
                    options[code] = payload
        if boot is not None:
            self._add_boot(request, reply, boot)
        client_id = request.options.get(Opt.CLIENT_ID)
        if client_id is not None and not proxy:
            options[Opt.CLIENT_ID] = client_id  # RFC 6842
        relay = request.options.get(Opt.RELAY_AGENT)
        if relay is not None:
            options[Opt.RELAY_AGENT] = relay  # RFC 3046: echoed last
        return reply

    @staticmethod
    def _add_boot(request: Packet, reply: Packet, boot: Boot) -> None:
        reply.siaddr = boot.server
        reply.file = boot.file.encode()
        options = reply.options
        wanted = request.parameter_requests
        if Opt.TFTP_SERVER in wanted:
            options[Opt.TFTP_SERVER] = encode_str(str(boot.server))
        if Opt.BOOTFILE in wanted:
            options[Opt.BOOTFILE] = reply.file
        if boot.vendor_class is not None:
            options[Opt.VENDOR_CLASS] = boot.vendor_class
            if boot.vendor_class.startswith(b"PXEClient"):
                options[Opt.VENDOR_SPECIFIC] = PXE_VENDOR_OPTIONS
        if boot.ipxe:
            options[Opt.IPXE] = IPXE_NO_PXEDHCP

    def _nak(self, request: Packet, address: IPv4Address, reason: str) -> Outcome:
        settings = self.backend.settings
        reply = Packet(
            op=BOOTREPLY,
            xid=request.xid,
            chaddr=request.chaddr,
            htype=request.htype,
            giaddr=request.giaddr,
        )
        if request.giaddr != UNSPECIFIED:
            reply.flags = FLAG_BROADCAST
        reply.options[Opt.MESSAGE_TYPE] = bytes((MessageType.NAK,))
        reply.options[Opt.SERVER_ID] = encode_ip(settings.server_id)
        reply.options[Opt.MESSAGE] = encode_str(reason)
        client_id = request.options.get(Opt.CLIENT_ID)
        if client_id is not None:
            reply.options[Opt.CLIENT_ID] = client_id
        return Outcome(
            MessageType.REQUEST,
            reply,
            self._destination(request, reply),
            MessageType.NAK,
            address=address,
            note=reason,
        )

    @staticmethod
    def _destination(request: Packet, reply: Packet) -> Destination:
        """RFC 2131 §4.1: relay, then ciaddr, then broadcast when asked or NAK, else unicast to
        the client's hardware address and the address being offered."""
        if request.giaddr != UNSPECIFIED:
            return Destination(request.giaddr, SERVER_PORT)
        if reply.options.get(Opt.MESSAGE_TYPE) == _NAK:
            return Destination(BROADCAST, CLIENT_PORT)
        if request.ciaddr != UNSPECIFIED:
            return Destination(request.ciaddr, CLIENT_PORT)
        if request.flags & FLAG_BROADCAST or reply.yiaddr == UNSPECIFIED:
            return Destination(BROADCAST, CLIENT_PORT)
        return Destination(reply.yiaddr, CLIENT_PORT, mac=request.chaddr)


_NAK = bytes((MessageType.NAK,))
_HANDLERS = {
    MessageType.DISCOVER: DHCPServer._discover,
    MessageType.REQUEST: DHCPServer._request,
    MessageType.DECLINE: DHCPServer._decline,
    MessageType.RELEASE: DHCPServer._release,
    MessageType.INFORM: DHCPServer._inform,
}
