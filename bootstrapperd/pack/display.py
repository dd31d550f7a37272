"""What ``bootstrapperd-pack`` shows while it downloads: plain lines for logs, pipes and CI, or a
live bar per transfer on a terminal (tqdm). A :class:`Progress` is the downloader's
:class:`~bootstrapperd.download.fetcher.Observer`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Never, TextIO

from tqdm import tqdm

from ..download.fetcher import human

__all__ = ["Progress", "TerminalProgress"]


class _Bar:
    """One live bar on a terminal; gives its line back when closed."""

    def __init__(self, bar: tqdm[Never], release: Callable[[], None]) -> None:
        self._bar = bar
        self._release = release
        self._closed = False

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bar.close()
            self._release()


class Progress:
    """Plain lines, one per event and never a carriage return: for logs, pipes and CI.

    :meth:`for_stream` picks :class:`TerminalProgress` (live bars) for a terminal, unless
    ``force_plain`` or ``TERM=dumb``.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    @classmethod
    def for_stream(cls, stream: TextIO, *, force_plain: bool = False) -> Progress:
        if force_plain or os.environ.get("TERM") == "dumb":
            return Progress(stream)
        try:
            interactive = stream.isatty()
        except (AttributeError, ValueError):  # no isatty, or closed
            interactive = False
        return TerminalProgress(stream) if interactive else Progress(stream)

    def line(self, text: str) -> None:
        """A permanent line; callers print through this too so that bars are not torn."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def fetching(self, label: str, url: str) -> None:
        self.line(f"fetching {label} {url}")

    def resuming(self, label: str, offset: int) -> None:
        self.line(f"resuming {label} at {human(offset)}")

    def restarting(self, label: str, why: str) -> None:
        self.line(f"restarting {label} from the beginning: {why}")

    def retrying(self, label: str, delay: float, attempt: int, attempts: int, reason: str) -> None:
        self.line(f"retrying {label} in {delay:.1f} s (attempt {attempt}/{attempts}): {reason}")

    def have(self, label: str, how: str) -> None:
        self.line(f"have {label} ({how})")

    def fetched(self, label: str, transferred: int, seconds: float) -> None:
        rate = transferred / seconds if seconds > 0 else 0.0
        self.line(f"fetched {label} {human(transferred)} in {seconds:.1f} s ({human(rate)}/s)")

    def bar(self, label: str, total: int | None, done: int) -> _Bar | None:
        """A live bar for one transfer; None: this kind of output has none."""
        return None


class TerminalProgress(Progress):
    """A bar per transfer in flight, each on its own line, and a permanent line per file done.
    Lines go through ``tqdm.write`` so that they scroll above the bars instead of through them.
    """

    _LABEL_WIDTH = 32

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: set[int] = set()

    def line(self, text: str) -> None:
        tqdm.write(text, file=self.stream)
        self.stream.flush()

    # The bar shows what is being fetched and from where it starts: no line needed.
    def fetching(self, label: str, url: str) -> None:
        return

    def resuming(self, label: str, offset: int) -> None:
        return

    def bar(self, label: str, total: int | None, done: int) -> _Bar:
        # The lowest free line, so that a finished bar's line is reused and parallel bars
        # never draw over each other.
        position = next(n for n in range(len(self._lines) + 1) if n not in self._lines)
        self._lines.add(position)
        if len(label) > self._LABEL_WIDTH:
            label = "…" + label[-(self._LABEL_WIDTH - 1) :]
        bar = tqdm(
            desc=label,
            total=total,
            initial=done,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            leave=False,
            position=position,
            file=self.stream,
            dynamic_ncols=True,
            mininterval=0.2,
        )
        return _Bar(bar, lambda: self._lines.discard(position))
