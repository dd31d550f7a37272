"""The operator's commands that change the fleet, sent to the running daemon over its admin
channel: ``bootstrapperd machines``, ``reinstall`` and ``approve``.

The channel is the daemon's Unix socket ``state/admin.sock`` (mode 0600: the daemon's user and
root); these commands therefore run as root on the bootstrapper. HTTP/1.1 over that socket,
the routes of :mod:`bootstrapperd.routes` (``ADMIN_*``).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import routes

__all__ = ["AdminChannel", "AdminError", "format_table"]

TIMEOUT = 120.0  # a power command over a rack streams its progress; each BMC has its own limit


class AdminError(Exception):
    """The admin channel is not there, or the daemon refused the command; one line."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("admin", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AdminChannel:
    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        on_line: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[int, bytes]:
        """One request; with ``on_line``, a 200 answer is read as JSON lines, each handed over
        as it arrives (the power commands' progress)."""
        connection = _UnixConnection(self.path, self.timeout)
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Length": str(len(data)), "Content-Type": "application/json"}
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            if on_line is None or response.status != 200:
                return response.status, response.read()
            while line := response.readline():
                if line.strip():
                    on_line(json.loads(line))
            return response.status, b""
        except FileNotFoundError:
            raise AdminError(
                f"no admin channel at {self.path}: is bootstrapperd serving this bsroot?"
            ) from None
        except PermissionError:
            raise AdminError(f"{self.path}: permission denied (run it as root)") from None
        except ConnectionRefusedError:
            raise AdminError(
                f"{self.path}: nothing answers (a daemon that stopped left it?)"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise AdminError(f"{self.path}: {exc}") from None
        finally:
            connection.close()

    def machines(self) -> list[dict[str, Any]]:
        status, body = self.request("GET", routes.ADMIN_MACHINES.pattern)
        if status != 200:
            raise AdminError(
                f"the daemon answered {status}: {body.decode(errors='replace').strip()}"
            )
        table = json.loads(body)["machines"]
        return table if isinstance(table, list) else []

    def change(self, what: routes.Route, mac: str) -> dict[str, Any]:
        """``ADMIN_REINSTALL`` or ``ADMIN_APPROVE`` for ``mac``: the new state, or AdminError
        with the daemon's reason."""
        status, body = self.request("POST", what.path(mac=mac))
        text = body.decode(errors="replace").strip()
        if status != 200:
            raise AdminError(f"{mac}: {text or status}")
        answer = json.loads(text)
        return answer if isinstance(answer, dict) else {}

    def power(
        self,
        action: str,
        macs: list[str],
        on_line: Callable[[dict[str, Any]], None],
        *,
        every: bool = False,
        stagger: float = 0.0,
        concurrency: int = 8,
    ) -> None:
        """``action`` (on, off, cycle, status, pxe-once) on each machine's BMC, through the
        daemon; each start and each result is handed to ``on_line`` as it happens."""
        body: dict[str, Any] = {"stagger": stagger, "concurrency": concurrency}
        body.update({"all": True} if every else {"macs": macs})
        path = routes.ADMIN_POWER.path(action=action)
        status, answer = self.request("POST", path, body, on_line)
        if status != 200:
            raise AdminError(f"power {action}: {answer.decode(errors='replace').strip()}")


def _age(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    value = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.0f}{unit}"
    return f"{value:.0f}s"


def format_table(machines: list[dict[str, Any]]) -> str:
    """The machines as a text table: MAC, hostname, roles, address, state, OS, last event, age
    (from the daemon's clock)."""
    header = ("MAC", "HOSTNAME", "ROLES", "ADDRESS", "STATE", "OS", "LAST EVENT", "AGE")
    rows = [header]
    for m in machines:
        last = m.get("last_event") or {}
        rows.append(
            (
                str(m.get("mac", "")),
                str(m.get("hostname") or "-"),
                ",".join(str(r) for r in m.get("roles") or []) or "-",
                str(m.get("ip") or "-"),
                str(m.get("state") or "-"),
                str(m.get("os") or "-"),
                " ".join(str(last.get(k)) for k in ("source", "kind") if last.get(k)) or "-",
                _age(m.get("age")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )
