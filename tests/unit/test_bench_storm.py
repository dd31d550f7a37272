"""The boot storm's schedule, summaries, packets and parsing (no sockets)."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from bench.storm import (
    OURS,
    PXE_OPTIONS,
    REFERENCE,
    RSS_TARGET_MIB,
    STAGES,
    StageError,
    StormResult,
    TftpTransfer,
    failed_stages,
    failure_text,
    node_entries,
    parse_boots,
    percentile,
    ramp_schedule,
    relay_request,
    script_urls,
    stage_figures,
    storm_description,
    storm_mac,
    storm_ratios,
    summarise,
    tftp_rrq,
    verdicts,
)
from bootstrapperd.model import load_cluster_text
from protocols.dhcp.options import MessageType
from protocols.dhcp.packet import parse


def booted(mac: str, seconds: float) -> dict[str, Any]:
    """A machine that got through every stage, each taking ``seconds``."""
    return {"mac": mac, "ip": "10.78.1.1", "stages": dict.fromkeys(STAGES, seconds), "error": None}


def failed(mac: str, error: str, done: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"mac": mac, "ip": None, "stages": dict.fromkeys(done, 0.5), "error": error}


# --- the ramp and the figures -------------------------------------------------------------------


def test_the_ramp_starts_machines_evenly_over_its_seconds() -> None:
    schedule = ramp_schedule(200, 20.0)
    assert len(schedule) == 200
    assert schedule[0] == 0.0
    assert schedule[100] == pytest.approx(10.0)
    assert schedule[-1] == pytest.approx(19.9)
    assert schedule == sorted(schedule)


def test_no_ramp_starts_every_machine_at_once() -> None:
    assert ramp_schedule(3, 0.0) == [0.0, 0.0, 0.0]
    assert ramp_schedule(1, 60.0) == [0.0]
    assert ramp_schedule(0, 60.0) == []


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(list(reversed(values)), 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_stage_figures_count_only_machines_that_got_through_the_stage() -> None:
    boots = [booted(storm_mac(n), 0.01 * (n + 1)) for n in range(10)]
    boots.append(failed(storm_mac(10), "tftp: no answer after 5 sends", ("dhcp",)))
    figures = stage_figures(boots)
    assert list(figures) == list(STAGES)
    assert figures["dhcp"].count == 11
    assert figures["tftp"].count == 10
    assert figures["total"].p50 == pytest.approx(0.05)
    assert figures["total"].p99 == pytest.approx(0.10)


def test_failures_are_counted_by_stage_and_silent_machines_as_lost() -> None:
    boots = [
        booted(storm_mac(0), 0.1),
        failed(storm_mac(1), "dhcp: no OFFER after 4 tries"),
        failed(storm_mac(2), "config: HTTP 403 for http://10.78.0.1/ignition/x.json"),
        failed(storm_mac(3), "dhcp: deadline passed"),
    ]
    assert failed_stages(boots, machines=6) == {"dhcp": 2, "config": 1, "lost": 2}
    assert failed_stages(boots[:1], machines=1) == {}


def result(server: str, boots: list[dict[str, Any]], rss_mib: float, machines: int = 3) -> Any:
    return StormResult(
        server, 1, machines, 1.0, boots=boots, seconds=2.0, peak_rss_kib=int(rss_mib * 1024)
    )


def test_the_summary_gives_each_server_its_failures_stages_and_peak_rss() -> None:
    ours = result(OURS, [booted(storm_mac(n), 0.2) for n in range(3)], 70.0)
    theirs_boots = [booted(storm_mac(0), 0.1), booted(storm_mac(1), 0.1)]
    theirs_boots.append(failed(storm_mac(2), "tftp: error 1: file not found", ("dhcp",)))
    theirs = result(REFERENCE, theirs_boots, 20.0)
    summaries = summarise([ours, theirs])
    assert [s.server for s in summaries] == [OURS, REFERENCE]
    assert (summaries[0].booted, summaries[0].failures) == (3, 0)
    assert (summaries[1].booted, summaries[1].failures) == (2, 1)
    assert summaries[1].failed_at == {"tftp": 1}
    assert summaries[0].p50["total"] == pytest.approx(0.2)
    assert summaries[0].rss_met is True
    assert summaries[1].rss_met is None  # the target is bootstrapperd's
    ratios = {r.row: r.ratio for r in storm_ratios(summaries)}
    assert ratios["total p50"] == pytest.approx(2.0)
    assert ratios["dhcp p99"] == pytest.approx(0.4)  # their failed machine got its lease in 0.5 s
    assert ratios["peak RSS"] == pytest.approx(3.5)
    lines = verdicts(summaries)
    assert "failures (bootstrapperd): 0 (target 0: met)" in lines
    assert "failures (dnsmasq+nginx): 1 (target 0: NOT met)" in lines
    assert any("peak RSS (bootstrapperd): 70.0 MiB" in line and ": met)" in line for line in lines)


def test_a_peak_rss_over_the_target_is_not_met() -> None:
    over = result(OURS, [booted(storm_mac(0), 0.1)], RSS_TARGET_MIB + 1, machines=1)
    assert summarise([over])[0].rss_met is False


def test_a_storm_where_machines_failed_says_how_many_and_where() -> None:
    boots = [booted(storm_mac(0), 0.1), failed(storm_mac(1), "kernel: HTTP 503 for /k")]
    storm = result(OURS, boots, 60.0)
    text = failure_text(storm)
    assert text is not None
    assert text.startswith("2 of 3 machines failed (kernel 1, lost 1)")
    assert text.endswith("first: kernel: HTTP 503 for /k")
    assert failure_text(result(OURS, [booted(storm_mac(0), 0.1)], 60.0, machines=1)) is None


def test_only_the_machines_json_lines_are_read() -> None:
    out = '{"mac": "02:5b:00:00:00:00", "stages": {}, "error": null}\nnoise\n[1]\n{"x": 1}\n'
    assert [b["mac"] for b in parse_boots(out)] == ["02:5b:00:00:00:00"]


# --- what the machines send and read ------------------------------------------------------------


def test_a_machine_asks_as_a_bios_pxe_rom_through_the_relay() -> None:
    giaddr = IPv4Address("10.78.0.250")
    data = relay_request(MessageType.DISCOVER, storm_mac(5), 42, giaddr, extra=PXE_OPTIONS)
    packet = parse(data)
    assert packet.message_type is MessageType.DISCOVER
    assert packet.giaddr == giaddr
    assert packet.mac == "02:5b:00:00:00:05"
    assert packet.vendor_class is not None
    assert packet.vendor_class.startswith(b"PXEClient")
    assert packet.client_arch == (0,)


def test_the_ipxe_script_names_kernel_initrd_and_config() -> None:
    script = (
        "#!ipxe\n# bootstrapperd: worker (02:5b:00:00:00:01)\n"
        "kernel http://10.78.0.1/static/k.vmlinuz initrd=i.cpio.gz flatcar.first_boot=1 "
        "ignition.config.url=http://10.78.0.1/ignition/02-5b-00-00-00-01.json console=tty0\n"
        "initrd http://10.78.0.1/static/i.cpio.gz\nboot\n"
    )
    assert script_urls(script) == (
        "http://10.78.0.1/static/k.vmlinuz",
        "http://10.78.0.1/static/i.cpio.gz",
        "http://10.78.0.1/ignition/02-5b-00-00-00-01.json",
    )
    with pytest.raises(ValueError, match="names no kernel"):
        script_urls("#!ipxe\nboot\n")


def test_the_tftp_read_asks_for_a_block_size_and_acks_blocks_in_order() -> None:
    assert tftp_rrq("undionly.kpxe", 1432) == (
        b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00"
    )
    transfer = TftpTransfer()
    assert transfer.take(b"\x00\x06blksize\x004\x00tsize\x006\x00") == b"\x00\x04\x00\x00"
    assert transfer.blksize == 4
    assert transfer.take(b"\x00\x03\x00\x01abcd") == b"\x00\x04\x00\x01"
    assert transfer.take(b"\x00\x03\x00\x01abcd") == b"\x00\x04\x00\x01"  # a resent block
    assert transfer.take(b"\x00\x03\x00\x03zz") is None  # out of order: ignored
    assert not transfer.done
    assert transfer.take(b"\x00\x03\x00\x02ef") == b"\x00\x04\x00\x02"
    assert (transfer.done, transfer.size) == (True, 6)


def test_a_tftp_error_fails_the_stage() -> None:
    with pytest.raises(StageError, match="tftp: error 1: File not found"):
        TftpTransfer().take(b"\x00\x05\x00\x01File not found\x00")


def test_the_description_lists_every_machine() -> None:
    macs = [storm_mac(n) for n in range(300)]
    model = load_cluster_text(storm_description(macs))
    listed = {node.mac for node in model.nodes}
    assert set(macs) <= listed
    assert node_entries(macs[:1]) in storm_description(macs)
