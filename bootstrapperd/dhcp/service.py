"""The DHCP service in the daemon: sockets on the serving interface, the model-backed policy,
one log line and one timeline event per transaction, reload without losing leases."""

from __future__ import annotations

import logging
import time
from collections import Counter

from protocols.dhcp.endpoint import DHCPEndpoint, open_socket
from protocols.dhcp.options import MessageType
from protocols.dhcp.packet import Packet
from protocols.dhcp.server import PXE_PORT, SERVER_PORT, UNSPECIFIED, DHCPServer, Outcome

from ..machines.events import EventKind, Source
from ..machines.statedb import StateDB
from ..machines.timeline import Timeline
from ..model import ClusterModel
from ..model.holder import ModelHolder
from ..model.types import DHCPMode
from ..runtime.errors import cannot_listen
from .backend import ModelBackend
from .boot import firmware_of

log = logging.getLogger("bootstrapperd.dhcp")


class DHCPService:
    def __init__(
        self,
        holder: ModelHolder,
        interface: str,
        backend: ModelBackend,
        db: StateDB,
        timeline: Timeline,
    ) -> None:
        self.holder = holder
        self.interface = interface
        self.backend = backend
        self.db = db
        self.timeline = timeline
        self.counters: Counter[str] = backend.counters
        self.mode = holder.model.dhcp.mode
        self._endpoints: list[DHCPEndpoint] = []

    def start(self) -> None:
        """Bind (fail fast with a StartupError) and start answering."""
        if self.mode is DHCPMode.OFF:
            log.info("dhcp is off (dhcp.mode: off, or Sextant's start_pxe: n)")
            return
        ports = [SERVER_PORT] + ([PXE_PORT] if self.mode is DHCPMode.PROXY else [])
        server = DHCPServer(self.backend)
        for port in ports:
            try:
                sock = open_socket(self.interface, port)
            except OSError as exc:
                hint = " — is another DHCP server (dnsmasq, dhcpd, kea) running here?"
                raise cannot_listen("dhcp", f"{self.interface}:{port}", exc, hint) from None
            endpoint = DHCPEndpoint(
                server,
                sock,
                interface=self.interface,
                port=port,
                flush=self.db.flush,
                observe=self._observe,
                counters=self.counters,
                logger=log,
            )
            endpoint.start()
            self._endpoints.append(endpoint)
            log.info(
                "listening",
                extra={
                    "fields": {
                        "service": "dhcp",
                        "mode": str(self.mode),
                        "interface": self.interface,
                        "port": port,
                        "leases": len(self.backend.leases),
                    }
                },
            )
        self.holder.subscribe(self._on_reload)

    def _on_reload(self, old: ClusterModel, new: ClusterModel) -> None:
        if new.dhcp.mode is not self.mode:
            log.warning(
                "dhcp.mode changed; it takes effect at the next restart",
                extra={"fields": {"running": str(self.mode), "new": str(new.dhcp.mode)}},
            )
            return
        self.backend.use(new)

    def _observe(self, outcome: Outcome, request: Packet) -> None:
        """One log line and one timeline event per transaction."""
        mac = request.mac
        kind = outcome.reply_type or outcome.request
        detail: dict[str, object] = {"xid": f"{request.xid:08x}"}
        if outcome.reply_type is not None:
            detail["request"] = outcome.request.name
        if outcome.address is not None:
            detail["ip"] = str(outcome.address)
        if outcome.boot is not None:
            detail["boot_file"] = outcome.boot.file
            firmware = firmware_of(request)
            if firmware is not None:
                detail["firmware"] = str(firmware)
        if request.giaddr != UNSPECIFIED:
            detail["relay"] = str(request.giaddr)
        detail.update(outcome.extra)
        if outcome.note:
            detail["note"] = outcome.note
        level = logging.WARNING if kind is MessageType.NAK else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s", kind.name, extra={"fields": {"mac": mac, **detail}})
        self.timeline.record(mac, time.time(), Source.DHCP, EventKind(kind.name.lower()), **detail)

    async def stop(self) -> None:
        """Stop reading and send every reply still waiting for its commit."""
        for endpoint in self._endpoints:
            await endpoint.close()
        self._endpoints.clear()
