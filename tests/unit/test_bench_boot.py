"""bench/boot.py's pure parts: the machine and network from the example, dnsmasq's configuration,
the files http.server serves, its access log, the timeline, medians, ratios and the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.boot import (
    DEFAULT_MAC,
    EXAMPLE,
    BootResult,
    build_parser,
    config_fetched_at,
    description_text,
    ratios,
    render_table,
    summarise,
)
from bench.boot_reference import (
    RA_ADDRESS,
    LogWatch,
    Target,
    config_kind,
    config_paths,
    config_prefix,
    dnsmasq_conf,
    http_server_argv,
    network_of,
    parse_access,
    target_of,
)
from bench.harness import server_order
from bootstrapperd.lab.netlab import LabError
from bootstrapperd.model import ClusterModel, load_cluster_file

IPXE = """#!ipxe
# bootstrapperd: master1 (52:54:00:77:00:10)
kernel http://10.77.0.1/static/flatcar/stable/current/flatcar_production_pxe.vmlinuz \
initrd=flatcar_production_pxe_image.cpio.gz flatcar.first_boot=1 \
ignition.config.url=http://10.77.0.1/ignition/52-54-00-77-00-10.json console=ttyS0,115200n8
initrd http://10.77.0.1/static/flatcar/stable/current/flatcar_production_pxe_image.cpio.gz
boot
"""
INSTALL = """#!/bin/sh
SERVER=http://10.77.0.1
if ! fetch "$SERVER/ignition/$MAC.json" "$CONFIG"; then
  exit 1
