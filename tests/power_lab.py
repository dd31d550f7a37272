"""Real emulated BMCs for the power tests.

IPMI: OpenIPMI's ``ipmi_sim`` in a namespace of its own, at ``BMC_ADDRESS``, reached over a
veth from an ``admin`` namespace where the control code runs (``python -m tests.power_lab``,
JSON in and out). ipmi_sim accepts the boot flags (Set System Boot Options parameter 5) only
through a ``chassis_control`` program (its bmc_chassis.c; without one it answers "Invalid data
field", connected guest or not), and that program then also owns the power: ours starts a QEMU
VM (``-daemonize``, with ipmi_sim as its BMC over ``ipmi-bmc-extern``), stops it, and starts it
with ``-boot once=n`` when the boot flags said PXE, then forgets them: the next boot is from
the network once, as on a real BMC. Every call it gets is appended to ``events.log``.

Redfish: sushy-tools' emulator with its fake driver on 127.0.0.1, over TLS with a CA made
here, HTTP Basic users from an htpasswd-style file (bcrypt).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootstrapperd.lab.netlab import Namespace, NetLab
from bootstrapperd.lab.vm.lab import BMC_EMU, BMC_LAN_CONF
from bootstrapperd.lab.vm.lab import CHASSIS as BMC_CHASSIS
from tests.registry_lab import make_tls

REPO = Path(__file__).resolve().parent.parent
ADMIN_ADDRESS = "10.98.0.1"
BMC_ADDRESS = "10.98.0.2"
DEAD_ADDRESS = "10.98.0.3"  # on the admin network, nothing there
USER, PASSWORD = "admin", "s3cret-pw"
VM_PORT = 9002  # ipmi_sim's end of the VM's BMC link, inside the BMC namespace

# The BMC's configuration and chassis script are the VM lab's (bootstrapperd/lab/vm/lab.py).
EMU, LAN_CONF, CHASSIS = BMC_EMU, BMC_LAN_CONF, BMC_CHASSIS

QEMU = (
    "qemu-system-x86_64 -display none -nodefaults -machine pc -m 32 -accel tcg -nic none "
    "-chardev socket,id=ipmi0,host=127.0.0.1,port={vm_port},reconnect=1 "
    "-device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0"
)


@dataclass
class IpmiLab:
    lab: NetLab
    admin: Namespace
    bmc: Namespace
    workdir: Path
    sim: subprocess.Popen[bytes]

    def qemu(self) -> str | None:
        """The running VM's command line, or None when it is off."""
        pidfile = self.workdir / "qemu.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        return None

    def events(self) -> list[str]:
        path = self.workdir / "events.log"
        return path.read_text().splitlines() if path.exists() else []

    def control(
        self,
        targets: dict[str, dict[str, Any]],
        action: str,
        *,
        timeout: float = 10.0,
        concurrency: int = 4,
        stagger: float = 0.0,
    ) -> dict[str, Any]:
        """Run ``control_many`` inside the admin namespace: {"results": {key: result},
        "progress": [[key, "start"|"done"], ...]}."""
        request = {
            "targets": targets,
            "action": action,
            "timeout": timeout,
            "concurrency": concurrency,
            "stagger": stagger,
        }
        result = self.admin.run(
            [sys.executable, "-m", "tests.power_lab"],
            input=json.dumps(request),
            cwd=REPO,
            timeout=timeout * max(1, len(targets)) + 60,
        )
        assert result.returncode == 0, result.stderr
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer


def ipmi_bmc(address: str = BMC_ADDRESS, password: str = PASSWORD) -> dict[str, Any]:
    return {"address": address, "protocol": "ipmi", "username": USER, "password": password}


