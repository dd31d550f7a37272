"""The TFTP read session as bytes in, bytes out, with the time passed in: lock-step and
windowed transfers, options, loss and duplication, timeouts, strangers, block-number
rollover, bad modes, read errors and aborts."""

from __future__ import annotations

import io
import math

import pytest

from protocols.tftp import (
    ErrorCode,
    Opcode,
    Outcome,
    ReadSession,
    Request,
    error_packet,
)

PEER = ("192.0.2.10", 3001)
T0 = 100.0


class Memory:
    """An in-memory source that records every read and can fail on the n-th one."""

    def __init__(self, data: bytes, fail_on: int | None = None) -> None:
        self._data = io.BytesIO(data)
        self.reads = 0
        self._fail_on = fail_on

    def read(self, size: int) -> bytes:
        self.reads += 1
        if self.reads == self._fail_on:
            raise OSError(5, "Input/output error")
        return self._data.read(size)


def content(size: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(size))


def rrq(*options: tuple[str, str], mode: str = "octet") -> Request:
    return Request(Opcode.RRQ, "pxelinux.0", mode, options)


def ack(block: int) -> bytes:
    return b"\0\4" + (block & 0xFFFF).to_bytes(2, "big")


def data(block: int, payload: bytes) -> bytes:
    return b"\0\3" + (block & 0xFFFF).to_bytes(2, "big") + payload


def session(
    payload: bytes, *options: tuple[str, str], mode: str = "octet", **kw: int
) -> ReadSession:
    return ReadSession(rrq(*options, mode=mode), PEER, Memory(payload), len(payload), T0, **kw)


def to_peer(sends: list[tuple[bytes, tuple[str, int]]]) -> list[bytes]:
    assert all(address == PEER for _, address in sends)
    return [packet for packet, _ in sends]


def blocks(payload: bytes, blksize: int) -> list[bytes]:
    """The DATA payloads of a file: the last one is shorter than blksize (maybe empty)."""
    return [payload[i : i + blksize] for i in range(0, len(payload) + 1, blksize)]


# -- lock-step ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 1100])
def test_lock_step(size: int) -> None:
    payload = content(size)
    expected = blocks(payload, 512)
    s = session(payload)
    assert s.start() == [data(1, expected[0])]
    assert s.deadline == T0 + 1.0
    now = T0
    for n, chunk in enumerate(expected[1:], start=2):
        now += 0.01
        assert to_peer(s.receive(ack(n - 1), PEER, now)) == [data(n, chunk)]
        assert s.deadline == now + 1.0
        assert not s.done
    assert s.receive(ack(len(expected)), PEER, now + 0.01) == []
    assert s.done
    assert s.outcome is Outcome.COMPLETE
    assert s.deadline == math.inf
    assert s.finished == now + 0.01
    assert s.detail == ""
    assert (s.bytes_sent, s.blocks_sent, s.retransmits) == (size, len(expected), 0)


def test_three_blocks_on_the_wire() -> None:
    s = session(b"A" * 512 + b"B" * 512 + b"C" * 3)
    assert s.start() == [b"\0\3\0\1" + b"A" * 512]
    assert s.receive(b"\0\4\0\1", PEER, T0 + 1) == [(b"\0\3\0\2" + b"B" * 512, PEER)]
    assert s.receive(b"\0\4\0\2", PEER, T0 + 2) == [(b"\0\3\0\3CCC", PEER)]
    assert s.receive(b"\0\4\0\3", PEER, T0 + 3) == []
    assert s.outcome is Outcome.COMPLETE


def test_padded_ack_accepted() -> None:
    s = session(content(600))
    s.start()
    assert to_peer(s.receive(ack(1) + b"\0\0", PEER, T0)) == [data(2, content(600)[512:])]


def test_no_oack_when_nothing_is_acknowledged() -> None:
    # tsize with an unknown size, an unknown option and a bad blksize: plain RFC 1350.
    source = Memory(content(10))
    s = ReadSession(rrq(("tsize", "0"), ("foo", "1"), ("blksize", "4")), PEER, source, None, T0)
    assert s.start() == [data(1, content(10))]
    assert s.negotiated.acknowledged == ()


