"""``bootstrapperd demo`` reads like a story: one clock for the timeline and the result lines,
times that never go backwards, no field repeated in a line, pack's first and last lines, a
status page URL that works until the end, and why the machines run under TCG or KVM.

The narrator is checked with a scripted daemon and consoles (events that arrive out of order,
late, or after a failed fetch); the whole demo is then run as a user runs it, and its output
checked for the same properties. Nothing here asserts on durations.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bootstrapperd.lab.demo import Clock, Narrator, _unrepeat, is_field, pack_excerpt
from bootstrapperd.lab.netlab import LabError
from bootstrapperd.lab.vm.initramfs import INSTALLED_MARK, MARK
from bootstrapperd.lab.vm.lab import Machine, console_script
from bootstrapperd.lab.vm.qemu import ACCEL_ENV, MachineSpec
from tests.conftest import need_vm_lab

TIMELINE = re.compile(r"^  +\+(\d+\.\d) s  (\S+) +(.*)$")
RESULT = re.compile(
    r"^   (\S+) +\S+ +stage (\S+), disk (.*); QEMU started \+(\d+\.\d) s, "
    r"config fetched \+(\d+\.\d) s, powered off \+(\d+\.\d) s$"
)
SECOND_BOOT = re.compile(
    rf"^ +next boot: local-boot \+(\d+\.\d) s, the disk's OS reported \+(\d+\.\d) s: "
    rf"{INSTALLED_MARK} version=\S+ config=ignition$"
)
DEMO_TIMEOUT = 900.0


class ScriptedClock(Clock):
    def __init__(self) -> None:
        super().__init__(origin=100.0)
        self.at = 100.0

    def now(self) -> float:
        """Time passes a little with each reading, as the narrator works."""
        self.at += 0.001
        return self.at


class ScriptedDaemon:
    """The daemon's API as the narrator sees it: timelines the test fills in."""

    def __init__(self) -> None:
        self.timelines: dict[str, list[dict[str, Any]]] = {}
        self.down = False

    def record(self, mac: str, at: float, path: str) -> None:
        event = {"at": at, "source": "http", "kind": "file", "path": path, "status": 200}
        self.timelines.setdefault(mac, []).append(event)

    def api(self, path: str) -> Any:
        if self.down:
            raise LabError(f"GET {path}: connection refused")
        return {"timeline": list(self.timelines.get(path.rsplit("/", 1)[1], []))}


def _machine(tmp_path: Path, name: str, mac: str) -> Machine:
    machine = Machine(MachineSpec(name, mac), "tap", tmp_path / f"{name}.raw", tmp_path / name)
    machine.accel = "tcg"
    machine.started = 101.0
    return machine


def _console(machine: Machine, line: str, uptime: float = 1.0) -> None:
    with machine.serial.open("a") as serial:
        serial.write(f"noise\r\n{MARK} {line} uptime={uptime:.2f}\r\n")


def _timeline(text: str) -> list[tuple[float, str, str]]:
    found = (TIMELINE.match(line) for line in text.splitlines())
    return [(float(m[1]), m[2], m[3]) for m in found if m]


def _repeats(text: str) -> list[str]:
    """Fields (see :func:`is_field`) and ``key=`` that occur twice in a line, and items that
    occur twice in one comma-separated list."""
    words = text.split()
    repeated = [w for w in set(words) if is_field(w) and words.count(w) > 1]
    keys = [w.split("=", 1)[0] for w in words if "=" in w]
    repeated += [f"{k}=" for k in set(keys) if keys.count(k) > 1]
    for word in words:
        items = word.split(",")
        repeated += [i for i in set(items) if len(items) > 1 and items.count(i) > 1]
    return repeated


