"""Private network labs: namespaces joined by veth pairs and bridges, removed completely after.

Used by ``bootstrapperd demo`` and by the test suite. Nothing touches the host's interfaces: every
link is created inside a namespace of the lab (``ip -n A link add x type veth peer name y netns
B``). Processes are started with ``ip netns exec`` (which execs, so the PID is the program's),
stopped by PID, and whatever is still inside a lab namespace at the end is stopped before the
namespace is deleted. ``close()`` runs even when the body failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("bootstrapperd.netlab")


class LabError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here (not root, no ``ip``), or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def _run(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@dataclass
class Namespace:
    name: str
    lab: NetLab

    def run(
        self, argv: Sequence[str], timeout: float = 30, check: bool = False, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise LabError(
                f"[{self.name}] {' '.join(argv)} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def spawn(
        self,
        argv: Sequence[str],
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running program inside the namespace; the lab stops it on close."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            stdout=stdout,
            stderr=stderr,
            env=env,
            **kwargs,
        )
        self.lab.processes.append(proc)
        return proc

    def ip(self, *args: str) -> None:
        _run(["ip", "-n", self.name, *args])


@dataclass
class NetLab:
    """A set of namespaces named ``<prefix>-<role>``; use as a context manager."""

    prefix: str = field(default_factory=lambda: f"bsd{os.getpid() % 100000}{secrets.token_hex(2)}")
    namespaces: list[Namespace] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, role: str) -> Namespace:
        name = f"{self.prefix}-{role}"
        if Path("/run/netns", name).exists():
            raise LabError(f"namespace {name} already exists; not touching it")
        _run(["ip", "netns", "add", name])
        ns = Namespace(name, self)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")  # lo is down in a new namespace
        return ns

    def veth(
        self,
        a: Namespace,
        a_name: str,
        b: Namespace,
        b_name: str,
        a_address: str | None = None,
        b_address: str | None = None,
    ) -> None:
        """A veth pair created inside ``a`` with its peer moved straight into ``b``."""
        a.ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name)
        for ns, ifname, address in ((a, a_name, a_address), (b, b_name, b_address)):
            if address is not None:
                ns.ip("addr", "add", address, "dev", ifname)
            ns.ip("link", "set", ifname, "up")

    def bridge(self, ns: Namespace, name: str, mac: str, ports: Sequence[str] = ()) -> None:
        """A bridge with a fixed MAC (else it takes its lowest port's, changing as ports join)."""
        ns.ip(
            "link",
            "add",
            name,
            "address",
            mac,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        )
        for port in ports:
            ns.ip("link", "set", port, "master", name)
        ns.ip("link", "set", name, "up")

    def tap(self, ns: Namespace, name: str, bridge: str | None = None) -> None:
        ns.ip("tuntap", "add", "dev", name, "mode", "tap")
        if bridge is not None:
            ns.ip("link", "set", name, "master", bridge)
        ns.ip("link", "set", name, "up")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def close(self) -> None:
        """Stop every process and delete every namespace. A Ctrl-C meanwhile is held back
        until the teardown is complete (cut short, it would leave namespaces behind)."""
        with _sigint_deferred():
            self._close()

    def _close(self) -> None:
        errors = []
        for proc in reversed(self.processes):
            try:
                self.stop(proc)
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"pid {proc.pid}: {exc}")
        self.processes.clear()
        for ns in reversed(self.namespaces):
            self._empty(ns)
            result = subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, text=True)
            if result.returncode != 0 and Path("/run/netns", ns.name).exists():
                errors.append(f"ip netns del {ns.name}: {result.stderr.strip()}")
        self.namespaces.clear()
        if errors:
            raise LabError("lab teardown incomplete: " + "; ".join(errors))

    @staticmethod
    def _empty(ns: Namespace) -> None:
        """Stop whatever still runs inside one of our namespaces (daemonised clients, say)."""

        def pids() -> list[str]:
            listing = subprocess.run(
                ["ip", "netns", "pids", ns.name], capture_output=True, text=True
            )
            return listing.stdout.split()

        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not (running := pids()):
                return
            for pid in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), sig)
            deadline = time.monotonic() + 3
            while pids() and time.monotonic() < deadline:
                time.sleep(0.05)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """SIGINT inside is recorded, and raised as KeyboardInterrupt once the block is done
    (only the main thread can change signal handlers; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def wait_for_http(ns: Namespace, url: str, timeout: float = 15.0) -> str:
    """Poll ``url`` with curl from inside ``ns`` until it answers 2xx; return the body."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        result = ns.run(["curl", "-sS", "--fail", "--max-time", "2", url], timeout=5)
        if result.returncode == 0:
            return result.stdout
        last = result.stderr.strip()
        time.sleep(0.1)
    raise LabError(f"{url} did not answer from {ns.name} within {timeout} s: {last}")
