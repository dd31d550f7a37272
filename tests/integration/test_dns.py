"""`dig` (UDP and TCP) from a client namespace against `bootstrapperd serve`: the cluster's
names, PTR, SOA, NS, SRV, NXDOMAIN vs NODATA, a name that appears with a DHCP lease,
forwarding to an upstream the test runs (dnsmasq), upstream down, no forwarding for clients
outside the subnet, truncation then TCP, and garbage that is survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import Namespace, NetLab
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import SERVER, DHCPLab, events, wait_until

pytestmark = pytest.mark.netns

UPSTREAM = "10.77.0.53"
OUTSIDER = "192.168.50.2"


def dig(ns: Namespace, *args: str) -> str:
    result = ns.run(["dig", f"@{SERVER}", "+time=3", "+tries=1", *args], timeout=30)
    return result.stdout


def answer(ns: Namespace, *args: str) -> list[str]:
    """The answer section, one record per line, whitespace normalised."""
    out = dig(ns, "+noall", "+answer", *args)
    return [" ".join(line.split()) for line in out.splitlines() if line and line[0] != ";"]


def status(ns: Namespace, *args: str) -> str:
    out = dig(ns, "+noall", "+comments", *args)
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return f"no answer: {out}"


def start(
    netlab: NetLab, bsroot: Path, desc_extra: str = "", upstream: bool = False
) -> tuple[DHCPLab, DaemonProcess]:
    desc = bsroot / "config" / "cluster-desc.yml"
    text = desc.read_text()
    if upstream:
        text = text.replace("upstreamnameservers: []", f"upstreamnameservers: [{UPSTREAM}]")
    desc.write_text(text + desc_extra)
    lab = DHCPLab.build(netlab, bsroot)
    lab.cli.ip("addr", "add", "10.77.0.10/24", "dev", "node0")
    daemon = lab.start_daemon()
    wait_until(lambda: "service=dns" in daemon.output, what="dns listening")
    return lab, daemon


def start_upstream(lab: DHCPLab) -> subprocess.Popen[bytes]:
    """dnsmasq on another address of the server namespace, as the cluster's upstream."""
    lab.srv.ip("addr", "add", f"{UPSTREAM}/24", "dev", "bs0")
    conf = lab.scratch / "upstream.conf"
    conf.write_text(
        f"port=53\nlisten-address={UPSTREAM}\nbind-interfaces\nno-resolv\nno-hosts\nlocal-ttl=300\n"
        "address=/upstream.test/10.1.2.3\nhost-record=big.upstream.test,10.1.2.4\n"
        f"pid-file={lab.scratch}/upstream.pid\nuser=root\n"
    )
    proc = lab.srv.spawn(["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground"])
    wait_until(
        lambda: "10.1.2.3" in dig(lab.srv, "+short", f"@{UPSTREAM}", "x.upstream.test"),
        what="upstream answering",
    )
    return proc


