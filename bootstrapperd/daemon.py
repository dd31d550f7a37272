"""The daemon's lifecycle: validate, bind everything (fail fast), serve, reload, stop gracefully.

Order, as uvicorn's server does it: everything that can be checked is checked before the first
socket is bound; every listener is bound before readiness is announced; SIGHUP swaps the model;
SIGTERM/SIGINT stop accepting, let requests in flight finish up to the grace period, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from aiohttp import web

from .bsroot.layout import Bsroot
from .bsroot.pki import ClusterPKI, PKIError
from .dhcp.backend import ModelBackend
from .dhcp.service import DHCPService
from .dns.service import DNSService
from .http import HTTPContext, create_admin_app, create_app
from .http.server import ConnectionGuard, GuardedSite
from .machines.events import Source
from .machines.leases import LeaseStore
from .machines.lifecycle import Lifecycle
from .machines.resolver import Resolver
from .machines.statedb import StateDB
from .machines.timeline import Timeline
from .machines.tokens import TokenStore
from .model import ClusterModel
from .model.holder import ModelHolder
from .ra.service import RouterAdvertiser
from .registry import RegistryService
from .render import Renderer
from .runtime import netif
from .runtime.errors import StartupError, cannot_listen
from .runtime.sdnotify import Notifier
from .tftp.service import TFTPService

__all__ = ["Daemon", "Listen", "StartupError", "resolve_listen", "run"]

STATE_DB = "bootstrapperd.db"
ADMIN_PATH_MAX = 108  # sun_path's size, with its terminating NUL


def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


log = logging.getLogger("bootstrapperd")
http_log = logging.getLogger("bootstrapperd.http")
registry_log = logging.getLogger("bootstrapperd.registry")


@dataclass(frozen=True)
class Listen:
    interface: str
    address: IPv4Address
    http_port: int


def resolve_listen(
    model: ClusterModel,
    interface: str | None,
    address: IPv4Address | None,
    http_port: int | None,
) -> Listen:
    """Where to serve. By default: the interface that holds the model's ``bootstrapper`` address."""
    port = http_port if http_port is not None else model.http_port
    if interface is not None and not netif.interface_exists(interface):
        raise StartupError(f"interface {interface!r} does not exist on this machine")
    if address is not None:
        holder = netif.interface_holding(address)
        if holder is None:
            raise StartupError(f"address {address} is not assigned to any interface here")
        if interface is not None and holder != interface:
            raise StartupError(f"address {address} is on interface {holder}, not {interface}")
        return Listen(holder, address, port)
    if interface is not None:
        addresses = netif.addresses_of(interface)
        if not addresses:
            raise StartupError(f"interface {interface!r} has no IPv4 address")
        for candidate in addresses:
            if candidate.ip == model.bootstrapper:
                return Listen(interface, model.bootstrapper, port)
        chosen = addresses[0].ip
        log.warning(
            "the bootstrapper address is not on the interface; serving on its first address",
            extra={
                "fields": {
                    "bootstrapper": model.bootstrapper,
                    "interface": interface,
                    "address": chosen,
                }
            },
        )
        return Listen(interface, chosen, port)
    holder = netif.interface_holding(model.bootstrapper)
    if holder is None:
        raise StartupError(
            f"no interface holds the bootstrapper address {model.bootstrapper} "
            f"(from {model.source}); assign it to the cluster-facing interface, "
            "or pass --interface / --address"
        )
    return Listen(holder, model.bootstrapper, port)


