"""kill -9 under DHCP load: the daemon is killed while many machines do DORA, restarted on the
same bsroot, three times over. Every ACKed lease survives (a REQUEST for the address is ACKed
to its machine after each restart) and no address is ever ACKed to two MACs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import REPO
from bench.storm import dora_argv, node_entries, storm_mac
from bootstrapperd.lab.netlab import NetLab
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import SERVER, DHCPLab, wait_until

RELAY = "10.77.0.250"
"""The client namespace's address (outside the pool): the simulated machines' relay agent."""
KILLS = 3
MACHINES_PER_ROUND = 20
"""New machines per round; 4 rounds stay inside the example's pool of 100 addresses."""
ACKS_BEFORE_KILL = 5
RATE = 20
"""Machines started per second: the kill lands while new machines are still arriving."""


def answers(path: Path) -> list[dict[str, str]]:
    """The client's JSON lines so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start(lab: DHCPLab, round_: int) -> DaemonProcess:
    """The daemon on the lab's bsroot, its log one file per round."""
    daemon = DaemonProcess(lab.srv, lab.bsroot, log=lab.scratch / f"daemon-{round_}.log")
    wait_until(
        lambda: "service=dhcp" in daemon.output or daemon.proc.poll() is not None,
        what="daemon listening",
    )
    assert daemon.proc.poll() is None, daemon.output
    return daemon


def run_clients(lab: DHCPLab, round_: int, held: dict[str, str]) -> tuple[Path, object]:
    """Start the simulated machines: the held leases verified first, then new machines."""
    out = lab.scratch / f"clients-{round_}.jsonl"
    args = ["--server", SERVER, "--giaddr", RELAY, "--seed", str(round_ + 1), "--deadline", "40"]
    args += ["--rate", str(RATE)]
    args += ["--first", str(round_ * MACHINES_PER_ROUND), "--count", str(MACHINES_PER_ROUND)]
    for mac, ip in held.items():
        args += ["--verify", f"{mac}={ip}"]
    with out.open("wb") as stream:
        proc = lab.cli.spawn(dora_argv(sys.executable, *args), stdout=stream, cwd=REPO)
    return out, proc


def check_round(events: list[dict[str, str]], held: dict[str, str], owner: dict[str, str]) -> None:
    """Every held lease was ACKed to its machine again; no address ACKed to two MACs."""
    verified = {e["mac"]: e for e in events if e["phase"] == "verify"}
    for mac, ip in held.items():
        assert verified.get(mac, {}).get("event") == "ack", (mac, ip, verified.get(mac))
        assert verified[mac]["ip"] == ip, (mac, ip, verified[mac])
    for event in events:
        if event["event"] != "ack":
            continue
        first = owner.setdefault(event["ip"], event["mac"])
        assert first == event["mac"], f"{event['ip']} ACKed to {first} and {event['mac']}"


def test_acked_leases_survive_kill_9(netlab: NetLab, bsroot: Path) -> None:
    desc = bsroot / "config" / "cluster-desc.yml"
    macs = [storm_mac(index) for index in range((KILLS + 1) * MACHINES_PER_ROUND)]
    desc.write_text(desc.read_text().rstrip("\n") + "\n" + node_entries(macs))
    lab = DHCPLab.build(netlab, bsroot)
    lab.cli.ip("addr", "add", f"{RELAY}/24", "dev", "node0")
    held: dict[str, str] = {}
    owner: dict[str, str] = {}
    logs: list[DaemonProcess] = []
    for round_ in range(KILLS + 1):
        daemon = start(lab, round_)
        logs.append(daemon)
        out, proc = run_clients(lab, round_, dict(held))
        last = round_ == KILLS
        if not last:
            wait_until(
                lambda out=out: (
                    sum(e["event"] == "ack" and e["phase"] == "dora" for e in answers(out))
                    >= ACKS_BEFORE_KILL
                ),
                timeout=60,
                what="ACKs under load",
            )
            daemon.proc.kill()  # SIGKILL by PID, mid-load
            daemon.wait(timeout=10)
        assert proc.wait(timeout=60) == 0  # type: ignore[attr-defined]
        events = answers(out)
        check_round(events, held, owner)
        held.update({e["mac"]: e["ip"] for e in events if e["event"] == "ack"})
        if last:
            lab.lab.stop(daemon.proc)
    assert len(held) >= KILLS * ACKS_BEFORE_KILL + MACHINES_PER_ROUND
    leases = {mac: ip for ip, mac, state in lab.leases() if state == "bound"}
    for mac, ip in held.items():
        assert leases.get(mac) == ip, (mac, ip, leases.get(mac))
    for daemon in logs:
        assert "Traceback" not in daemon.output, daemon.output