def test_local_names_over_udp_and_tcp(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig")
    lab, _daemon = start(netlab, bsroot)
    cli = lab.cli
    for transport in ("+notcp", "+tcp"):
        assert answer(cli, transport, "master1.cluster.example") == [
            "master1.cluster.example. 60 IN A 10.77.0.10"
        ]
        assert answer(cli, transport, "MASTER1.Cluster.EXAMPLE", "+short") == ["10.77.0.10"]
        assert answer(cli, transport, "master1", "+short") == ["10.77.0.10"]
        assert answer(cli, transport, "-x", "10.77.0.10", "+short") == ["master1.cluster.example."]
        assert answer(cli, transport, "bootstrapper.cluster.example", "+short") == [SERVER]
        assert answer(cli, transport, "bootstrapper", "+short") == [SERVER]
        assert answer(cli, transport, "-x", SERVER, "+short") == ["bootstrapper.cluster.example."]
        soa = answer(cli, transport, "cluster.example", "SOA", "+short")
        assert soa
        assert soa[0].startswith("bootstrapper.cluster.example. hostmaster.cluster.example.")
        assert answer(cli, transport, "cluster.example", "NS", "+short") == [
            "bootstrapper.cluster.example."
        ]
        assert answer(cli, transport, "0.77.10.in-addr.arpa", "NS", "+short") == [
            "bootstrapper.cluster.example."
        ]
        srv = dig(cli, transport, "+noall", "+answer", "+additional", "SRV",
                  "_etcd-server._tcp.cluster.example")  # fmt: skip
        assert "SRV\t0 0 2380 master1.cluster.example." in srv
        assert "master1.cluster.example. 60\tIN\tA\t10.77.0.10" in srv  # glue
        client = answer(cli, transport, "SRV", "_etcd-client._tcp.cluster.example", "+short")
        assert client == ["0 0 2379 master1.cluster.example."]
        # NXDOMAIN (with the SOA) vs NODATA (the name exists, not with that type).
        assert status(cli, transport, "nosuch.cluster.example") == "NXDOMAIN"
        out = dig(cli, transport, "+noall", "+authority", "nosuch.cluster.example")
        assert "SOA\tbootstrapper.cluster.example." in out
        assert status(cli, transport, "master1.cluster.example", "AAAA") == "NOERROR"
        assert answer(cli, transport, "master1.cluster.example", "AAAA") == []
        assert status(cli, transport, "_tcp.cluster.example") == "NOERROR"  # empty non-terminal
        assert status(cli, transport, "-x", "10.77.0.99") == "NXDOMAIN"
        # Air-gapped (no upstream): a name elsewhere fails at once, local names still answer.
        assert status(cli, transport, "example.com") in ("SERVFAIL", "REFUSED")


def test_a_name_appears_with_its_dhcp_lease(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig", "dhclient")
    desc = bsroot / "config" / "cluster-desc.yml"
    lab = DHCPLab.build(netlab, bsroot, "52:54:00:77:00:11")  # worker1: no static address
    daemon = lab.start_daemon()
    wait_until(lambda: "service=dns" in daemon.output, what="dns listening")
    assert status(lab.srv, "worker1.cluster.example") == "NXDOMAIN"  # no lease yet
    log, output = lab.dhclient()
    bound = [e for e in events(log) if e.get("reason") == "BOUND"]
    assert bound, output
    address = bound[-1]["new_ip_address"]
    assert answer(lab.cli, "worker1.cluster.example", "+short") == [address]
    assert answer(lab.cli, "worker1", "+short") == [address]
    assert answer(lab.cli, "-x", address, "+short") == ["worker1.cluster.example."]
    # Released: the name goes (NXDOMAIN at once, not a stale address).
    lab.dhclient("-r")
    wait_until(lambda: status(lab.cli, "worker1.cluster.example") == "NXDOMAIN", what="gone")
    assert desc.exists()


def test_forwarding_cache_and_upstream_down(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig", "dnsmasq")
    lab, daemon = start(netlab, bsroot, upstream=True)
    upstream = start_upstream(lab)
    assert answer(lab.cli, "www.upstream.test", "+short") == ["10.1.2.3"]
    assert answer(lab.cli, "+tcp", "tcp.upstream.test", "+short") == ["10.1.2.3"]
    assert status(lab.cli, "WWW.Upstream.Test") == "NOERROR"
    before_outage = len(daemon.output)
    upstream.terminate()
    upstream.wait(timeout=10)
    # Cached answers survive the upstream; new names fail with SERVFAIL, not silence.
    assert answer(lab.cli, "www.upstream.test", "+short") == ["10.1.2.3"]
    assert status(lab.cli, "new.upstream.test") == "SERVFAIL"
    assert status(lab.cli, "other.upstream.test") == "SERVFAIL"
    assert answer(lab.cli, "master1.cluster.example", "+short") == ["10.77.0.10"]
    # One log line for the outage, not one per query. (Counted from the outage on: anything in
    # the namespace that asked for an outside name before the upstream had started made an
    # outage of its own, logged once too.)
    output = daemon.output[before_outage:]
    assert sum("10.77.0.53" in x and "WARNING" in x for x in output.splitlines()) == 1, output


def test_no_forwarding_for_clients_outside_the_subnet(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig", "dnsmasq")
    lab, _daemon = start(netlab, bsroot, upstream=True)
    start_upstream(lab)
    lab.cli.ip("addr", "add", f"{OUTSIDER}/24", "dev", "node0")
    lab.srv.ip("route", "add", "192.168.50.0/24", "dev", "bs0")
    assert answer(lab.cli, "www.upstream.test", "+short") == ["10.1.2.3"]  # inside: forwarded
    assert status(lab.cli, "-b", OUTSIDER, "www2.upstream.test") == "REFUSED"
    assert status(lab.cli, "-b", OUTSIDER, "www.upstream.test") == "REFUSED"  # not from cache
    assert answer(lab.cli, "-b", OUTSIDER, "master1.cluster.example", "+short") == ["10.77.0.10"]


def test_large_answer_truncated_then_served_over_tcp(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig")
    extra = "".join(
        f'  - mac: "52:54:00:77:01:{i:02x}"\n    cur_host_name: "etcd{i:02d}"\n'
        f"    ip: 10.77.0.{150 + i}\n    etcd_member: y\n"
        for i in range(30)
    )
    lab, _daemon = start(netlab, bsroot, desc_extra=extra)
    name = "_etcd-server._tcp.cluster.example"
    udp = dig(lab.cli, "+noedns", "+ignore", "+noall", "+comments", "SRV", name)
    assert " tc" in udp.split("flags:")[1].split(";")[0], udp
    full = answer(lab.cli, "+noedns", "SRV", name)  # dig retries over TCP by itself
    assert len(full) == 31, full  # master1 and the 30 etcd members
    assert len(answer(lab.cli, "+tcp", "SRV", name)) == 31


def test_garbage_is_survived(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig")
    lab, daemon = start(netlab, bsroot)
    junk = [b"", b"\x00", os.urandom(11), os.urandom(12), os.urandom(300), b"\xff" * 512,
            bytes.fromhex("1234010000010000000000000377777706"),  # name cut short
            bytes.fromhex("123481800001000000000000"),  # a response, not a query
            bytes.fromhex("12340100000100000000000103777777000001000100")]  # fmt: skip
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "for h in sys.argv[2:]: s.sendto(bytes.fromhex(h),(sys.argv[1],53))\n"
    )
    lab.cli.run([sys.executable, "-c", script, SERVER, *(j.hex() for j in junk)], check=True)
    tcp = lab.cli.run(
        [sys.executable, "-c",
         "import socket;s=socket.create_connection(('10.77.0.1',53));"
         "s.sendall(b'\\x00\\x20'+b'\\xff'*32);s.close()"],
        check=True,
    )  # fmt: skip
    assert tcp.returncode == 0
    assert answer(lab.cli, "master1.cluster.example", "+short") == ["10.77.0.10"]
    assert answer(lab.cli, "+tcp", "master1.cluster.example", "+short") == ["10.77.0.10"]
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.output


def test_a_reload_swaps_the_names(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig")
    lab, daemon = start(netlab, bsroot)
    assert status(lab.cli, "worker9.cluster.example") == "NXDOMAIN"
    desc = bsroot / "config" / "cluster-desc.yml"
    desc.write_text(
        desc.read_text()
        + '  - mac: "52:54:00:77:00:99"\n    cur_host_name: "worker9"\n    ip: 10.77.0.99\n'
    )
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "generation=2" in daemon.output, what="reloaded")
    assert answer(lab.cli, "worker9.cluster.example", "+short") == ["10.77.0.99"]
    assert answer(lab.cli, "-x", "10.77.0.99", "+short") == ["worker9.cluster.example."]
    assert answer(lab.cli, "master1.cluster.example", "+short") == ["10.77.0.10"]
