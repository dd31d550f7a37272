"""The TFTP endpoint on loopback, driven by hand-built packets: duplicate requests, the transfer
limit, a client that vanishes, an opener that fails, and shutdown with a stalled transfer."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from protocols.tftp.endpoint import (
    FIRST_CONTACT_RETRIES,
    Opened,
    Refusal,
    Report,
    TFTPEndpoint,
    open_socket,
)
from protocols.tftp.packet import ErrorCode, Request
from protocols.tftp.session import Address

FILE = bytes(range(256)) * 8  # 2048 bytes: four full blocks and an empty final one


@dataclass
class Harness:
    endpoint: TFTPEndpoint
    address: Address
    reports: list[Report] = field(default_factory=list)
    fail_open: bool = False
    sockets: list[socket.socket] = field(default_factory=list)

    def client(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sockets.append(sock)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock


def rrq(name: bytes = b"file") -> bytes:
    return struct.pack("!H", 1) + name + b"\0octet\0"


async def recv(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, Address]:  # noqa: ASYNC109 (a test helper's deadline)
    loop = asyncio.get_running_loop()
    data, source = await asyncio.wait_for(loop.sock_recvfrom(sock, 65536), timeout)
    return data, source


async def nothing_arrives(sock: socket.socket, within: float) -> bool:
    try:
        await recv(sock, within)
    except TimeoutError:
        return True
    return False


async def wait_for_report(harness: Harness, count: int = 1) -> None:
    for _ in range(200):
        if len(harness.reports) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no report: {harness.reports}")


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    listener = open_socket("127.0.0.1", 0)
    holder: dict[str, Harness] = {}

    def opener(request: Request, peer: Address) -> Opened | Refusal:
        if holder["h"].fail_open:
            raise RuntimeError("broken opener")
        return Opened(request.filename, io.BytesIO(FILE), len(FILE))

    endpoint = TFTPEndpoint(
        listener,
        opener,
        report=lambda r: holder["h"].reports.append(r),
        counters=Counter(),
        logger=logging.getLogger("test.tftp"),
        max_blksize=1468,
        max_transfers=2,
        retransmit_after=0.1,
        retries=2,
    )
    holder["h"] = Harness(endpoint, listener.getsockname())
    endpoint.start()
    yield holder["h"]
    await endpoint.close(0)
    for sock in holder["h"].sockets:
        sock.close()


async def test_a_repeated_request_does_not_start_a_second_transfer(harness: Harness) -> None:
    sock = harness.client()
    sock.sendto(rrq(), harness.address)
    sock.sendto(rrq(), harness.address)
    received = b""
    ports = set()
    while True:
        data, source = await recv(sock)
        ports.add(source[1])
        block = struct.unpack("!H", data[2:4])[0]
        received += data[4:]
        sock.sendto(struct.pack("!HH", 4, block), source)
        if len(data) - 4 < 512:
            break
    assert len(ports) == 1
    assert harness.address[1] not in ports
    assert received == FILE
    await wait_for_report(harness)
    assert harness.endpoint.counters["duplicate_requests"] == 1
    assert harness.endpoint.counters["transfers"] == 1
    assert [r.outcome for r in harness.reports] == ["complete"]


async def test_the_transfer_limit_answers_busy(harness: Harness) -> None:
    clients = [harness.client() for _ in range(3)]
    for sock in clients[:2]:
        sock.sendto(rrq(), harness.address)
        await recv(sock)  # DATA 1: the transfer is running
    clients[2].sendto(rrq(), harness.address)
    data, source = await recv(clients[2])
    assert data[:4] == struct.pack("!HH", 5, ErrorCode.NOT_DEFINED)
    assert b"busy" in data
    assert source[1] == harness.address[1]


async def test_a_vanished_client_times_out_and_frees_its_transfer(harness: Harness) -> None:
    sock = harness.client()
    sock.sendto(rrq(), harness.address)
    first, _ = await recv(sock)
    # No ACK: the server resends DATA 1 `retries` times, then gives up silently.
    again, _ = await recv(sock)
    assert again == first
    await wait_for_report(harness)
    report = harness.reports[0]
    assert report.outcome == "timed out"
    assert report.retransmits == FIRST_CONTACT_RETRIES  # the first packet, once again
    assert harness.endpoint.active == 0
    assert harness.endpoint.counters["failed"] == 1


async def test_an_opener_that_raises_gets_error_0_and_serving_goes_on(harness: Harness) -> None:
    sock = harness.client()
    harness.fail_open = True
    sock.sendto(rrq(), harness.address)
    data, _ = await recv(sock)
    assert data[:4] == struct.pack("!HH", 5, 0)
    harness.fail_open = False
    sock.sendto(rrq(), harness.address)
    data, _ = await recv(sock)
    assert data[:4] == b"\x00\x03\x00\x01"


async def test_close_aborts_a_stalled_transfer_after_the_grace(harness: Harness) -> None:
    sock = harness.client()
    sock.sendto(rrq(), harness.address)
    await recv(sock)
    await harness.endpoint.close(0.05)
    packets = []
    while True:
        try:
            data, _ = await recv(sock, 0.3)
        except TimeoutError:
            break
        packets.append(data)
    assert any(p[:4] == struct.pack("!HH", 5, 0) and b"shutting down" in p for p in packets)
    assert harness.reports
    assert harness.reports[-1].outcome == "aborted"
    # New requests are no longer taken.
    sock.sendto(rrq(), harness.address)
    assert await nothing_arrives(sock, 0.3)
