"""Keeping one registry instance running: launch it, wait until its API answers over verified
TLS, notice when it exits, restart it with backoff, and stop it on request.

What an instance is (a child process, a container) is behind two small interfaces, ``Launcher``
and ``Instance``; the loop here is the same for both. The registry's own log lines (logrus text)
are re-logged through ``bootstrapperd.registry`` with their level, so an operator reads one log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp

__all__ = [
    "Instance",
    "LaunchError",
    "Launcher",
    "RegistryOutput",
    "Supervisor",
    "probe",
]

log = logging.getLogger("bootstrapperd.registry")

# A run that lasted this long was healthy: the next restart starts from the shortest delay.
STABLE_RUN = 60.0
PROBE_INTERVAL = 0.2
PROBE_TIMEOUT = 3.0
SLOW_START = 30.0  # warn once when an instance has not answered for this long

_LOGRUS_FIELD = re.compile(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S*)')
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}
# Fields every line repeats: they say nothing about the event.
_NOISE = {"time", "level", "msg", "go.version", "instance.id", "version", "service"}
# Start-up chatter of distribution 2.8 that says nothing an operator acts on: at debug.
_CHATTER = (
    "redis not configured",
    "restricting TLS",
    "Starting upload purge",
    "PurgeUploads starting",
    "Purge uploads finished",
)
# Per-request lines: the detail an operator may want, at debug.
_REQUEST_FIELDS = (
    "http.request.method",
    "http.request.uri",
    "http.response.status",
    "http.request.remoteaddr",
    "http.response.duration",
)


class LaunchError(Exception):
    """The instance could not be started; the message says why and what to do."""


class Instance(Protocol):
    """One running registry (a process or a container) that this daemon started."""

    def describe(self) -> dict[str, object]:
        """What identifies it (pid, container id), for the status page."""
        ...

    async def wait(self) -> str:
        """Return, once it has exited, how it ended ("exit status 2 …")."""
        ...

    async def terminate(self, grace: float) -> None:
        """Stop it (politely, then by force after ``grace`` seconds); idempotent."""
        ...


class Launcher(Protocol):
    name: str

    async def launch(self) -> Instance:
        """Start an instance; raises LaunchError."""
        ...

    async def close(self) -> None:
        """Release what the launcher holds (an engine connection); instances are stopped first."""
        ...


class RegistryOutput:
    """Re-logs the registry's output lines and keeps the last few for the exit report."""

    def __init__(self, source: str, keep: int = 20) -> None:
        self.source = source
        self.tail: deque[str] = deque(maxlen=keep)

    def feed(self, raw: str) -> None:
        line = raw.rstrip("\r\n")
        if not line.strip():
            return
        self.tail.append(line)
        fields = dict(_LOGRUS_FIELD.findall(line))
        if "level" not in fields or "msg" not in fields:
            # Not logrus: Go runtime output, a panic's stack, a shell's complaint.
            log.info("%s", line, extra={"fields": {"source": self.source}})
            return
        level = _LEVELS.get(fields["level"].lower(), logging.INFO)
        message = _unquote(fields["msg"])
        extra: dict[str, object] = {"source": self.source}
        if message.startswith("response completed"):
            # One line per request. A 4xx is the client's business (a HEAD for a blob the
            # registry lacks is how every push starts); only a 5xx is the registry's problem.
            status = _unquote(fields.get("http.response.status", "0"))
            level = logging.WARNING if status.startswith("5") else logging.DEBUG
            extra.update({k: _unquote(fields[k]) for k in _REQUEST_FIELDS if k in fields})
            if "err.message" in fields:
                extra["error"] = _unquote(fields["err.message"])
        else:
            extra.update({k: _unquote(v) for k, v in fields.items() if k not in _NOISE})
            if level == logging.INFO and message.startswith(_CHATTER):
                level = logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "registry: %s", message, extra={"fields": extra})


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


async def probe(
    session: aiohttp.ClientSession,
    base_url: str,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None,
) -> str | None:
    """None when ``GET <base>/v2/`` answers as a registry (200, or 401 when it asks for
    credentials), else why not."""
    try:
        async with session.get(
            f"{base_url}/v2/",
            ssl=ssl_context,
            server_hostname=server_hostname,
            timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT),
            allow_redirects=False,
        ) as response:
            if response.status in (200, 401):
                return None
            return f"GET /v2/ answered HTTP {response.status}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


StateCallback = Callable[[str, str | None], None]


class Supervisor:
    """Runs ``launcher``'s instances until stopped: ``on_state(state, detail)`` hears
    starting → ready → restarting (or failed, when a launch fails) as they happen."""

    def __init__(
        self,
        launcher: Launcher,
        answers: Callable[[], Awaitable[str | None]],
        on_state: StateCallback,
        *,
        grace: float = 5.0,
        min_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        self.launcher = launcher
        self.answers = answers
        self.on_state = on_state
        self.grace = grace
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.instance: Instance | None = None
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"registry-{self.launcher.name}")

    async def stop(self) -> None:
        """Stop supervising first (an exit we cause is not a crash), then the instance."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            if self.instance is not None:
                await self.instance.terminate(self.grace)
                self.instance = None
        finally:
            await self.launcher.close()

    async def _run(self) -> None:
        delay = self.min_delay
        while True:
            started = time.monotonic()
            try:
                self.instance = await self.launcher.launch()
            except LaunchError as exc:
                self.on_state("failed", str(exc))
                log.error(
                    "cannot start the registry: %s",
                    exc,
                    extra={"fields": {"backend": self.launcher.name, "retry_in": delay}},
                )
            else:
                self.on_state("starting", None)
                try:
                    ended = await self._watch(self.instance)
                except Exception as exc:  # a bug here must not leave an unwatched registry
                    log.exception("lost track of the registry; stopping it")
                    await self.instance.terminate(self.grace)
                    ended = f"internal error: {type(exc).__name__}: {exc}"
                else:
                    await self.instance.terminate(self.grace)  # reap it / remove its container
                self.instance = None
                self.restarts += 1
                self.on_state("restarting", ended)
                log.error(
                    "the registry exited unexpectedly: %s",
                    ended,
                    extra={
                        "fields": {
                            "backend": self.launcher.name,
                            "restarts": self.restarts,
                            "retry_in": delay,
                        }
                    },
                )
            if time.monotonic() - started >= STABLE_RUN:
                delay = self.min_delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    async def _watch(self, instance: Instance) -> str:
        """Wait until the instance answers (then report ready), and until it exits."""
        exited = asyncio.ensure_future(instance.wait())
        try:
            began = time.monotonic()
            warned = False
            while not exited.done():
                why = await self.answers()
                if why is None:
                    self.on_state("ready", None)
                    log.info(
                        "registry ready",
                        extra={"fields": {"backend": self.launcher.name, **instance.describe()}},
                    )
                    break
                if not warned and time.monotonic() - began > SLOW_START:
                    warned = True
                    log.warning(
                        "the registry runs but does not answer yet: %s",
                        why,
                        extra={"fields": {"backend": self.launcher.name}},
                    )
                await asyncio.wait({exited}, timeout=PROBE_INTERVAL)
            return await exited
        finally:
            if not exited.done():
                exited.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exited
