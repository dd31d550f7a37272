"""The container registry on the bootstrapper: a CNCF distribution registry serving at
``<dockerdomain>:5000`` with the bootstrapper certificate and its storage under
``bsroot/state/registry/``, filled from ``bsroot/images/*.tar``.

``RegistryService.start()`` returns at once: choosing a backend, starting and supervising the
registry, and pushing all run as background tasks, so nothing here can delay or break DHCP,
TFTP, DNS or HTTP. Backends (``registry.mode``): ``docker`` (the registry image run by a Docker
engine through aiodocker), ``binary`` (a ``registry``/``docker-registry`` program as a child
process), ``external`` (someone else's registry at ``registry.url``; only pushed to), ``auto``
(docker if an engine answers, else the binary) and ``off``.

A reload does not restart the registry: a changed ``registry`` block or ``dockerdomain`` is
logged and applies at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from ..bsroot.layout import Bsroot, write_atomically
from ..bsroot.pki import ClusterPKI, PKIError
from ..model import ClusterModel, RegistryMode
from ..model.holder import ModelHolder
from ..model.images import REGISTRY_PORT, registry_name
from .binary import BinaryLauncher
from .config import (
    CONTAINER_CERT_DIR,
    CONTAINER_DATA,
    BackendChoice,
    RegistryFiles,
    ServerConfig,
    choose_backend,
    docker_endpoint,
    find_binary,
    render_config,
)
from .engine import EngineLauncher, engine_answers
from .pushing import BLOB_RESULTS, STATES, Pusher, PushTarget
from .supervisor import Launcher, Supervisor, probe

__all__ = ["REGISTRY_ARCHIVE", "RegistryService", "absent_status"]

log = logging.getLogger("bootstrapperd.registry")

# The archive holding the registry image itself, for the Docker backend to load.
REGISTRY_ARCHIVE = "registry.tar"
EXTERNAL_CHECK_UP = 30.0  # how often an external registry that answers is asked again
EXTERNAL_CHECK_DOWN = 5.0
_NO_IMAGES = dict.fromkeys(STATES, 0)
_NO_BLOBS = dict.fromkeys(BLOB_RESULTS, 0)


def absent_status() -> dict[str, Any]:
    """``status()``'s shape when there is no registry service at all (an app without one)."""
    return {
        "mode": None,
        "backend": None,
        "state": "off",
        "up": False,
        "detail": "no registry service in this process",
        "registry": None,
        "endpoint": None,
        "instance": None,
        "restarts": 0,
        "restart_pending": False,
        "push_done": False,
        "counts": dict(_NO_IMAGES),
        "blobs": dict(_NO_BLOBS),
        "archives": [],
    }