# -- options -----------------------------------------------------------------------------


def test_oack_then_ack_0() -> None:
    payload = content(3000)
    s = session(payload, ("blksize", "1024"), ("tsize", "0"), ("timeout", "3"))
    assert s.start() == [b"\0\6blksize\x001024\0tsize\x003000\0timeout\x003\0"]
    assert s.deadline == T0 + 3.0
    assert s.blocks_sent == 0
    assert to_peer(s.receive(ack(0), PEER, T0 + 1)) == [data(1, payload[:1024])]
    assert s.deadline == T0 + 4.0
    assert to_peer(s.receive(ack(1), PEER, T0 + 2)) == [data(2, payload[1024:2048])]
    assert to_peer(s.receive(ack(2), PEER, T0 + 3)) == [data(3, payload[2048:])]
    assert s.receive(ack(3), PEER, T0 + 4) == []
    assert s.outcome is Outcome.COMPLETE


def test_oack_lost_is_retransmitted_and_other_acks_ignored() -> None:
    s = session(content(100), ("blksize", "64"), retries=2)
    oack = s.start()
    assert s.receive(ack(1), PEER, T0 + 0.5) == []
    assert s.timeout(T0 + 1) == oack
    assert s.retransmits == 1
    assert to_peer(s.receive(ack(0), PEER, T0 + 1.5)) == [data(1, content(100)[:64])]
    # a second ACK 0 (the client saw the OACK twice) is only a duplicate
    assert s.receive(ack(0), PEER, T0 + 1.6) == []
    assert s.duplicate_acks == 1


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(ErrorCode.OPTION_REFUSED, Outcome.OPTION_REFUSED), (0, Outcome.OPTION_REFUSED)],
)
def test_option_refused(code: int, outcome: Outcome) -> None:
    s = session(content(100), ("blksize", "1024"))
    s.start()
    assert s.receive(error_packet(code, "blksize not supported"), PEER, T0 + 1) == []
    assert (s.done, s.outcome, s.detail) == (True, outcome, "blksize not supported")
    assert s.deadline == math.inf


def test_client_error_mid_transfer() -> None:
    s = session(content(2000))
    s.start()
    s.receive(ack(1), PEER, T0 + 1)
    assert s.receive(error_packet(ErrorCode.DISK_FULL, "disk full"), PEER, T0 + 2) == []
    assert (s.outcome, s.detail, s.finished) == (Outcome.CLIENT_ERROR, "disk full", T0 + 2)
    assert s.receive(error_packet(ErrorCode.OPTION_REFUSED, "x"), PEER, T0 + 3) == []
    assert s.outcome is Outcome.CLIENT_ERROR


def test_error_8_mid_transfer_is_option_refused() -> None:
    s = session(content(2000))
    s.start()
    s.receive(error_packet(ErrorCode.OPTION_REFUSED, "no"), PEER, T0 + 1)
    assert s.outcome is Outcome.OPTION_REFUSED


# -- windows (RFC 7440) ------------------------------------------------------------------


def windowed(size: int = 9 * 512 + 100, window: int = 4) -> tuple[ReadSession, list[bytes]]:
    payload = content(size)
    s = session(payload, ("windowsize", str(window)))
    assert s.start() == [b"\0\6windowsize\0" + str(window).encode() + b"\0"]
    return s, [data(n, chunk) for n, chunk in enumerate(blocks(payload, 512), start=1)]


def test_window_of_4_over_10_blocks() -> None:
    s, expected = windowed()
    assert len(expected) == 10
    assert to_peer(s.receive(ack(0), PEER, T0 + 1)) == expected[0:4]
    assert to_peer(s.receive(ack(4), PEER, T0 + 2)) == expected[4:8]
    assert to_peer(s.receive(ack(8), PEER, T0 + 3)) == expected[8:10]
    assert s.receive(ack(10), PEER, T0 + 4) == []
    assert (s.outcome, s.blocks_sent, s.retransmits) == (Outcome.COMPLETE, 10, 0)
    assert s.bytes_sent == 9 * 512 + 100