@contextlib.contextmanager
def ipmi_lab(lab: NetLab, workdir: Path) -> Iterator[IpmiLab]:
    admin = lab.namespace("admin")
    bmc = lab.namespace("bmc")
    lab.veth(admin, "adm0", bmc, "bmc0", f"{ADMIN_ADDRESS}/24", f"{BMC_ADDRESS}/24")
    workdir.mkdir(parents=True, exist_ok=True)
    chassis = workdir / "chassis"
    qemu = QEMU.format(vm_port=VM_PORT)
    chassis.write_text(CHASSIS.format(directory=workdir, qemu=qemu))
    chassis.chmod(0o755)
    (workdir / "sim.emu").write_text(EMU)
    (workdir / "lan.conf").write_text(
        LAN_CONF.format(
            name="bsdpower",
            address=BMC_ADDRESS,
            vm_port=VM_PORT,
            chassis=chassis,
            user=USER,
            password=PASSWORD,
        )
    )
    state = workdir / "state"
    state.mkdir(exist_ok=True)
    log = (workdir / "ipmi_sim.log").open("wb")
    sim = bmc.spawn(
        ["ipmi_sim", "-n", "-c", str(workdir / "lan.conf"), "-f", str(workdir / "sim.emu"),
         "-s", str(state)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_for_udp_listener(bmc, 623)
        yield IpmiLab(lab, admin, bmc, workdir, sim)
    finally:
        log.close()
        lab.stop(sim)
        pidfile = workdir / "qemu.pid"  # the VM is ipmi_sim's grandchild, daemonised
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


def _wait_for_udp_listener(ns: Namespace, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = ns.run(["ss", "-Hlun", f"sport = :{port}"]).stdout
        if listing.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"ipmi_sim did not listen on UDP {port} within {timeout} s")


# --- Redfish: sushy-tools' emulator ------------------------------------------------------------


@dataclass
class RedfishLab:
    port: int
    ca_file: Path
    proc: subprocess.Popen[bytes]
    system: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def redfish_lab(workdir: Path) -> Iterator[RedfishLab]:
    import bcrypt

    workdir.mkdir(parents=True, exist_ok=True)
    tls = make_tls(workdir / "tls", "localhost")  # its certificate also names 127.0.0.1
    ca, cert, key = tls.ca, tls.cert, tls.key
    users = workdir / "htpasswd"
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    users.write_text(f"{USER}:{digest}\n")
    system = "7f1e3a52-2b5c-4a55-9c1e-5e2d9b0c0001"
    config = workdir / "emulator.conf"
    config.write_text(
        f"SUSHY_EMULATOR_AUTH_FILE = {str(users)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(workdir / 'state')!r}\n"
        "SUSHY_EMULATOR_FAKE_SYSTEMS = [{'uuid': %r, 'name': 'node1', 'power_state': 'Off',"
        " 'external_notifier': False, 'nics': [{'mac': '52:54:00:00:00:01',"
        " 'ip': '127.0.0.2'}]}]\n" % system
    )
    port = _free_port()
    log = (workdir / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sushy_tools.emulator.main", "--fake", "--config", str(config),
         "--interface", "127.0.0.1", "--port", str(port),
         "--ssl-certificate", str(cert), "--ssl-key", str(key)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_for_https(port, ca, proc)
        yield RedfishLab(port, ca, proc, system)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _wait_for_https(port: int, ca: Path, proc: subprocess.Popen[bytes]) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sushy-emulator exited {proc.returncode}")
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/redfish/v1/", context=context, timeout=2
            ):
                return
        except urllib.error.HTTPError as exc:
            exc.close()
            return  # it answers (401 without credentials)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("sushy-emulator did not answer within 30 s")


# --- the control code, run inside the admin namespace -----------------------------------------


def _main() -> None:
    import asyncio

    from bootstrapperd.power import BMC, Action, Progress, Protocol, control_many

    request = json.load(sys.stdin)
    targets = {
        key: BMC(
            address=t["address"],
            protocol=Protocol(t["protocol"]),
            username=t["username"],
            password=t["password"],
            port=t.get("port"),
        )
        for key, t in request["targets"].items()
    }
    progress: list[list[str]] = []

    def seen(step: Progress[str]) -> None:
        progress.append([step.key, "start" if step.result is None else "done"])

    results = asyncio.run(
        control_many(
            targets,
            Action(request["action"]),
            concurrency=request["concurrency"],
            stagger=request["stagger"],
            timeout=request["timeout"],
            progress=seen,
        )
    )
    out = {
        "results": {
            key: {
                "ok": r.ok,
                "state": str(r.state),
                "message": r.message,
                "failure": None if r.failure is None else str(r.failure),
            }
            for key, r in results.items()
        },
        "progress": progress,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    _main()
