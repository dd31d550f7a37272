"""Real TFTP clients (tftp-hpa, atftp, busybox) against `bootstrapperd serve` in namespaces:
byte-identical files of every awkward size, block-number rollover, windowsize, concurrency,
generated boot files, every refusal, a stranger's packet, the boot timeline and a transfer
that outlives SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import Namespace, NetLab
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import SERVER, DHCPLab, events, wait_until

pytestmark = pytest.mark.netns

PROBE = Path(__file__).with_name("tftp_probe.py")
CLIENT_IP = "10.77.0.10"  # master1's static address in the bundled example
MASTER = "52:54:00:77:00:10"
SIZES = (0, 511, 512, 513, 1 << 20)


@dataclass
class TFTPLab:
    dhcp: DHCPLab
    daemon: DaemonProcess
    out: Path

    @property
    def cli(self) -> Namespace:
        return self.dhcp.cli

    @property
    def tftpboot(self) -> Path:
        return self.dhcp.bsroot / "tftpboot"

    def put_file(self, name: str, size: int) -> bytes:
        data = os.urandom(size)
        path = self.tftpboot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def probe(self, *args: str) -> object:
        argv = [sys.executable, str(PROBE), *args]
        result = self.cli.run(argv, timeout=60, check=True)
        return json.loads(result.stdout)


def start(netlab: NetLab, bsroot: Path, *args: str, client_ip: str = CLIENT_IP) -> TFTPLab:
    dhcp = DHCPLab.build(netlab, bsroot)
    dhcp.cli.ip("addr", "add", f"{client_ip}/24", "dev", "node0")
    daemon = dhcp.start_daemon(*args)
    wait_until(lambda: "service=tftp" in daemon.output, what="tftp listening")
    out = bsroot.parent / "fetched"
    out.mkdir(exist_ok=True)
    return TFTPLab(dhcp, daemon, out)


# Each client as a user runs it: argv for (remote name, local path).
Client = Callable[[str, Path], list[str]]
CLIENTS: dict[str, Client] = {
    "tftp-hpa": lambda name, out: ["tftp", "-m", "binary", SERVER, "-c", "get", name, str(out)],
    "atftp": lambda name, out: ["atftp", "-g", "-r", name, "-l", str(out), SERVER],
    "atftp-blksize-1468": lambda name, out: [
        "atftp", "--option", "blksize 1468", "-g", "-r", name, "-l", str(out), SERVER,
    ],
    "atftp-windowsize-16": lambda name, out: [
        "atftp", "--option", "blksize 1468", "--option", "windowsize 16",
        "-g", "-r", name, "-l", str(out), SERVER,
    ],
    "busybox": lambda name, out: ["busybox", "tftp", "-g", "-r", name, "-l", str(out), SERVER],
    "busybox-blksize-1024": lambda name, out: [
        "busybox", "tftp", "-b", "1024", "-g", "-r", name, "-l", str(out), SERVER,
    ],
}  # fmt: skip


def fetch(lab: TFTPLab, client: str, name: str, out: Path) -> subprocess.CompletedProcess[str]:
    return lab.cli.run(CLIENTS[client](name, out), timeout=120)


def _tool(client: str) -> str:
    return "tftp" if client == "tftp-hpa" else client.split("-")[0]


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_every_size_arrives_byte_identical(netlab: NetLab, bsroot: Path, client: str) -> None:
    need_tools(_tool(client))
    lab = start(netlab, bsroot)
    for size in SIZES:
        data = lab.put_file(f"file-{size}", size)
        out = lab.out / f"{client}-{size}"
        result = fetch(lab, client, f"file-{size}", out)
        assert out.exists(), f"{client} size {size}: {result.stdout}{result.stderr}"
        assert out.read_bytes() == data, f"{client} size {size}"
    wait_until(lambda: lab.daemon.output.count("transfer complete") >= len(SIZES))
    line = [x for x in lab.daemon.output.splitlines() if "file-1048576" in x][-1]
    for field in ("client=10.77.0.10:", "size=1048576", "duration=", "mib_per_s="):
        assert field in line, line
    if "windowsize" in client:
        assert "windowsize" in line, line
        assert "blksize" in line, line


@pytest.mark.parametrize("client", ["tftp-hpa", "atftp-windowsize-16"])
def test_a_file_past_block_number_rollover(netlab: NetLab, bsroot: Path, client: str) -> None:
    """33 MiB: more than 65535 blocks of 512 bytes, so block numbers wrap to 0."""
    need_tools(_tool(client))
    lab = start(netlab, bsroot)
    data = lab.put_file("big.img", 33 * 2**20 + 7)
    out = lab.out / "big.img"
    result = fetch(lab, client, "big.img", out)
    assert out.exists(), result.stdout + result.stderr
    assert out.stat().st_size == len(data), result.stdout + result.stderr
    assert out.read_bytes() == data


def test_twenty_concurrent_transfers(netlab: NetLab, bsroot: Path) -> None:
    need_tools("atftp", "tftp")
    lab = start(netlab, bsroot)
    data = lab.put_file("shared.img", 2 * 2**20 + 123)
    procs = []
    for i in range(20):
        client = ("tftp-hpa", "atftp-blksize-1468", "atftp-windowsize-16")[i % 3]
        argv = CLIENTS[client]("shared.img", lab.out / f"c{i}")
        procs.append(lab.cli.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for proc in procs:
        proc.wait(timeout=120)
    for i in range(20):
        assert (lab.out / f"c{i}").read_bytes() == data, f"client {i}"
    wait_until(lambda: lab.daemon.output.count("transfer complete") >= 20)


def test_generated_boot_files(netlab: NetLab, bsroot: Path) -> None:
    need_tools("tftp", "busybox")
    lab = start(netlab, bsroot)
    wanted = {
        "pxelinux.cfg/01-52-54-00-77-00-10": ["KERNEL static/flatcar/", "APPEND flatcar."],
        "ipxe/52-54-00-77-00-10": ["#!ipxe", "master1", "ignition.config.url="],
        "ipxe/525400770010.ipxe": ["#!ipxe", "master1"],
        "ipxe/52:54:00:77:00:10": ["#!ipxe", "master1"],
        "boot.ipxe": ["#!ipxe", "chain http://10.77.0.1", "${mac"],
        "pxelinux.cfg/default": ["DEFAULT install", "cloud-config-url=http://10.77.0.1"],
    }
    for name, needles in wanted.items():
        out = lab.out / name.replace("/", "_")
        # tftp-hpa reads "host:file" in a name with a colon; busybox takes it literally.
        result = fetch(lab, "busybox" if ":" in name else "tftp-hpa", name, out)
        assert out.exists(), result.stdout + result.stderr
        text = out.read_text()
        for needle in needles:
            assert needle in text, (name, text)
    # A site's own file wins over the generated one.
    lab.put_file("boot.ipxe", 0)
    (lab.tftpboot / "boot.ipxe").write_text("#!ipxe\necho site\n")
    fetch(lab, "tftp-hpa", "boot.ipxe", lab.out / "site")
    assert (lab.out / "site").read_text() == "#!ipxe\necho site\n"


def _rrq(name: bytes, mode: bytes = b"octet") -> str:
    return (struct.pack("!H", 1) + name + b"\0" + mode + b"\0").hex()


def _error_code(reply_hex: str) -> int:
    reply = bytes.fromhex(reply_hex)
    opcode, code = struct.unpack("!HH", reply[:4])
    assert opcode == 5, reply
    return int(code)


def test_refusals_each_get_their_error_and_serving_goes_on(
    netlab: NetLab, bsroot: Path, tmp_path: Path
) -> None:
    need_tools("tftp")
    lab = start(netlab, bsroot)
    data = lab.put_file("good.bin", 3000)
    outside = tmp_path / "outside-secret"
    outside.write_text("not for you")
    (lab.tftpboot / "escape").symlink_to(outside)
    (lab.tftpboot / "etc").symlink_to("/etc")
    cases = {
        "write request": (struct.pack("!H", 2) + b"new.bin\0octet\0").hex(),
        "../ escape": _rrq(b"../config/cluster-desc.yml"),
        "nested ../": _rrq(b"sub/../../config/cluster-desc.yml"),
        "absolute": _rrq(b"/etc/passwd"),
        "symlink to a file outside": _rrq(b"escape"),
        "symlink to a directory outside": _rrq(b"etc/passwd"),
        "NUL in name": (struct.pack("!H", 1) + b"good.bin\0../x\0octet\0").hex(),
        "control character": _rrq(b"good\x01.bin"),
        "missing": _rrq(b"no-such-file"),
        "directory": _rrq(b"."),
        "mail mode": _rrq(b"good.bin", b"mail"),
    }
    expected = {
        "write request": 2,
        "../ escape": 2,
        "nested ../": 2,
        "absolute": 2,
        "symlink to a file outside": 2,
        "symlink to a directory outside": 2,
        "NUL in name": 4,
        "control character": 2,
        "missing": 1,
        "directory": 1,
        "mail mode": 4,
    }
    for case, packet in cases.items():
        replies = lab.probe("send", SERVER, packet)
        assert isinstance(replies, list), (case, replies)
        assert len(replies) == 1, (case, replies)
        assert _error_code(replies[0][1]) == expected[case], case
    # Garbage is dropped without an answer: too short, unknown opcode, RRQ without terminators,
    # an ACK and a DATA sent to port 69, an empty datagram.
    garbage = ["00", "0009000000", "0001666f6f", "00040001", "00030001ffff", ""]
    assert lab.probe("send", SERVER, *garbage) == []
    # The missing file is logged with the client and the path.
    wait_until(lambda: "file=no-such-file" in lab.daemon.output)
    line = next(x for x in lab.daemon.output.splitlines() if "file=no-such-file" in x)
    assert "client=10.77.0.10:" in line
    assert "not found" in line
    # A write through a real client is refused too.
    (tmp_path / "upload").write_text("x")
    result = lab.cli.run(["tftp", SERVER, "-c", "put", str(tmp_path / "upload"), "up"])
    assert "Access violation" in result.stdout + result.stderr or "read-only" in (
        result.stdout + result.stderr
    )
    assert not (lab.tftpboot / "up").exists()
    # And a valid transfer still works after all of that.
    fetch(lab, "tftp-hpa", "good.bin", lab.out / "good.bin")
    assert (lab.out / "good.bin").read_bytes() == data
    assert lab.daemon.proc.poll() is None


def test_symlinks_inside_bsroot_are_followed(netlab: NetLab, bsroot: Path) -> None:
    need_tools("tftp")
    lab = start(netlab, bsroot)
    mirror = bsroot / "html" / "static" / "flatcar" / "stable" / "1.2.3"
    mirror.mkdir(parents=True)
    kernel = os.urandom(70_000)
    (mirror / "flatcar_production_pxe.vmlinuz").write_bytes(kernel)
    (mirror.parent / "current").symlink_to("1.2.3")
    # No tftpboot/static: static/ falls back to the image mirror.
    name = "static/flatcar/stable/current/flatcar_production_pxe.vmlinuz"
    fetch(lab, "tftp-hpa", name, lab.out / "k1")
    assert (lab.out / "k1").read_bytes() == kernel
    # Sextant's layout: a relative link from tftpboot into html/static.
    (lab.tftpboot / "images").symlink_to("../html/static/flatcar")
    fetch(lab, "tftp-hpa", "images/stable/1.2.3/flatcar_production_pxe.vmlinuz", lab.out / "k2")
    assert (lab.out / "k2").read_bytes() == kernel


def test_a_strangers_packet_gets_error_5_and_the_transfer_goes_on(
    netlab: NetLab, bsroot: Path
) -> None:
    lab = start(netlab, bsroot)
    data = lab.put_file("stranger.bin", 5000)
    result = lab.probe("stranger", SERVER, "stranger.bin")
    assert isinstance(result, dict)
    assert _error_code(result["stranger_reply"]) == 5
    assert bytes.fromhex(result["data"]) == data
    assert len(result["ports"]) == 1
    assert result["ports"][0] != 69


def test_transfer_recorded_in_the_machines_timeline(netlab: NetLab, bsroot: Path) -> None:
    """A client that got its address by DHCP: the transfer lands in that MAC's timeline."""
    need_tools("dhclient", "tftp")
    dhcp = DHCPLab.build(netlab, bsroot, "52:54:00:ab:cd:07")
    daemon = dhcp.start_daemon()
    log, output = dhcp.dhclient()
    assert any(e.get("reason") == "BOUND" for e in events(log)), output
    (bsroot / "tftpboot" / "undionly.kpxe").write_bytes(b"\x55" * 4000)
    out = bsroot.parent / "undionly.kpxe"
    dhcp.cli.run(["tftp", "-m", "binary", SERVER, "-c", "get", "undionly.kpxe", str(out)])
    assert out.read_bytes() == b"\x55" * 4000
    wait_until(lambda: "transfer complete" in daemon.output)
    line = next(x for x in daemon.output.splitlines() if "transfer complete" in x)
    assert "mac=52:54:00:ab:cd:07" in line

    def tftp_events() -> list[tuple[str, str]]:
        db = sqlite3.connect(bsroot / "state" / "bootstrapperd.db")
        try:
            rows = db.execute(
                "SELECT kind, detail FROM events WHERE mac = ? AND source = 'tftp'",
                ("52:54:00:ab:cd:07",),
            ).fetchall()
        finally:
            db.close()
        return [(str(kind), str(detail)) for kind, detail in rows]

    wait_until(lambda: bool(tftp_events()), what="tftp event stored")
    kind, detail = tftp_events()[0]
    assert kind == "transfer"
    assert json.loads(detail)["file"] == "undionly.kpxe"
    assert json.loads(detail)["size"] == 4000


def test_a_transfer_in_flight_finishes_after_sigterm(netlab: NetLab, bsroot: Path) -> None:
    need_tools("tftp")
    lab = start(netlab, bsroot, "--grace-period", "60")
    data = lab.put_file("slow.img", 48 * 2**20)
    out = lab.out / "slow.img"
    argv = CLIENTS["tftp-hpa"]("slow.img", out)
    client = lab.cli.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: out.exists() and out.stat().st_size > 2**20, what="transfer under way")
    lab.daemon.proc.send_signal(signal.SIGTERM)
    assert client.wait(timeout=120) == 0
    assert lab.daemon.wait(timeout=60) == 0
    assert out.read_bytes() == data
    lines = lab.daemon.output.splitlines()
    sigterm = next(i for i, x in enumerate(lines) if "SIGTERM" in x)
    done = next(i for i, x in enumerate(lines) if "transfer complete" in x and "slow.img" in x)
    assert done > sigterm, "the transfer ended before the signal: the test proved nothing"