fi
"""

MASTER = Target(
    DEFAULT_MAC,
    "master1",
    "master1.cluster.example",
    "10.77.0.10",
    (("master1.cluster.example", "10.77.0.10"),),
)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> ClusterModel:
    path = tmp_path_factory.mktemp("desc") / "cluster-desc.yml"
    path.write_text(description_text(EXAMPLE.read_text()))
    return load_cluster_file(path)


def result(server: str, round_: int, fetched: float | None, off: float | None) -> BootResult:
    ok = fetched is not None and off is not None
    return BootResult(
        server,
        round_,
        ok=ok,
        error=None if ok else "ended install-failed",
        fetched_s=fetched,
        off_s=off,
        outcome="installed" if ok else "install-failed",
        accel="tcg",
        server_cpu_s=0.4 if server == "bootstrapperd" else 0.1,
        router_advertisements=True,
    )


def test_command_line() -> None:
    args = build_parser().parse_args([])
    assert (args.rounds, args.ra, args.mac, args.timeout) == (3, True, DEFAULT_MAC, 300)
    assert args.servers == ["bootstrapperd", "dnsmasq"]
    args = build_parser().parse_args(["--rounds", "5", "--no-ra", "--servers", "dnsmasq"])
    assert (args.rounds, args.ra, args.servers) == (5, False, ["dnsmasq"])
    for bad in (["--rounds", "0"], ["--servers", "kea"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
    assert [server_order(["bootstrapperd", "dnsmasq"], r)[0] for r in (1, 2, 3)] == [
        "bootstrapperd",
        "dnsmasq",
        "bootstrapperd",
    ]


def test_description_turns_the_registry_off(example: ClusterModel) -> None:
    assert description_text("a: 1\n").endswith("\nregistry:\n  mode: off\n")
    assert str(example.registry.mode) == "off"


def test_target_and_network_from_the_example(example: ClusterModel) -> None:
    master = target_of(example, DEFAULT_MAC)
    assert (master.hostname, master.fqdn, master.ip) == (
        "master1",
        "master1.cluster.example",
        "10.77.0.10",
    )
    assert master.records == (("master1.cluster.example", "10.77.0.10"),)
    # A worker without a static address: the pool's first address, and the master's record too.
    worker = target_of(example, "52-54-00-77-00-11")
    assert (worker.mac, worker.ip) == ("52:54:00:77:00:11", "10.77.0.100")
    assert worker.records == (
        ("worker1.cluster.example", "10.77.0.100"),
        ("master1.cluster.example", "10.77.0.10"),
    )
    with pytest.raises(LabError):
        target_of(example, "52:54:00:aa:bb:cc")
    net = network_of(example)
    assert (net.bootstrapper, net.netmask, net.pool_low, net.pool_high) == (
        "10.77.0.1",
        "255.255.255.0",
        "10.77.0.100",
        "10.77.0.199",
    )
    assert (net.lease, net.domain, net.http_port, net.http_base) == (
        str(12 * 3600),
        "cluster.example",
        80,
        "http://10.77.0.1",
    )


def test_dnsmasq_configuration(example: ClusterModel, tmp_path: Path) -> None:
    net, target = network_of(example), target_of(example, DEFAULT_MAC)
    run_dir, tftp = tmp_path / "run", tmp_path / "run" / "tftpboot"
    lines = dnsmasq_conf(run_dir, tftp, net, target).splitlines()
    for line in (
        "interface=bs0",
        "bind-interfaces",
        "listen-address=10.77.0.1",
        "no-resolv",
        "domain=cluster.example",
        "local=/cluster.example/",
        # DNS: the names the stand-in OS resolves
        "host-record=master1.cluster.example,10.77.0.10",
        # DHCP: the same address and name for the machine as bootstrapperd gives it
        "dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,43200",
        "dhcp-host=52:54:00:77:00:10,set:bench,10.77.0.10,master1",
        "dhcp-option=option:router,10.77.0.1",
        "dhcp-option=option:dns-server,10.77.0.1",
        # iPXE gets bootstrapperd's iPXE script URL; PXE firmware the iPXE binaries by TFTP
        "dhcp-match=set:ipxe,175",
        "dhcp-userclass=set:ipxe,iPXE",
        "dhcp-boot=tag:ipxe,tag:bench,http://10.77.0.1/ipxe/52:54:00:77:00:10",
        "dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,10.77.0.1",
        "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,10.77.0.1",
        # the reference tuning
        "dhcp-option=tag:ipxe,encap:175,176,1b",
        "enable-ra",
        "dhcp-range=::,constructor:bs0,ra-only,64,1h",
        "no-ping",
        "enable-tftp",
        f"tftp-root={tftp}",
        # everything it writes in the run directory
        f"dhcp-leasefile={run_dir}/dnsmasq.leases",
        f"log-facility={run_dir}/dnsmasq.log",
        f"pid-file={run_dir}/dnsmasq.pid",
        "user=root",
    ):
        assert line in lines, line
    assert not any(line.startswith("port=") for line in lines)  # DNS stays on
    assert RA_ADDRESS == "fd77::1/64"
    no_ra = dnsmasq_conf(run_dir, tftp, net, target, ra=False).splitlines()
    assert "enable-ra" not in no_ra
    assert not any("ra-only" in line for line in no_ra)
    assert "no-ping" in no_ra
    assert "dhcp-option=tag:ipxe,encap:175,176,1b" in no_ra
    assert set(lines) - set(no_ra) == {
        "enable-ra",
        "dhcp-range=::,constructor:bs0,ra-only,64,1h",
        "# RA so iPXE's IPv6 autoconfiguration completes instead of timing out (~13 s)",
    }


def test_worker_reservation_and_records(example: ClusterModel, tmp_path: Path) -> None:
    text = dnsmasq_conf(
        tmp_path, tmp_path, network_of(example), target_of(example, "5254.0077.0011")
    )
    lines = text.splitlines()
    assert "dhcp-host=52:54:00:77:00:11,set:bench,10.77.0.100,worker1" in lines
    assert "host-record=worker1.cluster.example,10.77.0.100" in lines
    assert "host-record=master1.cluster.example,10.77.0.10" in lines
    assert "dhcp-boot=tag:ipxe,tag:bench,http://10.77.0.1/ipxe/52:54:00:77:00:11" in lines


def test_config_paths_kind_and_prefix() -> None:
    assert config_kind(IPXE) == "ignition"
    assert config_kind("kernel x cloud-config-url=http://s/cloud-config/m\n") == "cloud-config"
    with pytest.raises(LabError):
        config_kind("#!ipxe\nkernel http://s/vmlinuz\n")
    paths = config_paths(IPXE, INSTALL, DEFAULT_MAC)
    assert paths == [
        "/ignition/52-54-00-77-00-10.json",
        "/ignition/52:54:00:77:00:10.json",
    ]
    assert config_prefix(paths) == "/ignition/"
    with pytest.raises(LabError):
        config_prefix(["/ignition/a.json", "/cloud-config/a"])
    assert http_server_argv("10.77.0.1", 80, Path("/r"))[-6:] == [
        "http.server",
        "80",
        "--bind",
        "10.77.0.1",
        "--directory",
        "/r",
    ]


LOG = """\
Serving HTTP on 10.77.0.1 port 80 (http://10.77.0.1:80/) ...
10.77.0.10 - - [26/Nov/2026 20:08:07] "GET /ipxe/52%3A54%3A00%3A77%3A00%3A10 HTTP/1.1" 200 -
10.77.0.10 - - [26/Nov/2026 20:08:12] code 501, message Unsupported method ('POST')
10.77.0.10 - - [26/Nov/2026 20:08:12] "POST /api/v1/nodes/52:54:00:77:00:10/report HTTP/1.1" 501 -
10.77.0.10 - - [26/Nov/2026 20:08:13] "GET /install.sh HTTP/1.1" 200 -
10.77.0.10 - - [26/Nov/2026 20:08:13] "GET /ignition/52:54:00:77:00:10.json HTTP/1.1" 200 -
"""


def test_access_log_parsing() -> None:
    parsed = [parse_access(line) for line in LOG.splitlines()]
    assert parsed[0] is None
    assert parsed[2] is None
    first = parsed[1]
    assert first is not None
    assert (first.client, first.method, first.path, first.status) == (
        "10.77.0.10",
        "GET",
        "/ipxe/52%3A54%3A00%3A77%3A00%3A10",
        200,
    )
    post = parsed[3]
    assert post is not None
    assert (post.method, post.status) == ("POST", 501)
    last = parsed[5]
    assert last is not None
    assert last.path == "/ignition/52:54:00:77:00:10.json"
    assert parse_access('1.2.3.4 - - [x] "GET /a HTTP/1.0" 404 -\n') is not None


def seen(watch: LogWatch) -> float | None:
    return watch.seen_at


def test_log_watch_sees_the_config_fetch_once(tmp_path: Path) -> None:
    log = tmp_path / "http.log"
    watch = LogWatch(log, "/ignition/")
    watch.poll()  # no file yet
    assert seen(watch) is None
    lines = LOG.splitlines(keepends=True)
    log.write_text("".join(lines[:5]))
    watch.poll()
    assert seen(watch) is None
    with log.open("a") as out:
        out.write(lines[5][:30])  # half a line: not yet
    watch.poll()
    assert seen(watch) is None
    with log.open("a") as out:
        out.write(lines[5][30:])
    watch.poll()
    first = seen(watch)
    assert first is not None
    assert watch.line is not None
    assert "GET /ignition/52:54:00:77:00:10.json" in watch.line
    with log.open("a") as out:
        out.write(lines[5])
    watch.poll()
    assert seen(watch) == first


def test_config_fetched_from_the_timeline() -> None:
    timeline = [
        {"at": 100.0, "source": "dhcp", "kind": "ack"},
        {"at": 101.0, "source": "http", "kind": "ipxe-script"},
        {"at": 105.0, "source": "install", "kind": "ignition"},
        {"at": 106.5, "source": "http", "kind": "ignition", "status": 200},
        {"at": 107.0, "source": "http", "kind": "ignition", "status": 200},
    ]
    assert config_fetched_at(timeline) == 106.5
    assert config_fetched_at([{"at": 3, "source": "http", "kind": "cloud-config"}]) == 3.0
    assert config_fetched_at(timeline[:3]) is None


def boots() -> list[BootResult]:
    return [
        result("bootstrapperd", 1, 7.0, 7.5),
        result("dnsmasq", 1, 8.0, 8.5),
        result("dnsmasq", 2, 10.0, 10.5),
        result("bootstrapperd", 2, 9.0, 9.2),
        result("bootstrapperd", 3, 8.0, 8.3),
        result("dnsmasq", 3, None, None),  # a failed boot: no time
    ]


def test_medians_ranges_and_ratios() -> None:
    summaries = summarise(boots())
    ours, theirs = summaries
    assert (ours.server, ours.ok, ours.runs) == ("bootstrapperd", 3, 3)
    assert (ours.fetched_s.median, ours.fetched_s.low, ours.fetched_s.high) == (8.0, 7.0, 9.0)
    assert ours.off_s.median == 8.3
    assert (ours.server_cpu_s, theirs.server_cpu_s) == (0.4, 0.1)
    assert (theirs.server, theirs.ok, theirs.runs) == ("dnsmasq", 2, 3)
    assert (theirs.fetched_s.median, theirs.off_s.median) == (9.0, 9.5)
    assert ours.router_advertisements == "yes"
    fetched, off = ratios(summaries)
    assert fetched.ratio == pytest.approx(8.0 / 9.0)
    assert fetched.met is True
    assert off.ratio == pytest.approx(8.3 / 9.5)
    assert off.met is True
    slower = ratios(summarise([result("bootstrapperd", 1, 20.0, 21.0), *boots()[1:3]]))
    assert slower[0].ratio == pytest.approx(20.0 / 9.0)
    assert slower[0].met is False
    alone = ratios(summarise(boots()[:1]))
    assert alone[0].ratio is None
    assert alone[0].met is None


def test_table() -> None:
    results = boots()
    results[0].notes.append("lease ip=10.77.0.11 (expected ip=10.77.0.10)")
    text = render_table(
        summarise(results),
        results,
        MASTER,
        3,
        {"dnsmasq": "Dnsmasq version 2.90", "accel": "tcg"},
        ["load average (1 min) before/after: 0.50/0.70"],
    )
    lines = text.splitlines()
    assert lines[0].startswith("Boot (VM): master1 52:54:00:77:00:10 (BIOS, iPXE ROM), accel tcg")
    assert "median (min–max) of 3 rounds" in lines[0]
    header = (
        "| server | config fetched s | powered off s | server CPU s | installed/runs | IPv6 RA |"
    )
    assert header in lines
    assert "| bootstrapperd | 8.00 (7.00–9.00) | 8.30 (7.50–9.20) | 0.40 | 3/3 | yes |" in lines
    assert (
        "| dnsmasq + http.server | 9.00 (8.00–10.00) | 9.50 (8.50–10.50) | 0.10 | 2/3 | yes |"
        in lines
    )
    assert "| QEMU start → config fetched | 0.89 | ≤ 1.00 (met) |" in lines
    assert "| QEMU start → powered off | 0.87 | ≤ 1.00 (met) |" in lines
    assert "versions: dnsmasq: Dnsmasq version 2.90; accel: tcg" in lines
    assert "load average (1 min) before/after: 0.50/0.70" in lines
    assert "FAILED dnsmasq #3: ended install-failed" in lines
    assert "note bootstrapperd #1: lease ip=10.77.0.11 (expected ip=10.77.0.10)" in lines
    # Each markdown table: every row has as many cells as its header.
    for block in text.split("\n\n")[1:3]:
        rows = block.splitlines()
        assert rows[1].startswith("|---")
        assert {row.count("|") for row in rows} == {rows[0].count("|")}