def test_source_is_read_one_window_ahead_at_most() -> None:
    payload = content(20 * 512)
    source = Memory(payload)
    s = ReadSession(rrq(("windowsize", "4")), PEER, source, len(payload), T0)
    s.start()
    assert source.reads == 0
    s.receive(ack(0), PEER, T0)
    assert source.reads == 4
    s.receive(ack(2), PEER, T0)
    assert source.reads == 6


def test_partial_window_ack_resends_from_the_next_block() -> None:
    s, expected = windowed()
    s.receive(ack(0), PEER, T0 + 1)
    # the client got 1 and 2, lost 3: it acks 2 (after its own timeout)
    assert to_peer(s.receive(ack(2), PEER, T0 + 2)) == expected[2:6]
    assert (s.retransmits, s.blocks_sent) == (2, 6)
    assert to_peer(s.receive(ack(6), PEER, T0 + 3)) == expected[6:10]


def test_lost_data_timeout_resends_exactly_the_window() -> None:
    s, expected = windowed()
    s.receive(ack(0), PEER, T0 + 1)
    assert s.timeout(T0 + 2) == expected[0:4]
    assert s.deadline == T0 + 3
    assert s.retransmits == 4
    assert to_peer(s.receive(ack(4), PEER, T0 + 2.5)) == expected[4:8]
    assert s.timeout(T0 + 3.5) == expected[4:8]
    s.receive(ack(6), PEER, T0 + 4)
    assert s.timeout(T0 + 5) == expected[6:10]


def test_lost_data_lock_step() -> None:
    s = session(content(1000))
    first = s.start()
    assert s.timeout(T0 + 1) == first
    assert s.timeout(T0 + 2) == first
    assert (s.retransmits, s.blocks_sent) == (2, 1)


def test_lost_ack() -> None:
    payload = content(1500)
    s = session(payload)
    s.start()
    second = to_peer(s.receive(ack(1), PEER, T0 + 0.1))
    assert second == [data(2, payload[512:1024])]
    # ACK 2 is lost; the server times out and resends DATA 2
    assert s.timeout(T0 + 1.1) == second
    # the client saw DATA 2 twice and acks twice: only the first moves on
    assert to_peer(s.receive(ack(2), PEER, T0 + 1.2)) == [data(3, payload[1024:])]
    assert s.receive(ack(2), PEER, T0 + 1.3) == []
    assert s.duplicate_acks == 1
    assert s.receive(ack(3), PEER, T0 + 1.4) == []
    assert s.outcome is Outcome.COMPLETE


def test_duplicate_and_future_acks_never_send() -> None:
    s, _ = windowed()
    s.receive(ack(0), PEER, T0)
    s.receive(ack(4), PEER, T0)
    for block in (0, 1, 4, 9, 100, 65535):  # old, or beyond what was sent
        assert s.receive(ack(block), PEER, T0) == []
    assert s.duplicate_acks == 6
    assert s.blocks_sent == 8


# -- timeouts ----------------------------------------------------------------------------


def test_gives_up_after_retries() -> None:
    s = session(content(1000), retries=3)
    first = s.start()
    for n in range(1, 4):
        assert s.timeout(T0 + n) == first
        assert s.deadline == T0 + n + 1
    assert s.timeout(T0 + 4) == []
    assert (s.done, s.outcome, s.deadline, s.finished) == (
        True,
        Outcome.TIMED_OUT,
        math.inf,
        T0 + 4,
    )
    assert s.timeout(T0 + 5) == []
    assert s.receive(ack(1), PEER, T0 + 6) == []


def test_progress_resets_the_retry_count() -> None:
    s = session(content(2000), retries=2)
    s.start()
    assert s.timeout(T0 + 1)
    assert s.timeout(T0 + 2)
    s.receive(ack(1), PEER, T0 + 2.5)
    assert s.timeout(T0 + 3.5)
    assert s.timeout(T0 + 4.5)
    assert not s.done
    assert s.timeout(T0 + 5.5) == []
    assert s.outcome is Outcome.TIMED_OUT


