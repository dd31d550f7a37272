"""``bootstrapperd demo``: check the bundled example, then serve it inside a private network lab.

The lab is two network namespaces joined by a veth pair: the bootstrapper side holds the
example's ``bootstrapper`` address; the machine side wears the MAC of one of the example's
nodes and gets its address, hostname and the rest from the daemon's DHCP (busybox ``udhcpc``).
The tour: check → pack a bsroot → ``serve`` (finding its interface by itself) → a DHCP lease on
the machine side → ``/healthz`` from there → its iPXE script over TFTP → its name through DNS
→ reload with SIGHUP → a broken reload that is refused → SIGTERM. Everything is removed at the
end, or on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO

from .model import ClusterModel, ConfigError, DHCPMode, load_cluster_file
from .netlab import LabError, Namespace, NetLab, unavailable_reason, wait_for_http
from .pack import init_bsroot
from .resources import example_cluster
from .summary import render_summary


def say(text: str = "") -> None:
    print(text, flush=True)


def _spare_address(model: ClusterModel) -> IPv4Address:
    """An address for the machine side: in the subnet, not the pool, not reserved, not a node's."""
    taken = {model.bootstrapper, *model.routers, *model.static_addresses}
    for host in reversed(list(model.network.hosts())):
        if host not in taken and host not in model.pool:
            return host
    raise LabError(f"no spare address left in {model.network} for the demo's client side")


UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in bound|renew)
  ip addr flush dev "$interface" scope global
  ip addr add "$ip/${mask:-24}" dev "$interface"
  echo "lease ip=$ip hostname=$hostname router=$router dns=$dns domain=$domain lease=${lease}s";;
esac
exit 0
"""


def _dhcp_lease(cli: Namespace, workdir: Path, interface: str) -> str:
    """Ask the daemon for a lease with busybox udhcpc, as a machine would; what it got."""
    script = workdir / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    argv = ["busybox", "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1"]
    result = cli.run([*argv, "-i", interface, "-s", str(script)], timeout=30)
    leases = [line for line in result.stdout.splitlines() if line.startswith("lease ")]
    if result.returncode != 0 or not leases:
        raise LabError(f"udhcpc got no lease: {result.stderr.strip() or result.stdout.strip()}")
    return leases[-1]


def _tftp_get(cli: Namespace, workdir: Path, name: str, server: str) -> str:
    """Fetch ``name`` from the daemon's TFTP server with busybox tftp, as firmware would."""
    out = workdir / "tftp-fetched"
    argv = ["busybox", "tftp", "-g", "-r", name, "-l", str(out), server]
    result = cli.run(argv, timeout=30)
    if result.returncode != 0 or not out.exists():
        raise LabError(f"tftp get {name} failed: {result.stderr.strip() or result.stdout.strip()}")
    return out.read_text(errors="replace")


def _resolve(cli: Namespace, server: str, name: str) -> str:
    """Resolve ``name`` through the daemon's DNS with dig, as a node would."""
    result = cli.run(["dig", f"@{server}", "+short", "+time=3", "+tries=2", name], timeout=30)
    lines = [x for x in result.stdout.splitlines() if x and not x.startswith(";")]
    if result.returncode != 0 or not lines:
        raise LabError(f"dig {name} failed: {result.stdout.strip() or result.stderr.strip()}")
    return " ".join(lines)


def _relay(stream: IO[bytes], prefix: str) -> threading.Thread:
    def pump() -> None:
        for raw in iter(stream.readline, b""):
            say(f"{prefix}{raw.decode(errors='replace').rstrip()}")

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _model_health(ns: Namespace, url: str) -> dict[str, object]:
    """The ``model`` part of /healthz, fetched from inside ``ns``."""
    health = json.loads(wait_for_http(ns, url))
    model: dict[str, object] = health["model"]
    return model


