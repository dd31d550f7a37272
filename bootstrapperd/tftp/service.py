"""The TFTP service in the daemon: port 69 on the bootstrapper's address, files from
``bsroot/tftpboot`` and the model's boot scripts, one log line and one timeline event per
transfer (when the client's MAC is known from its lease or its static address)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from protocols.tftp.endpoint import (
    MAX_PER_SOURCE,
    MAX_TRANSFERS,
    SERVER_PORT,
    Report,
    TFTPEndpoint,
    open_socket,
)

from ..bsroot.layout import Bsroot
from ..machines.boot import BootAction
from ..machines.events import EventKind, Source
from ..machines.resolver import Resolver
from ..machines.timeline import Timeline
from ..model.holder import ModelHolder
from ..render import Renderer
from ..routes import base_url
from ..runtime.errors import cannot_listen
from ..runtime.fdlimit import FD_RESERVE, FDS_PER_TRANSFER, raise_fd_limit, transfer_cap
from .files import TFTPFiles

log = logging.getLogger("bootstrapperd.tftp")

IP_UDP_TFTP_HEADERS = 20 + 8 + 4
DEFAULT_MTU = 1500


def interface_mtu(interface: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{interface}/mtu").read_text())
    except (OSError, ValueError):
        return DEFAULT_MTU


class TFTPService:
    def __init__(
        self,
        holder: ModelHolder,
        interface: str,
        address: IPv4Address,
        http_port: int,
        bsroot: Bsroot,
        resolver: Resolver,
        timeline: Timeline,
        renderer: Renderer,
        issue_token: Callable[[str], str] | None = None,
        boot_action: Callable[[str], BootAction | None] | None = None,
    ) -> None:
        self.holder = holder
        self.interface = interface
        self.address = address
        self.resolver = resolver
        self.timeline = timeline
        self.counters: Counter[str] = Counter()
        server = base_url(address, http_port)
        self.files = TFTPFiles(
            bsroot, lambda: holder.model, server, renderer, issue_token, boot_action
        )
        self._endpoint: TFTPEndpoint | None = None

    def start(self, port: int = SERVER_PORT) -> None:
        """Bind port 69 (fail fast with a StartupError) and start serving."""
        where = f"{self.address}:{port}"
        try:
            sock = open_socket(str(self.address), port)
        except OSError as exc:
            hint = " — is another TFTP server (dnsmasq, tftpd-hpa, atftpd) running here?"
            raise cannot_listen("tftp", where, exc, hint) from None
        # The largest block that fits one unfragmented datagram on this interface.
        max_blksize = interface_mtu(self.interface) - IP_UDP_TFTP_HEADERS
        max_transfers = self._transfer_cap()
        self._endpoint = TFTPEndpoint(
            sock,
            self.files,
            report=self._report,
            counters=self.counters,
            logger=log,
            max_blksize=max_blksize,
            max_transfers=max_transfers,
        )
        self._endpoint.start()
        log.info(
            "listening",
            extra={
                "fields": {
                    "service": "tftp",
                    "address": self.address,
                    "port": port,
                    "root": str(self.files.bsroot.tftpboot),
                    "max_blksize": max_blksize,
                    "max_transfers": max_transfers,
                    "max_per_source": MAX_PER_SOURCE,
                }
            },
        )

    def _transfer_cap(self) -> int:
        """Raise the descriptor limit and derive the transfer cap from it (logged)."""
        limit = raise_fd_limit()
        cap = transfer_cap(limit.soft, MAX_TRANSFERS)
        level = logging.WARNING if cap < MAX_TRANSFERS else logging.INFO
        log.log(
            level,
            "file descriptors: %s",
            "enough for every transfer slot"
            if cap == MAX_TRANSFERS
            else "too few for every transfer slot: raise LimitNOFILE",
            extra={
                "fields": {
                    "nofile_soft_before": limit.before,
                    "nofile_soft": limit.soft,
                    "nofile_hard": limit.hard,
                    "fds_per_transfer": FDS_PER_TRANSFER,
                    "fd_reserve": FD_RESERVE,
                    "max_transfers": cap,
                }
            },
        )
        return cap

    @property
    def active(self) -> int:
        return self._endpoint.active if self._endpoint is not None else 0

    async def stop(self, grace: float) -> None:
        """Take no new requests; let transfers in flight finish for up to ``grace`` seconds."""
        if self._endpoint is not None:
            await self._endpoint.close(grace)
            self._endpoint = None

    def _report(self, report: Report) -> None:
        client = f"{report.peer[0]}:{report.peer[1]}"
        machine = self.resolver.at(report.peer[0])
        mac = machine.mac if machine is not None else None
        fields: dict[str, object] = {"client": client, "file": report.filename}
        if mac is not None:
            fields["mac"] = mac
        if report.outcome == "refused":
            fields["error"] = report.error_code
            fields["reason"] = report.detail
            missing = report.error_code == 1
            # pxelinux probes pxelinux.cfg/<uuid>, /<hex ip>… before its default: expected.
            probe = missing and report.filename.startswith("pxelinux.cfg/")
            level = logging.INFO if probe else logging.WARNING
            log.log(level, "not found" if missing else "refused", extra={"fields": fields})
            kind = EventKind.NOT_FOUND if missing else EventKind.REFUSED
            detail: dict[str, object] = {"file": report.filename, "error": report.detail}
        else:
            rate = report.bytes_sent / report.duration / 2**20 if report.duration > 0 else 0.0
            options = " ".join(f"{name}={value}" for name, value in report.options)
            fields.update(
                size=report.size,
                sent=report.bytes_sent,
                options=options or None,
                mode=report.mode,
                duration=round(report.duration, 3),
                mib_per_s=round(rate, 1),
            )
            if report.retransmits:
                fields["retransmits"] = report.retransmits
            if report.detail:
                fields["detail"] = report.detail
            level = logging.INFO if report.ok else logging.WARNING
            log.log(level, "transfer %s", report.outcome, extra={"fields": fields})
            kind = EventKind.TRANSFER if report.ok else EventKind.TRANSFER_FAILED
            detail = {
                "file": report.name or report.filename,
                "size": report.size,
                "outcome": report.outcome,
                "duration": round(report.duration, 3),
            }
        if mac is not None:
            self.timeline.record(mac, time.time(), Source.TFTP, kind, **detail)