def test_narrator_merges_sources_in_time_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock, daemon = ScriptedClock(), ScriptedDaemon()
    a = _machine(tmp_path, "a", "52:54:00:00:00:0a")
    b = _machine(tmp_path, "b", "52:54:00:00:00:0b")
    narrator = Narrator(daemon, [a, b], clock)  # type: ignore[arg-type]
    # Machine a's event is later than b's, and fetched first.
    daemon.record(a.mac, 104.0, "/a-first")
    daemon.record(b.mac, 103.0, "/b-first")
    _console(a, "initramfs")
    clock.at = 105.0
    narrator.tick()
    # Recorded after that fetch, before the console line was read, and fetched a tick later.
    daemon.record(a.mac, 105.0015, "/a-late")
    clock.at = 106.0
    narrator.tick()
    # A fetch fails: nothing may be printed, for an event might be missing.
    daemon.down = True
    daemon.record(b.mac, 106.2, "/b-while-down")
    clock.at = 107.0
    narrator.tick()
    daemon.down = False
    # QEMU exits; its last console line is read only after: it shows no later than the exit.
    b.ended = 107.5
    _console(b, "end installed")
    clock.at = 108.0
    narrator.tick()
    a.ended = 108.5
    narrator.finish()
    lines = _timeline(capsys.readouterr().out)
    assert [(name, text) for _, name, text in lines] == [
        ("a", "QEMU started (TCG)"),
        ("b", "QEMU started (TCG)"),
        ("b", "HTTP file /b-first -> 200"),
        ("a", "HTTP file /a-first -> 200"),
        ("a", "HTTP file /a-late -> 200"),
        ("a", "console: initramfs"),
        ("b", "HTTP file /b-while-down -> 200"),
        ("b", "console: end installed"),
        ("b", "QEMU exited (powered off)"),
        ("a", "QEMU exited (powered off)"),
    ]
    times = [at for at, _, _ in lines]
    assert times == sorted(times)
    assert times[0] == 1.0  # the clock's origin: +1.0 s is QEMU's start at 101


def test_console_lines_are_placed_by_the_guests_uptime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two console lines read together are not both shown at the time they were read: the
    guest's uptime places them between that read and the one before."""
    clock, daemon = ScriptedClock(), ScriptedDaemon()
    a = _machine(tmp_path, "a", "52:54:00:00:00:0a")
    narrator = Narrator(daemon, [a], clock)  # type: ignore[arg-type]
    _console(a, "initramfs", uptime=2.0)
    clock.at = 105.0
    narrator.tick()  # read at 105: the guest booted at 103 at the latest
    _console(a, "lease", uptime=4.0)  # at 107
    daemon.record(a.mac, 108.0, "/ignition")
    with a.serial.open("a") as serial:
        serial.write(f"{MARK} flatcar-install without an uptime\n")  # placed with the next
    _console(a, "install.sh", uptime=6.0)  # at 109
    with a.serial.open("a") as serial:
        serial.write(f"{MARK} garbled uptime=x\n")  # no uptime to place it: the read time
    clock.at = 110.0
    narrator.tick()
    a.ended = 111.0
    narrator.finish()
    lines = [(at, text) for at, _, text in _timeline(capsys.readouterr().out)]
    assert lines == [
        (1.0, "QEMU started (TCG)"),
        (5.0, "console: initramfs"),
        (7.0, "console: lease"),
        (8.0, "HTTP file /ignition -> 200"),
        (9.0, "console: flatcar-install without an uptime"),
        (9.0, "console: install.sh"),
        (10.0, "console: garbled uptime=x"),
        (11.0, "QEMU exited (powered off)"),
    ]


