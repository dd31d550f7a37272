"""Where a machine is in its boot, read off its timeline.

DHCP → boot file → iPXE script → kernel/initrd → install.sh → config → installed. The stage is
the furthest step of the current attempt; a new firmware PXE boot (a DHCP exchange that hands
out a TFTP boot file) after the machine got further starts a new attempt. A machine that is
installed and boots from its disk asks DHCP for an address only, and stays installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .. import routes
from .events import FAILURES, EventKind, Source


class Event(Protocol):
    """What a stage is read from (``timeline.Event`` is one)."""

    @property
    def at(self) -> float: ...

    @property
    def source(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def detail(self) -> Mapping[str, Any]: ...

    def as_dict(self) -> dict[str, Any]: ...


__all__ = ["NOT_SEEN", "STAGES", "Progress", "advance", "progress_of", "stage_of"]

STAGES = (
    "dhcp",
    EventKind.BOOT_FILE.value,
    EventKind.IPXE_SCRIPT.value,
    EventKind.KERNEL.value,
    EventKind.INSTALL_SH.value,
    "config",
    EventKind.INSTALLED.value,
)
DHCP, BOOT_FILE, IPXE_SCRIPT, KERNEL, INSTALL_SH, CONFIG, INSTALLED = range(len(STAGES))

_BOOT_BINARIES = (".kpxe", ".efi", ".pxe", ".0", ".com")
_HTTP_STAGES: dict[str, int] = {
    EventKind.BOOT_FILE: BOOT_FILE,
    EventKind.IPXE_SCRIPT: IPXE_SCRIPT,
    EventKind.CHAIN: IPXE_SCRIPT,
    EventKind.KERNEL: KERNEL,
    EventKind.INITRD: KERNEL,
    EventKind.INSTALL_SH: INSTALL_SH,
    EventKind.CLOUD_CONFIG: CONFIG,
    EventKind.IGNITION: CONFIG,
}


@dataclass(frozen=True, slots=True)
class Progress:
    stage: int  # index into STAGES; -1: never seen
    failed: bool  # the latest event is a failure
    last: Event | None

    @property
    def name(self) -> str | None:
        return STAGES[self.stage] if self.stage >= 0 else None


def _tftp_stage(name: str) -> int | None:
    lowered = name.lower()
    if lowered.startswith((routes.TFTP_IPXE_DIR, routes.TFTP_PXELINUX_DIR)):
        return IPXE_SCRIPT
    if lowered.endswith(".ipxe"):
        return IPXE_SCRIPT
    if lowered.startswith(routes.TFTP_STATIC_DIR):
        return KERNEL
    if lowered.endswith(_BOOT_BINARIES):
        return BOOT_FILE
    return None


def stage_of(event: Event) -> int | None:
    """The stage an event shows the machine has reached; None for events that show none."""
    if event.source == Source.DHCP:
        return DHCP if event.kind in (EventKind.OFFER, EventKind.ACK) else None
    if event.source == Source.TFTP:
        if event.kind != EventKind.TRANSFER:
            return None
        return _tftp_stage(str(event.detail.get("file", "")))
    if event.source == Source.HTTP:
        status = event.detail.get("status", 200)
        if not isinstance(status, int) or status >= 400:
            return None
        return _HTTP_STAGES.get(event.kind)
    if event.source == Source.INSTALL and event.kind == EventKind.INSTALLED:
        return INSTALLED
    if event.kind == EventKind.LOCAL_BOOT:
        return INSTALLED  # an installed machine's network boot, sent on to its disk
    return None


def _failure(event: Event) -> bool:
    if event.kind in FAILURES:
        return True
    status = event.detail.get("status") if event.source == Source.HTTP else None
    return isinstance(status, int) and status >= 400 and event.kind in _HTTP_STAGES


def _firmware_boot(event: Event) -> bool:
    boot = event.detail.get("boot_file") if event.source == Source.DHCP else None
    return event.kind == EventKind.ACK and isinstance(boot, str) and not boot.startswith("http")


NOT_SEEN = Progress(-1, False, None)


def advance(progress: Progress, event: Event) -> Progress:
    """The progress after one more event."""
    stage = progress.stage
    if _firmware_boot(event) and stage > DHCP:
        stage = DHCP  # booted from the network again: a new attempt
    else:
        reached = stage_of(event)
        if reached is not None and reached > stage:
            stage = reached
    return Progress(stage, _failure(event), event)


def progress_of(events: Iterable[Event]) -> Progress:
    progress = NOT_SEEN
    for event in events:
        progress = advance(progress, event)
    return progress
