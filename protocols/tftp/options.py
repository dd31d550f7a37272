"""TFTP option negotiation (RFC 2347): which of a client's options the server accepts, and
with what values. Understood: ``blksize`` (RFC 2348), ``timeout`` and ``tsize`` (RFC 2349),
``windowsize`` (RFC 7440). Anything else, and any value that is not a plain decimal in
range, is ignored; negotiation never fails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
DEFAULT_BLKSIZE = 512
MIN_TIMEOUT = 1
MAX_TIMEOUT = 255
MAX_WINDOWSIZE = 65535

_HUGE = 10**20
"""Stands in for a decimal too long to be worth converting (it is out of every range)."""


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The parameters of one transfer after negotiation."""

    blksize: int
    timeout: float
    """Retransmission interval, seconds."""
    windowsize: int
    tsize: int | None
    """The size we told the client, if we acknowledged ``tsize``."""
    acknowledged: tuple[tuple[str, str], ...]
    """What goes in the OACK, in request order; empty means no OACK."""


def _decimal(value: str) -> int | None:
    """``value`` as a non-negative integer, when it is only ASCII digits."""
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0")
    return _HUGE if len(digits) > 20 else int(digits or "0")


def negotiate(
    options: Sequence[tuple[str, str]],
    *,
    file_size: int | None,
    max_blksize: int,
    max_window: int,
    max_window_bytes: int,
    default_timeout: float,
) -> Negotiated:
    """Accept the understood options of a request. Names are compared case-insensitively
    and the first occurrence of a name decides (a later repeat is ignored even when the
    first had a bad value). ``blksize`` below 8 is ignored, larger ones are lowered to
    ``max_blksize``; ``timeout`` must be 1..255 s; ``tsize`` is answered with ``file_size``
    and ignored when that is unknown; ``windowsize`` (1..65535) is lowered to ``max_window``
    and so that a window holds at most ``max_window_bytes`` (never below one block)."""
    blksize = DEFAULT_BLKSIZE
    timeout = default_timeout
    tsize: int | None = None
    window: int | None = None
    seen: set[str] = set()
    accepted: list[tuple[str, str | None]] = []
    for raw_name, value in options:
        name = raw_name.lower()
        if name in seen:
            continue
        seen.add(name)
        number = _decimal(value)
        if number is None:
            continue
        if name == "blksize":
            if number < MIN_BLKSIZE:
                continue
            blksize = min(number, max_blksize, MAX_BLKSIZE)
            accepted.append((name, str(blksize)))
        elif name == "timeout":
            if not MIN_TIMEOUT <= number <= MAX_TIMEOUT:
                continue
            timeout = float(number)
            accepted.append((name, str(number)))
        elif name == "tsize":
            if file_size is None:
                continue
            tsize = file_size
            accepted.append((name, str(file_size)))
        elif name == "windowsize":
            if not 1 <= number <= MAX_WINDOWSIZE:
                continue
            window = number
            accepted.append((name, None))  # filled in once blksize is known
    windowsize = 1
    if window is not None:
        windowsize = max(1, min(window, max_window, max_window_bytes // blksize))
    return Negotiated(
        blksize=blksize,
        timeout=timeout,
        windowsize=windowsize,
        tsize=tsize,
        acknowledged=tuple(
            (name, str(windowsize) if value is None else value) for name, value in accepted
        ),
    )
