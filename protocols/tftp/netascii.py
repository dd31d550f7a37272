"""Netascii (RFC 764 as used by RFC 1350) for files sent in ``netascii`` mode: each LF of
the local file becomes CR LF and each bare CR becomes CR NUL, so the wire form is the file's
size plus one byte per CR and per LF. Also the ``Source`` protocol a session reads from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

_CR = b"\r"
_LF = b"\n"
_CR_NUL = b"\r\0"
_CR_LF = b"\r\n"


class Source(Protocol):
    """Where a transfer's bytes come from: an open file, or anything read sequentially."""

    def read(self, size: int, /) -> bytes:
        """The next ``size`` bytes; fewer only at end of file. May raise ``OSError``."""
        ...


def _convert(raw: bytes) -> bytes:
    # CR first: the CRs that LF -> CR LF adds must not become CR NUL.
    return raw.replace(_CR, _CR_NUL).replace(_LF, _CR_LF)


class NetasciiReader:
    """A ``Source`` giving the netascii form of another ``Source``. Never reads more than
    ``size`` bytes ahead of what it returns; a CR NUL or CR LF pair split by a read is
    kept for the next one."""

    __slots__ = ("_eof", "_pending", "_source")

    def __init__(self, source: Source) -> None:
        self._source = source
        self._pending = b""
        self._eof = False

    def read(self, size: int, /) -> bytes:
        """Exactly ``size`` bytes of netascii, fewer only at end of file."""
        pending = self._pending
        while len(pending) < size and not self._eof:
            want = size - len(pending)
            raw = self._source.read(want)
            if len(raw) < want:
                self._eof = True
            pending += _convert(raw)
        self._pending = pending[size:]
        return pending[:size]


def netascii_size(chunks: Iterable[bytes]) -> int:
    """The size of the netascii form of the concatenation of ``chunks``."""
    return sum(len(c) + c.count(_CR) + c.count(_LF) for c in chunks)