def test_a_second_boot_counts_its_uptime_from_its_own_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine that powers off after its install and is started again: both QEMU starts,
    the stop between them, and the second boot's lines placed by its own uptime."""
    clock, daemon = ScriptedClock(), ScriptedDaemon()
    a = _machine(tmp_path, "a", "52:54:00:00:00:0a")
    a.lab_starts = [101.0]
    narrator = Narrator(daemon, [a], clock)  # type: ignore[arg-type]
    _console(a, "initramfs", uptime=1.0)  # at 102
    clock.at = 102.0
    narrator.tick()  # the guest booted at 101 at the latest
    _console(a, "end installed", uptime=3.0)  # at 104
    a.stops.append(104.5)  # read only after QEMU's exit: shown no later than that
    a.lab_starts.append(106.0)
    clock.at = 106.5
    narrator.tick()
    _console(a, f"{INSTALLED_MARK} version=1", uptime=1.0)  # at 107: a new uptime count
    _console(a, "end installed-os", uptime=2.0)  # at 108
    clock.at = 108.0
    narrator.tick()
    a.ended = 109.0
    narrator.finish()
    lines = [(at, text) for at, _, text in _timeline(capsys.readouterr().out)]
    assert lines == [
        (1.0, "QEMU started (TCG)"),
        (2.0, "console: initramfs"),
        (4.0, "console: end installed"),
        (4.5, "QEMU exited (powered off); the lab powers it on again"),
        (6.0, "QEMU started (TCG)"),
        (7.0, f"console: {INSTALLED_MARK} version=1"),
        (8.0, "console: end installed-os"),
        (9.0, "QEMU exited (powered off)"),
    ]