class RegistryService:
    """The registry's lifecycle and what it reports (``status()``, ``up``, counts)."""

    def __init__(
        self,
        holder: ModelHolder,
        bsroot: Bsroot,
        address: IPv4Address,
        pki: ClusterPKI,
        *,
        grace: float = 5.0,
        restart_delay: float = 1.0,
        retry_delay: float = 30.0,
        push_rounds: int = 4,
        push_retries: int = 2,
        environ: Mapping[str, str] | None = None,
        engine_check: Callable[[str | None], Awaitable[bool]] = engine_answers,
        binary_lookup: Callable[[], str | None] = find_binary,
    ) -> None:
        self.holder = holder
        self.bsroot = bsroot
        self.address = address
        self.pki = pki
        self.files = RegistryFiles.of(bsroot)
        self.grace = grace
        self.restart_delay = restart_delay
        self.retry_delay = retry_delay
        self.push_rounds = push_rounds
        self.push_retries = push_retries
        self.environ = os.environ if environ is None else environ
        self.engine_check = engine_check
        self.binary_lookup = binary_lookup
        model = holder.model
        self.mode = model.registry.mode
        self.registry_name = registry_name(model)
        self.endpoint: str | None = None  # where pushes and probes go
        self.backend: str | None = None
        self.state = "off" if self.mode is RegistryMode.OFF else "starting"
        self.detail: str | None = None
        self.restart_pending = False
        self._started_with = model
        self._ready = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._supervisor: Supervisor | None = None
        self._pusher: Pusher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = False

    # -- Lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Returns at once; the registry comes up (or says why not) in the background."""
        if not self._subscribed:
            self.holder.subscribe(self._on_reload)
            self._subscribed = True
        self._spawn(self._run(), "registry")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: say so, keep the daemon serving
            self.detail = f"internal error: {type(exc).__name__}: {exc}"
            if task.get_name() == "registry":
                self._set_state("failed", self.detail)
            log.error("registry task %s failed", task.get_name(), exc_info=exc)

    async def stop(self) -> None:
        """Cancel pushes and supervision, then stop the instance we started (only that)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._supervisor is not None:
            try:
                await self._supervisor.stop()
            finally:
                self._supervisor = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._ready.clear()
        if self.state not in ("off", "unavailable"):
            self.state = "stopped"

    async def _run(self) -> None:
        model = self._started_with
        config = model.registry
        if config.mode is RegistryMode.OFF:
            log.info("registry off (registry.mode: off)")
            return
        choice = await choose_backend(
            config.mode,
            engine_answers=lambda: self.engine_check(docker_endpoint(self.environ)),
            binary=self.binary_lookup,
        )
        if choice.backend is None:
            self._set_state("unavailable", choice.reason)
            log.error("no registry: %s", choice.reason)
            return
        self.backend = choice.backend
        log.info(
            "registry backend chosen",
            extra={
                "fields": {"mode": config.mode, "backend": choice.backend, "why": choice.reason}
            },
        )
        try:
            target, launcher = await self._prepare(model, choice)
        except (OSError, PKIError, ssl.SSLError) as exc:
            self._set_state("failed", f"cannot prepare the registry: {exc}")
            log.error("cannot prepare the registry: %s", exc)
            return
        self.endpoint = target.base_url
        self.registry_name = target.registry_name
        self._session = aiohttp.ClientSession()
        session = self._session

        async def answers() -> str | None:
            return await probe(session, target.base_url, target.ssl, target.server_hostname)

        self._pusher = Pusher(
            self.bsroot.images,
            target,
            session,
            self._ready,
            rounds=self.push_rounds,
            retry_delay=self.retry_delay,
            push_retries=self.push_retries,
        )
        await asyncio.to_thread(self._pusher.scan)
        self._spawn(self._pusher.run(), "registry-push")
        if launcher is None:
            await self._watch_external(answers)
            return
        self._supervisor = Supervisor(
            launcher,
            answers,
            self._set_state,
            grace=self.grace,
            min_delay=self.restart_delay,
        )
        self._supervisor.start()

    async def _prepare(
        self, model: ClusterModel, choice: BackendChoice
    ) -> tuple[PushTarget, Launcher | None]:
        ca = self.bsroot.tls / "ca.pem"
        if choice.backend == "external":
            assert model.registry.url is not None  # noqa: S101 (invariant) — the model requires it in mode external
            url = URL(model.registry.url)
            context = await asyncio.to_thread(_system_and_ca, ca)
            name = url.raw_authority if url.explicit_port else (url.raw_host or "")
            return PushTarget(str(url).rstrip("/"), name, context, None), None
        issued = await asyncio.to_thread(self.pki.bootstrapper, model)
        context = await asyncio.to_thread(ssl.create_default_context, cafile=str(ca))
        await asyncio.to_thread(self._write_config, choice, issued.cert_path, issued.key_path)
        target = PushTarget(
            f"https://{self.address}:{REGISTRY_PORT}",
            self.registry_name,
            context,
            model.dockerdomain,
        )
        launcher: Launcher
        if choice.backend == "binary":
            assert choice.binary is not None  # noqa: S101 (invariant: backend "binary" has one)
            launcher = BinaryLauncher(choice.binary, self.files, self.grace)
        else:
            launcher = EngineLauncher(
                docker_endpoint(self.environ),
                model.registry.image,
                self.bsroot.images / REGISTRY_ARCHIVE,
                self.files,
                issued.cert_path,
                issued.key_path,
                str(self.bsroot.root),
            )
        return target, launcher

    def _write_config(self, choice: BackendChoice, cert: Path, key: Path) -> None:
        self.files.data.mkdir(parents=True, exist_ok=True)
        if choice.backend == "docker":
            data, cert_path, key_path = (
                CONTAINER_DATA,
                f"{CONTAINER_CERT_DIR}/{cert.name}",
                f"{CONTAINER_CERT_DIR}/{key.name}",
            )
        else:
            data, cert_path, key_path = str(self.files.data), str(cert), str(key)
        config = ServerConfig(
            addr=f"{self.address}:{REGISTRY_PORT}",
            rootdirectory=data,
            certificate=cert_path,
            key=key_path,
            secret=secrets.token_hex(32),
        )
        # 0600: the file holds the upload-signing secret.
        write_atomically(self.files.config, render_config(config).encode(), mode=0o600)

    async def _watch_external(self, answers: Callable[[], Awaitable[str | None]]) -> None:
        """Someone else runs it: only watch whether it answers."""
        while True:
            why = await answers()
            if why is None and not self._ready.is_set():
                self._set_state("ready", None)
                log.info("external registry answers", extra={"fields": {"url": self.endpoint}})
            elif why is not None and (self._ready.is_set() or self.state == "starting"):
                self._set_state("unreachable", why)
                log.error(
                    "the external registry does not answer: %s",
                    why,
                    extra={"fields": {"url": self.endpoint}},
                )
            await asyncio.sleep(EXTERNAL_CHECK_UP if why is None else EXTERNAL_CHECK_DOWN)

    def _set_state(self, state: str, detail: str | None) -> None:
        self.state = state
        self.detail = detail
        if state == "ready":
            self._ready.set()
        else:
            self._ready.clear()

    def _on_reload(self, old: ClusterModel, new: ClusterModel) -> None:
        before = self._started_with
        if new.registry != before.registry or new.dockerdomain != before.dockerdomain:
            self.restart_pending = True
            log.warning(
                "the registry settings changed; they apply when bootstrapperd is restarted",
                extra={
                    "fields": {
                        "mode": new.registry.mode,
                        "running": self.backend or self.state,
                    }
                },
            )
        elif self.restart_pending:
            self.restart_pending = False
            log.info("the registry settings are back to those in use")

    # -- What it reports ----------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._ready.is_set()

    @property
    def restarts(self) -> int:
        return self._supervisor.restarts if self._supervisor is not None else 0

    def image_counts(self) -> dict[str, int]:
        return self._pusher.image_counts() if self._pusher is not None else dict(_NO_IMAGES)

    def blob_counts(self) -> dict[str, int]:
        blobs = self._pusher.blobs if self._pusher is not None else {}
        return {k: blobs.get(k, 0) for k in BLOB_RESULTS}

    @property
    def push_done(self) -> bool:
        """Every archive has been pushed, found present, or given up on."""
        return self._pusher is not None and self._pusher.done.is_set()

    def status(self) -> dict[str, Any]:
        instance = None
        if self._supervisor is not None and self._supervisor.instance is not None:
            instance = self._supervisor.instance.describe()
        archives = list(self._pusher.archives.values()) if self._pusher is not None else []
        return {
            "mode": str(self.mode),
            "backend": self.backend,
            "state": self.state,
            "up": self.up,
            "detail": self.detail,
            "registry": self.registry_name,
            "endpoint": self.endpoint,
            "instance": instance,
            "restarts": self.restarts,
            "restart_pending": self.restart_pending,
            "push_done": self.push_done,
            "counts": self.image_counts(),
            "blobs": self.blob_counts(),
            "archives": [archive.to_json() for archive in archives],
        }


def _system_and_ca(ca: Path) -> ssl.SSLContext:
    """The system's CAs plus the cluster's: an external registry may use either."""
    context = ssl.create_default_context()
    with contextlib.suppress(FileNotFoundError):
        context.load_verify_locations(cafile=str(ca))
    return context