class Daemon:
    """Owns the services and their listeners: binds them all or none, stops them in order."""

    def __init__(
        self, holder: ModelHolder, listen: Listen, grace_period: float, bsroot: Bsroot
    ) -> None:
        self.holder = holder
        self.listen = listen
        self.grace_period = grace_period
        self.bsroot = bsroot
        self._runner: web.AppRunner | None = None
        self._admin: web.AppRunner | None = None
        self._db: StateDB | None = None
        self.dhcp: DHCPService | None = None
        self.ra: RouterAdvertiser | None = None
        self.tftp: TFTPService | None = None
        self.dns: DNSService | None = None
        self.http: HTTPContext | None = None
        self.registry: RegistryService | None = None
        self.resolver: Resolver | None = None
        self.lifecycle: Lifecycle | None = None

    async def start(self) -> None:
        pki = ClusterPKI(self.bsroot.tls)
        try:
            # The CA and the bootstrapper certificate at first start (pack may have made them),
            # every node's certificates now rather than at its first request.
            await asyncio.to_thread(pki.ensure_all, self.holder.model)
        except (PKIError, OSError) as exc:
            raise StartupError(f"tls: {exc}") from None
        try:
            self._db = StateDB(self.bsroot.state / STATE_DB)
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(
                f"state: cannot open {self.bsroot.state / STATE_DB}: {exc}"
            ) from None
        renderer = Renderer(self.bsroot, pki)
        timeline = Timeline(self._db, lambda mac: mac in self.holder.model.nodes_by_mac)
        lifecycle = Lifecycle(self._db, lambda: self.holder.model, record=timeline.record)
        timeline.on_event = lifecycle.observe
        self.lifecycle = lifecycle
        leases = LeaseStore(self._db)
        resolver = Resolver(lambda: self.holder.model, leases, lifecycle=lifecycle)
        self.resolver = resolver
        tokens = TokenStore(self._db)
        backend = ModelBackend(
            self.holder.model,
            leases,
            self.listen.address,
            self.listen.http_port,
            self.bsroot.tftpboot,
            Counter(),
        )
        self.dhcp = DHCPService(self.holder, self.listen.interface, backend, self._db, timeline)
        self.ra = RouterAdvertiser(self.holder, self.listen.interface)
        self.tftp = TFTPService(
            self.holder,
            self.listen.interface,
            self.listen.address,
            self.listen.http_port,
            self.bsroot,
            resolver,
            timeline,
            renderer,
            issue_token=lambda mac: tokens.issue(mac, time.time()),
            boot_action=lambda mac: lifecycle.booting(mac, Source.TFTP),
        )
        self.dns = DNSService(self.holder, self.listen.address, resolver)
        self.registry = RegistryService(
            self.holder, self.bsroot, self.listen.address, pki, grace=self.grace_period
        )
        self.http = HTTPContext(
            holder=self.holder,
            bsroot=self.bsroot,
            renderer=renderer,
            pki=pki,
            leases=leases,
            resolver=resolver,
            timeline=timeline,
            tokens=tokens,
            service_counters={
                "dhcp": lambda: self.dhcp.counters if self.dhcp is not None else {},
                "ra": lambda: self.ra.counters if self.ra is not None else {},
                "tftp": lambda: self.tftp.counters if self.tftp is not None else {},
                "dns": lambda: self.dns.counters if self.dns is not None else {},
                "tokens": lambda: tokens.counters,
                "lifecycle": lambda: lifecycle.counters,
                "model": lambda: self.holder.counters,
                "files": lambda: self.bsroot.refusals.events(),
            },
            registry=self.registry,
            lifecycle=lifecycle,
        )
        try:
            self.dhcp.start()
            self.ra.start()  # never fails the start: without IPv6 it logs why and stays idle
            self.tftp.start()
            await self.dns.start()
            await self._start_http()
            await self._start_admin()
        except BaseException:
            await self.stop()
            raise
        self.holder.subscribe(self._on_reload)
        await self._start_registry()

    async def _start_registry(self) -> None:
        """Last, and in the background: whatever the registry does, the rest keeps serving."""
        assert self.registry is not None  # noqa: S101 (invariant: start() made it)
        try:
            await self.registry.start()
        except Exception:
            registry_log.exception("cannot start the registry")

    async def _start_http(self) -> None:
        assert self.http is not None  # noqa: S101 (invariant: start() made it)
        guard = ConnectionGuard()  # connection caps, request-head deadline and size
        runner = web.AppRunner(
            create_app(self.http, guard),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.grace_period,
        )
        await runner.setup()
        site = GuardedSite(runner, str(self.listen.address), self.listen.http_port, guard)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.listen.address}:{self.listen.http_port}"
            raise cannot_listen("http", where, exc) from None
        self._runner = runner
        self.http.service_counters = {**self.http.service_counters, "http": lambda: guard.counters}
        http_log.info(
            "listening",
            extra={
                "fields": {
                    "service": "http",
                    "interface": self.listen.interface,
                    "address": self.listen.address,
                    "port": self.listen.http_port,
                }
            },
        )

    async def _start_admin(self) -> None:
        """The admin channel on ``state/admin.sock``, mode 0600 from its first moment (bound in
        a private directory, then moved into place). Never fails the start: without it the
        daemon serves, and the admin commands say the channel is not there."""
        assert self.http is not None  # noqa: S101 (invariant: start() made it)
        path = self.bsroot.admin_socket
        if len(os.fsencode(path)) >= ADMIN_PATH_MAX:
            log.warning("admin channel off: its socket path is too long", extra={"fields": {
                "path": str(path), "limit": ADMIN_PATH_MAX - 1}})  # fmt: skip
            return
        if path.is_socket() and _answers(path):
            log.warning("admin channel off: another daemon answers on it",
                        extra={"fields": {"path": str(path)}})  # fmt: skip
            return
        path.unlink(missing_ok=True)  # left by a crash
        private = Path(tempfile.mkdtemp(prefix=".admin-", dir=path.parent))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(private / "s"))
            os.chmod(private / "s", 0o600)
            os.rename(private / "s", path)
        except OSError as exc:
            sock.close()
            log.warning("admin channel off: %s", exc, extra={"fields": {"path": str(path)}})
            return
        finally:
            shutil.rmtree(private, ignore_errors=True)
        runner = web.AppRunner(
            create_admin_app(self.http), handle_signals=False, access_log=None, shutdown_timeout=1
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._admin = runner
        log.info("admin channel", extra={"fields": {"path": str(path), "mode": "0600"}})

    def _on_reload(self, old: ClusterModel, new: ClusterModel) -> None:
        if self.resolver is not None:
            for node_mac, address, holder in self.resolver.conflicts():
                log.warning(
                    "a reservation of the new description is leased to another machine: it "
                    "stays that machine's until its lease ends (its renewal is refused), and "
                    "the node gets nothing that is only for it from that address meanwhile",
                    extra={"fields": {"node": node_mac, "ip": address, "held_by": holder}},
                )
        if new.bootstrapper != old.bootstrapper or new.http_port != old.http_port:
            log.warning(
                "the bootstrapper address or http_port changed; listeners keep their sockets "
                "until restart",
                extra={"fields": {"address": self.listen.address, "port": self.listen.http_port}},
            )

    async def stop(self) -> None:
        # HTTP requests and TFTP transfers in flight finish together, within one grace period;
        # the registry stops meanwhile.
        await asyncio.gather(self._stop_http(), self._stop_tftp(), self._stop_registry())
        if self.dns is not None:
            await self.dns.stop()
            self.dns = None
        if self.ra is not None:
            await self.ra.stop()
        if self.dhcp is not None:
            await self.dhcp.stop()
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None

    async def _stop_http(self) -> None:
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
            self.bsroot.admin_socket.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _stop_registry(self) -> None:
        if self.registry is not None:
            try:
                await self.registry.stop()
            except Exception:  # never in the way of the other services' stop
                registry_log.exception("cannot stop the registry")
            self.registry = None

    async def _stop_tftp(self) -> None:
        if self.tftp is not None:
            await self.tftp.stop(self.grace_period)
            self.tftp = None


async def run(
    holder: ModelHolder, listen: Listen, grace_period: float, bsroot: Bsroot, notifier: Notifier
) -> int:
    """Serve until SIGTERM/SIGINT. Raises StartupError before anything is served."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    daemon = Daemon(holder, listen, grace_period, bsroot)
    await daemon.start()

    def reload() -> None:
        """SIGHUP: re-read the description. Always ends with READY=1, whatever the file holds:
        a file that does not load keeps the old model serving and says why in the log."""
        notifier.reloading()
        try:
            log.info("SIGHUP: reloading", extra={"fields": {"file": str(holder.path)}})
            holder.reload()
        except Exception:  # holder.reload() never raises; if it ever does, serving goes on
            log.exception(
                "reload failed; keeping the model loaded at generation %d", holder.generation
            )
        finally:
            notifier.ready(_status(holder))

    def stop(signame: str) -> None:
        if not stopping.is_set():
            log.info("%s: shutting down", signame, extra={"fields": {"grace": grace_period}})
        stopping.set()

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
    try:
        notifier.ready(_status(holder))
        log.info(
            "ready", extra={"fields": {"nodes": len(holder.model.nodes), "file": str(holder.path)}}
        )
        await stopping.wait()
        notifier.stopping()
    finally:
        await daemon.stop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0


def _status(holder: ModelHolder) -> str:
    return f"serving {len(holder.model.nodes)} nodes (model generation {holder.generation})"