def test_default_timeout_interval() -> None:
    s = ReadSession(rrq(), PEER, Memory(b"x"), 1, T0, default_timeout=2.5)
    s.start()
    assert s.deadline == T0 + 2.5


# -- strangers and junk ------------------------------------------------------------------


@pytest.mark.parametrize("stranger", [("192.0.2.10", 3002), ("192.0.2.11", 3001)])
def test_stranger_gets_error_5_and_session_continues(stranger: tuple[str, int]) -> None:
    payload = content(600)
    s = session(payload)
    s.start()
    assert s.receive(ack(1), stranger, T0 + 0.1) == [(b"\0\5\0\5unknown transfer ID\0", stranger)]
    assert s.strangers == 1
    assert not s.done
    assert s.deadline == T0 + 1
    assert to_peer(s.receive(ack(1), PEER, T0 + 0.2)) == [data(2, payload[512:])]


def test_ipv6_peer_with_flow_info() -> None:
    peer = ("2001:db8::5", 3001, 0, 0)
    s = ReadSession(rrq(), peer, Memory(content(600)), 600, T0)  # type: ignore[arg-type]
    s.start()
    assert len(s.receive(ack(1), ("2001:db8::5", 3001), T0)) == 1
    assert s.strangers == 0


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\0",
        b"\0\4\0",
        b"\0\7\0\0",
        b"\0\1pxelinux.0\0octet\0",
        data(1, b"x"),
        b"\0\6blksize\x00512\0",
        b"\xff" * 40,
    ],
)
def test_junk_from_peer_is_ignored(junk: bytes) -> None:
    s = session(content(600))
    s.start()
    assert s.receive(junk, PEER, T0 + 0.5) == []
    assert s.ignored == 1
    assert not s.done
    assert s.deadline == T0 + 1


# -- rollover ----------------------------------------------------------------------------


class Counting:
    """A cheap source of ``blocks`` 8-byte blocks, each holding its absolute number, then
    a 3-byte tail."""

    def __init__(self, blocks: int) -> None:
        self._data = io.BytesIO(
            b"".join(n.to_bytes(8, "big") for n in range(1, blocks + 1)) + b"end"
        )

    def read(self, size: int) -> bytes:
        return self._data.read(size)


@pytest.mark.parametrize("window", [1, 16])
def test_rollover_past_65535_blocks(window: int) -> None:
    full = 65540
    s = ReadSession(
        rrq(("blksize", "8"), ("windowsize", str(window))), PEER, Counting(full), None, T0
    )
    s.start()
    sends = to_peer(s.receive(ack(0), PEER, T0))
    wire: list[int] = []
    absolute = 0
    while sends:
        for packet in sends:
            wire.append(int.from_bytes(packet[2:4], "big"))
            absolute += 1
            if absolute <= full:
                assert packet[4:] == absolute.to_bytes(8, "big")
            else:
                assert packet[4:] == b"end"
        sends = to_peer(s.receive(ack(wire[-1]), PEER, T0))
    assert s.outcome is Outcome.COMPLETE
    assert absolute == full + 1
    assert wire[65533:65538] == [65534, 65535, 0, 1, 2]
    assert wire[-1] == (full + 1) & 0xFFFF
    assert s.blocks_sent == full + 1
    assert s.bytes_sent == full * 8 + 3


def test_acks_across_the_wrap_with_a_window() -> None:
    s = ReadSession(rrq(("blksize", "8"), ("windowsize", "8")), PEER, Counting(70000), None, T0)
    s.start()
    last = 0
    sends = to_peer(s.receive(ack(0), PEER, T0))
    while last < 65528:
        last += 8
        sends = to_peer(s.receive(ack(last), PEER, T0))
    # blocks 65529..65536 are out: wire 65529..65535, 0
    assert [int.from_bytes(p[2:4], "big") for p in sends] == [*range(65529, 65536), 0]
    # a stale ACK from before the wrap is a duplicate
    assert s.receive(ack(65528), PEER, T0) == []
    # a partial ACK of wire 65535 resends absolute 65536 (wire 0) and slides on
    sends = to_peer(s.receive(ack(65535), PEER, T0))
    assert [int.from_bytes(p[2:4], "big") for p in sends] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert sends[0][4:] == (65536).to_bytes(8, "big")
    assert s.retransmits == 1
    # ACK wire 3 = absolute 65539
    sends = to_peer(s.receive(ack(3), PEER, T0))
    assert [int.from_bytes(p[2:4], "big") for p in sends] == [4, 5, 6, 7, 8, 9, 10, 11]
    assert sends[-1][4:] == (65547).to_bytes(8, "big")