def test_narrator_never_prints_a_time_backwards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event older than what was printed (a wall-clock step) shows the last time again."""
    clock, daemon = ScriptedClock(), ScriptedDaemon()
    a = _machine(tmp_path, "a", "52:54:00:00:00:0a")
    narrator = Narrator(daemon, [a], clock)  # type: ignore[arg-type]
    daemon.record(a.mac, 110.0, "/now")
    clock.at = 111.0
    narrator.tick()
    daemon.record(a.mac, 102.0, "/before-a-clock-step")
    narrator.finish()
    times = [at for at, _, _ in _timeline(capsys.readouterr().out)]
    assert times == [1.0, 10.0, 10.0]


def test_repeated_fields_are_dropped() -> None:
    text = "lease ip=10.77.0.10 hostname=master1 ip=10.77.0.10 stage=a stage=b"
    assert _unrepeat(text) == "lease ip=10.77.0.10 hostname=master1 stage=a"
    resolved = "resolved master1.example:10.77.0.10,master1.example:10.77.0.10,w.example:10.77.0.11"
    assert _unrepeat(resolved) == "resolved master1.example:10.77.0.10,w.example:10.77.0.11"
    sentence = "wrote the image and the config to /dev/vda"
    assert _unrepeat(sentence) == sentence
    assert _repeats(_unrepeat(f"{resolved} {text} 10.77.0.10")) == []


def test_pack_excerpt_shows_first_and_last_lines() -> None:
    lines = [f"line {n}" for n in range(15)]
    excerpt = pack_excerpt("\n".join(lines), head=3, tail=2)
    assert excerpt == ["line 0", "line 1", "line 2", "... 10 more lines ...", "line 13", "line 14"]
    assert pack_excerpt("\n".join(lines[:6]), head=3, tail=2) == lines[:6]


def _fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        response.read()
        status: int = response.status
        return status


@pytest.mark.netns
def test_demo_output_reads_like_a_story() -> None:
    """``bootstrapperd demo --hold``: the status page answers right after it is announced and
    still while holding; Ctrl-C then ends the demo normally; the output has every property."""
    need_vm_lab()
    env = {k: v for k, v in os.environ.items() if k != ACCEL_ENV}  # the probe decides
    argv = [*console_script("bootstrapperd", "bootstrapperd"), "demo", "--hold"]
    out: list[str] = []
    statuses: dict[str, int] = {}
    url = ""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as demo:
        assert demo.stdout is not None
        try:
            for line in demo.stdout:
                out.append(line)
                if line.startswith("== status page: "):
                    url = line.split()[3]
                    statuses["announced"] = _fetch(url)
                if line.startswith("serving; "):
                    statuses["holding"] = _fetch(url + "api/v1/nodes")
                    demo.send_signal(signal.SIGINT)  # the end of the hold
            code = demo.wait(timeout=DEMO_TIMEOUT)
        finally:
            if demo.poll() is None:  # a failed fetch: the demo tears its lab down on SIGTERM
                demo.terminate()
                demo.wait(timeout=60)
    explain = "\n--- demo output ---\n" + "".join(out)
    assert code == 0, explain
    assert statuses == {"announced": 200, "holding": 200}, explain
    status_line = next(line for line in out if line.startswith("== status page: "))
    assert "until you press Ctrl-C" in status_line, explain
    check_story(out)


def check_story(out: list[str]) -> None:
    """The properties of the demo's output (its lines, with their newlines)."""
    text = "".join(out)
    explain = f"\n--- demo output ---\n{text}"
    timeline = _timeline(text)
    assert timeline, explain
    times = [at for at, _, _ in timeline]
    backwards = [(a, b) for a, b in itertools.pairwise(times) if b < a]
    assert not backwards, f"times go backwards: {backwards}" + explain
    repeated = {text: r for _, _, text in timeline if (r := _repeats(text))}
    assert not repeated, f"repeated fields: {repeated}" + explain

    pack = [line.split(" | ", 1)[1] for line in out if line.startswith("   pack | ")]
    assert "cluster-desc.yml" in pack[0], explain  # pack's first line: what it wrote first
    assert "manifest.json" in pack[-1], explain  # and its last: the manifest
    assert any(re.fullmatch(r"\.\.\. \d+ more lines \.\.\.\n", line) for line in pack), explain

    accel = next((line for line in out if line.startswith("== ") and " acceleration " in line), "")
    if not os.path.exists("/dev/kvm"):
        assert "acceleration TCG: /dev/kvm does not exist" in accel, explain
    elif "acceleration TCG" in accel or not accel:
        assert "acceleration TCG: /dev/kvm exists, but " in accel, explain
        assert '"Configuring (net0"' in accel, explain
        assert f"{ACCEL_ENV}=kvm forces KVM" in accel, explain

    # One clock: each result line's times are those of its machine's timeline lines.
    results = [m for line in out if (m := RESULT.match(line.rstrip("\n")))]
    assert len(results) == 3, explain
    for result in results:
        mine = [(f"+{at:.1f} s", text) for at, who, text in timeline if who == result[1]]
        assert mine[0] == (f"+{result[4]} s", "QEMU started (TCG)") or mine[0] == (
            f"+{result[4]} s",
            "QEMU started (KVM)",
        ), explain
        fetched = next(at for at, text in mine if text.startswith("HTTP ignition "))
        assert fetched == f"+{result[5]} s", explain
        assert mine[-1] == (f"+{result[6]} s", "QEMU exited (powered off)"), explain
        console = [text for _, text in mine if text.startswith("console: ")]
        assert console[0] == "console: initramfs", explain  # the console's order is kept
        assert "console: end installed" in console, explain
        assert result[2] == "installed", explain
    # The master boots again after its install: sent to its disk, whose OS reports itself.
    master = [(at, text) for at, who, text in timeline if who == results[0][1]]
    texts = [text for _, text in master]
    assert texts.count("console: end installed") == 1, explain
    installed = texts.index("console: end installed")
    local = next(i for i, t in enumerate(texts) if t.startswith("HTTP local-boot: "))
    report = next(i for i, t in enumerate(texts) if t.startswith(f"install note: {INSTALLED_MARK}"))
    assert installed < local < report, explain
    assert [t for t in texts if t.startswith("console: ")][-1] == "console: end installed-os"
    for other in results[1:]:
        console = [text for at, who, text in timeline if who == other[1] and "console: " in text]
        assert console[-1] == "console: end installed", explain
    second = next(i for i, line in enumerate(out) if RESULT.match(line.rstrip("\n"))) + 1
    found = SECOND_BOOT.match(out[second].rstrip("\n"))
    assert found, explain
    assert f"+{found[1]} s" == f"+{master[local][0]:.1f} s", explain
    assert f"+{found[2]} s" == f"+{master[report][0]:.1f} s", explain
    assert out[-1].startswith("== done: "), explain
