"""A reload that reserves an address another machine leases never hands the new node's keys to
the machine on that address: the lease holder keeps its own (and only its own) until its lease
ends, its renewal is refused, and the reload warns about the conflict."""

from __future__ import annotations

import signal
from pathlib import Path

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.integration.dhcp_lab import DHCPLab, events, wait_until

HOLDER = "52:54:00:ab:cd:41"  # not in the description: leases from the pool
NEWCOMER = "52:54:00:77:00:42"  # added by the reload, with the holder's address reserved
BASE = "http://10.77.0.1"


def status(lab: DHCPLab, url: str) -> str:
    result = lab.cli.run(
        ["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}", url],
        timeout=60,
    )
    return result.stdout.strip()


def test_a_reservation_of_a_leased_address_hands_out_no_keys(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dhclient", "curl")
    lab = DHCPLab.build(netlab, bsroot, HOLDER)
    daemon = lab.start_daemon()
    log, output = lab.dhclient()
    bound = [e for e in events(log) if e.get("reason") == "BOUND"]
    assert bound, output
    leased = bound[-1]["new_ip_address"]
    assert status(lab, f"{BASE}/ignition/{HOLDER}.json") == "200"  # its own, from its address

    desc = bsroot / "config" / "cluster-desc.yml"
    desc.write_text(
        desc.read_text()
        + f'  - mac: "{NEWCOMER}"\n    cur_host_name: "newcomer"\n    ip: {leased}\n'
        + "    kube_master: y\n    etcd_member: n\n"
    )
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "is leased to another machine" in daemon.output, what="conflict warning")
    assert f"held_by={HOLDER}" in daemon.output
    assert "reloaded cluster model" in daemon.output

    # The machine on the address is the holder: the newcomer's keys are not served there...
    assert status(lab, f"{BASE}/ignition/{NEWCOMER}.json") == "403"
    assert status(lab, f"{BASE}/tls/{NEWCOMER}/apiserver-key.pem") == "404"  # to nobody
    # ...and the holder is still served its own.
    assert status(lab, f"{BASE}/ignition/{HOLDER}.json") == "200"

    # Its renewal is refused: asked again for its address (same lease file), it is NAKed,
    # starts over and gets another one.
    lab.dhclient("-x")  # stop the first client without releasing
    seen = len(events(log))
    log, output = lab.dhclient()
    after = events(log)[seen:]
    bound = [e for e in after if e.get("reason") in ("BOUND", "REBOOT")]
    assert bound, output
    assert bound[-1]["new_ip_address"] != leased, output
    assert "NAK" in daemon.output
