"""The TFTP server's bounds, without sockets: a request whose source may be spoofed buys at most
a few copies of one packet, and the transfer cap follows the file-descriptor limit."""

from __future__ import annotations

import io
import resource
import subprocess
import sys

import pytest

from bootstrapperd.runtime.fdlimit import (
    FD_RESERVE,
    FDS_PER_TRANSFER,
    MIN_TRANSFERS,
    transfer_cap,
)
from protocols.tftp import Opcode, ReadSession, Request
from protocols.tftp.endpoint import FIRST_CONTACT_RETRIES, MAX_TRANSFERS

PEER = ("192.0.2.10", 3001)
T0 = 100.0
RRQ_BYTES = len(b"\0\1pxelinux.0\0octet\0")


def spoofed(*options: tuple[str, str], size: int = 1 << 20) -> ReadSession:
    """A session for an RRQ whose peer never answers, set up as the endpoint sets it up."""
    request = Request(Opcode.RRQ, "pxelinux.0", "octet", options)
    return ReadSession(
        request,
        PEER,
        io.BytesIO(bytes(size)),
        size,
        T0,
        max_blksize=1468,
        max_window=64,
        max_window_bytes=256 * 1024,
        retries=5,
        first_contact_retries=FIRST_CONTACT_RETRIES,
    )


def everything_sent(session: ReadSession) -> list[bytes]:
    """What the session sends for its RRQ when nothing ever comes back."""
    sent = list(session.start())
    now = T0
    while not session.done:
        now = session.deadline
        sent += session.timeout(now)
    return sent


@pytest.mark.parametrize(
    "options",
    [
        (),
        (("blksize", "1468"),),
        (("blksize", "1468"), ("windowsize", "64"), ("tsize", "0")),
        (("windowsize", "64"),),
    ],
)
def test_a_spoofed_rrq_gets_at_most_two_copies_of_one_packet(
    options: tuple[tuple[str, str], ...],
) -> None:
    session = spoofed(*options)
    sent = everything_sent(session)
    assert len(set(sent)) == 1  # one packet (the OACK or DATA 1)...
    assert len(sent) == 1 + FIRST_CONTACT_RETRIES <= 2  # ...and one retransmission at most
    assert session.blocks_sent <= 1


def test_amplification_of_a_plain_rrq_is_bounded_by_one_block() -> None:
    sent = everything_sent(spoofed())
    assert sum(len(packet) for packet in sent) <= 2 * (4 + 512)
    assert sum(len(packet) for packet in sent) / RRQ_BYTES < 60  # was 6 x 516 B: 163 x


def test_after_the_first_ack_the_window_and_the_full_retries_apply() -> None:
    session = spoofed(("blksize", "1024"), ("windowsize", "8"))
    (_oack,) = session.start()
    window = session.receive(b"\0\4\0\0", PEER, T0 + 0.1)  # ACK 0: the peer saw our OACK
    assert len(window) == 8
    assert session.answered
    for n in range(5):  # the ordinary retries, each resending the whole window
        assert len(session.timeout(T0 + 1 + n)) == 8
    assert session.timeout(T0 + 7) == []
    assert session.done


@pytest.mark.parametrize(
    ("soft", "cap"),
    [
        (1024, (1024 - FD_RESERVE) // FDS_PER_TRANSFER),
        (FD_RESERVE + FDS_PER_TRANSFER * MAX_TRANSFERS, MAX_TRANSFERS),
        (16384, MAX_TRANSFERS),
        (256, MIN_TRANSFERS),
        (resource.RLIM_INFINITY, MAX_TRANSFERS),
    ],
)
def test_transfer_cap_follows_the_descriptor_limit(soft: int, cap: int) -> None:
    assert transfer_cap(soft, MAX_TRANSFERS) == cap
    if soft not in (resource.RLIM_INFINITY, 256):
        assert FD_RESERVE + FDS_PER_TRANSFER * cap <= soft


RAISE = """
import resource
from bootstrapperd.runtime.fdlimit import raise_fd_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
limit = raise_fd_limit()
print(limit.before, limit.soft, limit.hard, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_the_soft_limit_is_raised_to_the_hard_limit() -> None:
    result = subprocess.run(
        [sys.executable, "-c", RAISE], capture_output=True, text=True, check=True
    )
    before, soft, hard, now = (int(word) for word in result.stdout.split())
    assert before == min(256, hard)
    assert soft == now == (hard if hard != resource.RLIM_INFINITY else soft)
    assert soft >= before
