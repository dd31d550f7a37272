"""The binary backend: ``<registry> serve config.yml`` as a child process of the daemon.

Only the process this daemon started is ever signalled: by the PID asyncio gave us, or, for a
child left behind by a previous run that was killed outright, by the PID in our pidfile and only
when that process's command line is exactly ours (same program, same config file).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from .config import RegistryFiles
from .supervisor import LaunchError, RegistryOutput

__all__ = ["BinaryLauncher", "ChildInstance"]

log = logging.getLogger("bootstrapperd.registry")


class ChildInstance:
    def __init__(self, proc: asyncio.subprocess.Process, argv: list[str], pidfile: Path) -> None:
        self.proc = proc
        self.argv = argv
        self.pidfile = pidfile
        self.output = RegistryOutput(Path(argv[0]).name)
        self._reader = asyncio.create_task(self._read(), name="registry-output")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def describe(self) -> dict[str, object]:
        return {"pid": self.proc.pid, "program": self.argv[0]}

    async def _read(self) -> None:
        assert self.proc.stdout is not None  # noqa: S101 (invariant: started with stdout=PIPE)
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # a line beyond the reader's limit: dropped, read on
                continue
            if not line:
                return
            self.output.feed(line.decode("utf-8", errors="replace"))

    async def wait(self) -> str:
        code = await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader  # the last lines say why it stopped
        _remove(self.pidfile)
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        last = list(self.output.tail)[-3:]
        return f"{how}" + (f"; last output: {' | '.join(last)}" if last else "")

    async def terminate(self, grace: float) -> None:
        running = self.proc.returncode is None
        if running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                log.warning(
                    "the registry did not stop within %.0f s; killing it",
                    grace,
                    extra={"fields": {"pid": self.proc.pid}},
                )
                self.proc.kill()
                await self.proc.wait()
        if not self._reader.done():
            self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        _remove(self.pidfile)
        if running:
            log.info("registry stopped", extra={"fields": {"pid": self.proc.pid}})


class BinaryLauncher:
    name = "binary"

    def __init__(self, program: str, files: RegistryFiles, grace: float = 5.0) -> None:
        self.program = program
        self.files = files
        self.grace = grace

    @property
    def argv(self) -> list[str]:
        return [self.program, "serve", str(self.files.config)]

    async def launch(self) -> ChildInstance:
        argv = self.argv
        await asyncio.to_thread(stop_leftover, self.files.pidfile, argv, self.grace)
        # REGISTRY_* variables override config.yml inside distribution: ours must win.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C on the daemon's terminal is the daemon's to handle,
                # and the daemon stops the registry itself.
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"cannot run {self.program}: {exc}") from None
        instance = ChildInstance(proc, argv, self.files.pidfile)
        try:
            self.files.pidfile.write_text(f"{proc.pid}\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.files.pidfile, exc)
        log.info(
            "registry started",
            extra={"fields": {"pid": proc.pid, "argv": " ".join(argv)}},
        )
        return instance

    async def close(self) -> None:
        return None


def stop_leftover(pidfile: Path, argv: list[str], grace: float) -> None:
    """Stop the registry a previous run of this daemon left running (it was SIGKILLed, say):
    it holds port 5000 and our storage. Anything else with that PID is left alone."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    if _cmdline(pid) != argv:
        _remove(pidfile)
        return
    log.warning("stopping the registry a previous run left behind", extra={"fields": {"pid": pid}})
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while _cmdline(pid) == argv and time.monotonic() < deadline:
            time.sleep(0.05)
        if _cmdline(pid) != argv:
            break
    _remove(pidfile)


def _cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None when it is gone (or a zombie: its cmdline is empty)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return raw.rstrip(b"\0").decode("utf-8", errors="replace").split("\0")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
