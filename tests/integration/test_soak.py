"""The soak's short form: ~10^4 malformed inputs per protocol (DHCP, TFTP, DNS over UDP; HTTP
over TCP) against the running daemon in namespaces, with bench.soak's own code. Afterwards the
daemon's log has no traceback, every service answers a real client, and the malformed counters
of /metrics moved."""

from __future__ import annotations

from pathlib import Path

from bench.soak import PROTOCOLS, SoakLab, soak
from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools

PACKETS = 10_000


def test_soak_leaves_every_service_answering(netlab: NetLab, bsroot: Path, tmp_path: Path) -> None:
    need_tools("dig", "tftp", "curl")
    lab = SoakLab.build(netlab, bsroot, tmp_path)
    results, log = soak(lab, PROTOCOLS, PACKETS)
    assert "Traceback" not in log, log[-4000:]
    for result in results:
        assert result.error is None, result
        assert result.sent == PACKETS, result
        assert result.unanswered == [], result
        assert result.tracebacks == 0, result
    counted = {result.protocol: result.malformed_counted for result in results}
    assert all(counted[protocol] > 0 for protocol in ("dhcp", "tftp", "dns")), counted