def run_demo(example: Path | None = None, hold: bool = False) -> int:
    reason = unavailable_reason()
    if reason is not None:
        say(f"bootstrapperd demo: cannot build the network lab: {reason}")
        return 1
    source = example or example_cluster()
    say(f"== bootstrapperd check {source}")
    try:
        model = load_cluster_file(source)
    except ConfigError as exc:
        say(str(exc))
        return 1
    say(render_summary(model))
    workdir = Path(tempfile.mkdtemp(prefix="bootstrapperd-demo-"))
    bsroot = init_bsroot(source, workdir / "bsroot")
    say(f"\n== bootstrapperd-pack wrote {bsroot.root}")
    prefix = model.network.prefixlen
    use_dhcp = model.dhcp.mode is DHCPMode.FULL and bool(model.nodes)
    client_ip = None if use_dhcp else _spare_address(model)
    interrupted = False
    try:
        with NetLab() as lab:
            srv = lab.namespace("srv")
            cli = lab.namespace("cli")
            client_address = None if client_ip is None else f"{client_ip}/{prefix}"
            lab.veth(srv, "bs0", cli, "node0", f"{model.bootstrapper}/{prefix}", client_address)
            machine = "node0 " + (str(client_ip) if client_ip else "(address from DHCP)")
            if use_dhcp:
                node = next((n for n in model.nodes if n.ip is not None), model.nodes[-1])
                cli.ip("link", "set", "node0", "address", node.mac)
                machine = f"node0 {node.mac}, {node.hostname} in the model, address from DHCP"
            say(f"== lab: {srv.name} (bs0 {model.bootstrapper}) <-veth-> {cli.name} ({machine})")
            argv = [sys.executable, "-m", "bootstrapperd", "serve", "--bsroot", str(bsroot.root)]
            say(f"== {srv.name}$ bootstrapperd serve --bsroot {bsroot.root}")
            # The lab is private: its registry runs as the docker-registry binary (when
            # installed), never as a container in this machine's own Docker engine.
            env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/bootstrapperd-demo.sock"}
            daemon = srv.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
            assert daemon.stdout is not None
            relay = _relay(daemon.stdout, "   daemon | ")
            url = f"http://{model.bootstrapper}:{model.http_port}/healthz"
            if use_dhcp:
                wait_for_http(srv, url)
                say(f"== {cli.name}$ udhcpc -i node0")
                say(f"   {_dhcp_lease(cli, workdir, 'node0')}")
            say(f"== {cli.name}$ curl {url}\n{wait_for_http(cli, url)}")
            if model.nodes:
                mac = node.mac if use_dhcp else model.nodes[0].mac
                name = f"ipxe/{mac}"
                say(f"== {cli.name}$ busybox tftp -g -r {name} {model.bootstrapper}")
                script = _tftp_get(cli, workdir, name, str(model.bootstrapper))
                say("\n".join(f"   {line}" for line in script.splitlines()))
                fqdn = next(n.fqdn for n in model.nodes if n.mac == mac)
                say(f"== {cli.name}$ dig @{model.bootstrapper} {fqdn} +short")
                say(f"   {_resolve(cli, str(model.bootstrapper), fqdn)}")
                _tour_http(cli, f"http://{model.bootstrapper}:{model.http_port}", mac, use_dhcp)
            if hold:
                say("\nserving; press Ctrl-C to stop and tear the lab down")
                signal.pause()
            _tour_reload(bsroot.cluster_desc, daemon, cli, url)
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=10)
            relay.join(timeout=2)
            say(f"== SIGTERM: the daemon exited {code} after {time.monotonic() - started:.2f} s")
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted; the lab has been torn down")
    except (LabError, subprocess.TimeoutExpired) as exc:
        say(f"bootstrapperd demo failed: {exc}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130
    say("== done: namespaces, processes and the scratch bsroot are gone")
    return 0 if code == 0 else 1


def _curl(cli: Namespace, url: str) -> str:
    result = cli.run(["curl", "-sS", "--max-time", "10", url], timeout=20)
    if result.returncode != 0:
        raise LabError(f"curl {url}: {result.stderr.strip()}")
    return result.stdout


def _tour_http(cli: Namespace, base: str, mac: str, own_address: bool) -> None:
    """What the live OS fetches next: install.sh, then its own configuration (served only to
    the address that holds its lease), and where the operator sees it in its boot."""
    script = _curl(cli, f"{base}/install.sh")
    say(f"== {cli.name}$ curl {base}/install.sh   ({len(script.splitlines())} lines; the gist:)")
    for line in script.splitlines():
        if line.startswith(("MIRROR=", "VERSION=", "INSTALLER=")):
            say(f"   {line}")
    if own_address:
        ignition = json.loads(_curl(cli, f"{base}/ignition/{mac}.json"))
        files = len(ignition["storage"]["files"])
        units = ", ".join(u["name"] for u in ignition["systemd"]["units"])
        say(f"== {cli.name}$ curl {base}/ignition/{mac}.json")
        say(f"   Ignition {ignition['ignition']['version']}: {files} files; units {units}")
    node = json.loads(_curl(cli, f"{base}/api/v1/nodes/{mac}"))
    steps = " -> ".join(f"{e['source']}:{e['kind']}" for e in node["timeline"])
    say(f"== {cli.name}$ curl {base}/api/v1/nodes/{mac}")
    say(f"   {node['hostname']}: stage {node['stage']}; timeline {steps}")


def _tour_reload(desc: Path, daemon: subprocess.Popen[bytes], cli: Namespace, url: str) -> None:
    original = desc.read_text()
    desc.write_text(original + '  - mac: "52:54:00:77:00:99"\n    cur_host_name: "worker9"\n')
    daemon.send_signal(signal.SIGHUP)
    model = _wait_generation(cli, url, 2)
    say(
        f"== added worker9 to cluster-desc.yml, SIGHUP: generation {model['generation']}, "
        f"{model['nodes']} nodes"
    )
    desc.write_text(original + "  - mac: 52:54:00:zz\n")
    daemon.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    kept = _model_health(cli, url)
    say(
        f"== broke cluster-desc.yml (bad MAC), SIGHUP: refused, still generation "
        f"{kept['generation']}, {kept['nodes']} nodes"
    )


def _wait_generation(cli: Namespace, url: str, generation: int) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        model = _model_health(cli, url)
        if model["generation"] == generation:
            return model
        if time.monotonic() > deadline:
            raise LabError(f"the daemon did not reach model generation {generation}")
        time.sleep(0.1)
