"""The HTTP server of ``bootstrapperd serve`` in network namespaces, with real clients: a
simulated machine boot (DHCP, TFTP, HTTP) watched on the status page in headless Chromium,
the image mirror with curl (Range, HEAD, ETag), and private keys refused to other addresses."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.parse
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab
from tests.browser import need_chromium
from tests.conftest import REPO, need_tools
from tests.integration.dhcp_lab import SERVER, DHCPLab, events, wait_until

pytestmark = pytest.mark.netns

WORKER = "52:54:00:77:00:11"  # worker1 of the bundled example: an address from the pool
VERSION = "4081.2.0"
BASE = f"http://{SERVER}"


def mirror(bsroot: Path, size: int = 1 << 20) -> Path:
    """A Flatcar release in the mirror (random bytes named like the real files)."""
    release = bsroot / "html" / "static" / "flatcar" / "stable" / VERSION
    release.mkdir(parents=True)
    for name in ("flatcar_production_pxe.vmlinuz", "flatcar_production_pxe_image.cpio.gz"):
        (release / name).write_bytes(os.urandom(size))
    (release / "version.txt").write_text(f"FLATCAR_VERSION={VERSION}\n")
    (release.parent / "current").symlink_to(VERSION)
    return release


def curl(lab: DHCPLab, *args: str) -> str:
    result = lab.cli.run(["curl", "-sS", "--max-time", "60", *args], timeout=90)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_simulated_boot_on_the_status_page(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dhclient", "tftp", "curl")
    need_chromium()
    mirror(bsroot)
    (bsroot / "tftpboot" / "undionly.kpxe").write_bytes(os.urandom(70_000))
    lab = DHCPLab.build(netlab, bsroot, WORKER)
    daemon = lab.start_daemon()
    # DHCP, then the boot file over TFTP, as the firmware would.
    log, output = lab.dhclient()
    assert any(e.get("reason") == "BOUND" for e in events(log)), output
    got = bsroot.parent / "undionly.kpxe"
    lab.cli.run(["tftp", "-m", "binary", SERVER, "-c", "get", "undionly.kpxe", str(got)])
    assert got.stat().st_size == 70_000
    # iPXE: its script, then the kernel and initrd it names.
    script = curl(lab, f"{BASE}/ipxe/{WORKER.replace(':', '-')}")
    urls = [w for w in script.split() if w.startswith("http://")]
    kernel_url = next(u for u in urls if u.endswith(".vmlinuz"))
    initrd_url = next(u for u in urls if u.endswith(".cpio.gz"))
    assert kernel_url == f"{BASE}/static/flatcar/stable/current/flatcar_production_pxe.vmlinuz"
    for url in (kernel_url, initrd_url):
        curl(lab, "-o", "/dev/null", url)
    # The live system: install.sh and its config; then install.sh's report.
    install = curl(lab, f"{BASE}/install.sh")
    assert f"VERSION={VERSION}" in install
    ignition = json.loads(curl(lab, f"{BASE}/ignition/{WORKER}.json"))
    paths = {f["path"] for f in ignition["storage"]["files"]}
    assert "/etc/kubernetes/ssl/ca.pem" in paths
    assert not [p for p in paths if p.endswith("-key.pem")]  # the machine makes its keys
    curl(
        lab,
        "-f",
        "-X",
        "POST",
        "--data-urlencode",
        "event=installed",
        f"{BASE}/api/v1/nodes/{WORKER}/report",
    )

    node = json.loads(curl(lab, f"{BASE}/api/v1/nodes/{WORKER}"))
    assert node["stage"] == "installed"
    assert node["hostname"] == "worker1"
    steps = [(e["source"], e["kind"]) for e in node["timeline"]]
    for step in [
        ("dhcp", "ack"),
        ("tftp", "transfer"),
        ("http", "ipxe-script"),
        ("http", "kernel"),
        ("http", "initrd"),
        ("http", "install.sh"),
        ("http", "ignition"),
        ("install", "installed"),
    ]:
        assert step in steps, (step, steps)
    assert (
        steps.index(("dhcp", "ack"))
        < steps.index(("tftp", "transfer"))
        < steps.index(("http", "ipxe-script"))
        < steps.index(("install", "installed"))
    )

    # The operator's page, in Chromium, from the machines' network.
    probe = lab.cli.run(
        [sys.executable, "-m", "tests.integration.status_probe", f"{BASE}/", WORKER, "installed"],
        timeout=120,
        cwd=REPO,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    page = json.loads(probe.stdout)
    rows = {row["mac"]: row for row in page["rows"]}
    assert rows[WORKER]["hostname"] == "worker1"
    assert rows[WORKER]["ip"] == node["ip"]
    assert rows["52:54:00:77:00:10"]["stage"].lower() in ("not seen", "—", "-", "")
    assert page["errors"] == []
    assert page["hosts"] == [SERVER]
    assert "1 installed" in page["summary"]
    # Every HTTP request of the machine was logged with its MAC.
    wait_until(lambda: f"mac={WORKER}" in daemon.output and "/install.sh" in daemon.output)


def test_mirror_range_head_and_etag_with_curl(netlab: NetLab, bsroot: Path) -> None:
    need_tools("curl")
    release = mirror(bsroot, size=4096)
    image = release / "flatcar_production_image.bin.bz2"
    data = os.urandom(64 << 20)
    image.write_bytes(data)
    lab = DHCPLab.build(netlab, bsroot)
    lab.cli.ip("addr", "add", "10.77.0.50/24", "dev", "node0")
    lab.start_daemon()
    url = f"{BASE}/static/flatcar/stable/current/flatcar_production_image.bin.bz2"
    out = bsroot.parent / "image"
    headers = curl(lab, "-D", "-", "-o", str(out), url)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    etag = next(
        line.split(":", 1)[1].strip()
        for line in headers.splitlines()
        if line.lower().startswith("etag:")
    )
    part = curl(lab, "-D", "-", "-r", "1000000-1999999", "-o", str(out), url)
    assert part.startswith("HTTP/1.1 206")
    assert f"content-range: bytes 1000000-1999999/{len(data)}" in part.lower()
    assert out.read_bytes() == data[1_000_000:2_000_000]
    tail = curl(lab, "-r", "-100", "-o", str(out), url)
    assert tail == ""
    assert out.read_bytes() == data[-100:]
    head = curl(lab, "-I", url)
    assert head.startswith("HTTP/1.1 200")
    assert f"content-length: {len(data)}" in head.lower()
    same = curl(lab, "-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}", url)
    assert same == "304"
    # A resumed download (what pack and flatcar-install do after a cut) completes the file.
    out.write_bytes(data[: 10 << 20])
    curl(lab, "-C", "-", "-o", str(out), url)
    assert out.read_bytes() == data
    # The mirror as flatcar-install -b sees it: <base>/<version>/<file> and current/version.txt.
    version = curl(lab, f"{BASE}/static/flatcar/stable/current/version.txt")
    assert version == f"FLATCAR_VERSION={VERSION}\n"


def test_own_files_only_to_the_lease_holder_and_keys_to_nobody(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("dhclient", "curl")
    lab = DHCPLab.build(netlab, bsroot, WORKER)
    lab.cli.ip("addr", "add", "10.77.0.50/24", "dev", "node0")  # nobody's lease
    daemon = lab.start_daemon()
    private = (f"{BASE}/cloud-config/{WORKER}", f"{BASE}/ignition/{WORKER}.json")

    def status(url: str, source: str) -> str:
        return curl(lab, "--interface", source, "-o", "/dev/null", "-w", "%{http_code}", url)

    for url in private:
        assert status(url, "10.77.0.50") == "403", url
    assert status(f"{BASE}/tls/ca.pem", "10.77.0.50") == "200"
    wait_until(lambda: "client is not this machine" in daemon.output)
    log, output = lab.dhclient()
    bound = [e for e in events(log) if e.get("reason") == "BOUND"]
    assert bound, output
    leased = bound[0]["new_ip_address"]
    lab.cli.ip("addr", "add", "10.77.0.50/24", "dev", "node0")  # the client script flushed it
    for url in private:
        assert status(url, leased) == "200", url
        assert status(url, "10.77.0.50") == "403", url
    # A machine's keys are made on the machine: nobody, not even the lease holder, gets one.
    for source in (leased, "10.77.0.50"):
        assert status(f"{BASE}/tls/{WORKER}/worker-key.pem", source) == "404", source
    for url in private:
        text = curl(lab, "--interface", leased, url)
        assert "PRIVATE" not in urllib.parse.unquote(text), url