# -- modes, errors, abort ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mail", "binary", ""])
def test_bad_mode(mode: str) -> None:
    s = session(content(10), ("blksize", "1024"), mode=mode)
    assert s.start() == [b"\0\5\0\4unsupported mode " + repr(mode).encode() + b"\0"]
    assert (s.done, s.outcome, s.deadline) == (True, Outcome.BAD_MODE, math.inf)
    assert s.negotiated.acknowledged == ()


def test_netascii_mode() -> None:
    raw = b"line one\nline two\r\n" * 40
    wire = raw.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
    s = ReadSession(rrq(("tsize", "0"), mode="netascii"), PEER, Memory(raw), len(wire), T0)
    assert s.start() == [b"\0\6tsize\0" + str(len(wire)).encode() + b"\0"]
    got = []
    sends = to_peer(s.receive(ack(0), PEER, T0))
    while sends:
        got.append(sends[0][4:])
        sends = to_peer(s.receive(b"\0\4" + sends[0][2:4], PEER, T0))
    assert b"".join(got) == wire
    assert s.outcome is Outcome.COMPLETE


@pytest.mark.parametrize("fail_on", [1, 2])
def test_read_error(fail_on: int) -> None:
    s = ReadSession(rrq(), PEER, Memory(content(2000), fail_on=fail_on), 2000, T0)
    read_error = b"\0\5\0\0read error\0"
    if fail_on == 1:
        assert s.start() == [read_error]
    else:
        s.start()
        assert s.receive(ack(1), PEER, T0 + 1) == [(read_error, PEER)]
    assert (s.done, s.outcome, s.deadline) == (True, Outcome.READ_ERROR, math.inf)
    assert "Input/output error" in s.detail
    assert s.timeout(T0 + 5) == []


def test_read_error_while_resending_a_window() -> None:
    payload = content(20 * 512)
    s = ReadSession(rrq(("windowsize", "4")), PEER, Memory(payload, fail_on=5), len(payload), T0)
    s.start()
    assert len(s.receive(ack(0), PEER, T0)) == 4
    assert s.receive(ack(2), PEER, T0) == [(b"\0\5\0\0read error\0", PEER)]
    assert s.outcome is Outcome.READ_ERROR


def test_read_error_after_oack() -> None:
    s = ReadSession(rrq(("tsize", "0")), PEER, Memory(b"", fail_on=1), 0, T0)
    s.start()
    assert s.receive(ack(0), PEER, T0) == [(b"\0\5\0\0read error\0", PEER)]
    assert s.outcome is Outcome.READ_ERROR


def test_abort() -> None:
    s = session(content(2000))
    s.start()
    s.receive(ack(1), PEER, T0 + 1)
    assert s.abort("server shutting down") == [b"\0\5\0\0server shutting down\0"]
    assert (s.done, s.outcome, s.detail) == (True, Outcome.ABORTED, "server shutting down")
    assert (s.deadline, s.finished) == (math.inf, T0 + 1)
    assert s.abort("again") == []
    assert s.receive(ack(2), PEER, T0 + 2) == []
    assert s.timeout(T0 + 3) == []


def test_abort_after_completion_sends_nothing() -> None:
    s = session(b"")
    s.start()
    s.receive(ack(1), PEER, T0)
    assert s.outcome is Outcome.COMPLETE
    assert s.abort("bye") == []
    assert s.outcome is Outcome.COMPLETE


def test_write_request_is_refused() -> None:
    with pytest.raises(ValueError, match="serves RRQ, not WRQ"):
        ReadSession(Request(Opcode.WRQ, "f", "octet", ()), PEER, Memory(b""), 0, T0)
