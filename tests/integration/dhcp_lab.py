"""A DHCP lab for the integration tests: the daemon's namespace and a client namespace joined
by a veth pair, plus real clients (ISC dhclient, busybox udhcpc) with scripts that record what
they were given instead of touching the machine's configuration."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bootstrapperd.lab.netlab import Namespace, NetLab
from tests.daemon_proc import DaemonProcess

SERVER = "10.77.0.1"

# Both scripts print the variables the client hands them, one event per line, and configure
# the address only inside the client namespace (never resolv.conf: the filesystem is shared).
DHCLIENT_SCRIPT = """#!/bin/sh
{{ echo "reason=$reason"; env | grep -E '^(new|old)_' ; echo "--"; }} >>{log}
case "$reason" in BOUND|RENEW|REBIND|REBOOT)
  ip addr flush dev "$interface" scope global
  ip addr add "$new_ip_address/24" dev "$interface";; esac
exit 0
"""
DHCLIENT_CONF = (
    "request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, "
    "host-name, ntp-servers;\n"
)
UDHCPC_VARS = (
    "ip|subnet|router|dns|domain|hostname|lease|broadcast|serverid|ntpsrv|siaddr|boot_file"
)
UDHCPC_SCRIPT = """#!/bin/sh
{{ echo "reason=$1"; env | grep -E '^(VARS)=' ; echo "--"; }} >>{log}
case "$1" in bound|renew) ip addr flush dev "$interface" scope global
  ip addr add "$ip/${{mask:-24}}" dev "$interface";;
  deconfig) ip addr flush dev "$interface" scope global;; esac
exit 0
""".replace("VARS", UDHCPC_VARS)


def events(log: Path) -> list[dict[str, str]]:
    """The recorded client script calls, oldest first."""
    if not log.exists():
        return []
    found: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in log.read_text().splitlines():
        if line == "--":
            found.append(current)
            current = {}
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    return found


def wait_until(predicate: object, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.05)


@dataclass
class DHCPLab:
    lab: NetLab
    srv: Namespace
    cli: Namespace
    bsroot: Path
    scratch: Path

    @classmethod
    def build(cls, netlab: NetLab, bsroot: Path, client_mac: str | None = None) -> DHCPLab:
        srv = netlab.namespace("srv")
        cli = netlab.namespace("cli")
        netlab.veth(srv, "bs0", cli, "node0", f"{SERVER}/24", None)
        if client_mac is not None:
            cli.ip("link", "set", "node0", "address", client_mac)
        scratch = bsroot.parent / "clients"
        scratch.mkdir(exist_ok=True)
        return cls(netlab, srv, cli, bsroot, scratch)

    def start_daemon(self, *args: str) -> DaemonProcess:
        daemon = DaemonProcess(self.srv, self.bsroot, *args)
        wait_until(
            lambda: "service=dhcp" in daemon.output or daemon.proc.poll() is not None,
            what="daemon listening",
        )
        assert daemon.proc.poll() is None, daemon.output
        return daemon

    def script(self, name: str, template: str) -> tuple[Path, Path]:
        log = self.scratch / f"{name}.log"
        script = self.scratch / f"{name}.sh"
        script.write_text(template.format(log=log))
        script.chmod(0o755)
        return script, log

    def dhclient(self, *extra: str, name: str = "dhclient") -> tuple[Path, str]:
        """Run ISC dhclient once (-1): returns its script log and its output."""
        script, log = self.script(name, DHCLIENT_SCRIPT)
        conf = self.scratch / f"{name}.conf"
        conf.write_text(DHCLIENT_CONF)
        argv = [
            "dhclient",
            "-4",
            "-1",
            "-v",
            "-cf",
            str(conf),
            "-sf",
            str(script),
            "-lf",
            str(self.scratch / f"{name}.leases"),
            "-pf",
            str(self.scratch / f"{name}.pid"),
            *extra,
            "node0",
        ]
        result = self.cli.run(argv, timeout=60)
        return log, result.stdout + result.stderr

    def leases(self) -> list[tuple[str, str, str]]:
        """(ip, mac, state) rows of the daemon's lease database."""
        db = sqlite3.connect(self.bsroot / "state" / "bootstrapperd.db")
        try:
            rows = db.execute("SELECT ip, mac, state FROM leases ORDER BY ip").fetchall()
        finally:
            db.close()
        return [(str(a), str(b), str(c)) for a, b, c in rows]
