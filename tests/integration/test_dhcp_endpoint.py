"""The DHCP endpoint's overload policy on a loopback socket (no DHCP leaves the process): with a
backlog waiting, every REQUEST is answered and only the newest DISCOVERs are."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from ipaddress import IPv4Address

from protocols.dhcp.endpoint import DISCOVER_BUDGET, READ_MAX, DHCPEndpoint
from protocols.dhcp.options import MessageType
from protocols.dhcp.packet import Packet, serialize
from protocols.dhcp.server import Outcome
from tests.dhcp_requests import request


class Recorder:
    """Stands in for DHCPServer: remembers what it was asked, answers nothing."""

    def __init__(self) -> None:
        self.seen: list[tuple[MessageType | None, int]] = []

    def handle(
        self,
        packet: Packet,
        now: float,
        port: int = 67,
        source: tuple[IPv4Address, int] | None = None,
    ) -> Outcome | None:
        self.seen.append((packet.message_type, packet.xid))
        return None


async def test_backlog_sheds_oldest_discovers_and_answers_every_request() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port = receiver.getsockname()[1]
    discovers = READ_MAX - 6
    for xid in range(discovers):
        wire = serialize(request(MessageType.DISCOVER, "52:54:00:00:00:01", xid=xid))
        sender.sendto(wire, ("127.0.0.1", port))
    for xid in range(1000, 1006):
        wire = serialize(
            request(MessageType.REQUEST, "52:54:00:00:00:02", xid=xid, ciaddr="10.0.0.9")
        )
        sender.sendto(wire, ("127.0.0.1", port))
    sender.sendto(b"garbage", ("127.0.0.1", port))  # beyond this wake-up's READ_MAX

    recorder = Recorder()
    counters: Counter[str] = Counter()

    async def flush() -> None:
        return None

    endpoint = DHCPEndpoint(
        recorder,  # type: ignore[arg-type]
        receiver,
        interface="lo",
        port=67,
        flush=flush,
        observe=lambda outcome, packet: None,
        counters=counters,
        logger=logging.getLogger("test.dhcp"),
    )
    endpoint._readable()  # one wake-up with a full backlog waiting

    requests = [xid for kind, xid in recorder.seen if kind is MessageType.REQUEST]
    answered = [xid for kind, xid in recorder.seen if kind is MessageType.DISCOVER]
    assert requests == list(range(1000, 1006))
    assert recorder.seen[:6] == [(MessageType.REQUEST, x) for x in range(1000, 1006)]
    assert answered == list(range(discovers - DISCOVER_BUDGET, discovers))  # the newest ones
    assert counters["shed_discovers"] == discovers - DISCOVER_BUDGET

    endpoint._readable()  # the next wake-up: no backlog, the garbage is counted, not fatal
    assert counters["malformed"] == 1
    await endpoint.close()
    sender.close()
