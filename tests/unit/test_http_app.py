"""The HTTP app through aiohttp's test client: every route, MAC spellings, unknown machines,
access to private keys, the node API and its progress, metrics, the mirror."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bootstrapperd.bsroot.layout import Bsroot
from bootstrapperd.bsroot.pki import ClusterPKI
from bootstrapperd.machines.events import EventKind, Source
from bootstrapperd.model import load_cluster_file
from bootstrapperd.pack import init_bsroot
from bootstrapperd.render import Renderer
from tests.conftest import EXAMPLE, SEXTANT_FIXTURES, need_tools
from tests.httpapp import serve

MASTER = "52:54:00:77:00:10"
WORKER = "52:54:00:77:00:11"  # ingress
PLAIN = "52:54:00:77:00:12"  # hostname from the MAC
STRANGER = "52:54:00:ab:cd:ef"


@pytest.fixture
def root(tmp_path: Path) -> Bsroot:
    return init_bsroot(EXAMPLE, tmp_path / "bsroot")


def edit(root: Bsroot, old: str, new: str) -> None:
    text = root.cluster_desc.read_text()
    assert old in text
    root.cluster_desc.write_text(text.replace(old, new))


SPELLINGS = [
    "52:54:00:77:00:11",
    "52-54-00-77-00-11",
    "5254.0077.0011",
    "525400770011",
    "52:54:00:77:00:11".upper(),
]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_every_mac_spelling_and_suffix(root: Bsroot, spelling: str) -> None:
    async with serve(root) as served:
        served.act_as(WORKER)
        for path in (
            f"/cloud-config/{spelling}",
            f"/cloud-config/{spelling}.yaml",
            f"/cloud-config/{spelling}.yml",
            f"/cloud-configs/{spelling}.yml",
            f"/ignition/{spelling}.json",
            f"/ignition/{spelling}",
            f"/ipxe/{spelling}",
            f"/ipxe/{spelling}.ipxe",
        ):
            response = await served.client.get(path)
            assert response.status == 200, path
            assert "worker1" in await response.text(), path


async def test_not_found(root: Bsroot) -> None:
    async with serve(root) as served:
        for path in (
            "/cloud-config/not-a-mac",
            "/ignition/zz:zz:zz:zz:zz:zz.json",
            "/ipxe/nothing",
            "/static/../config/cluster-desc.yml",
            "/static/flatcar/stable/current/missing",
            "/static/%2e%2e/config/cluster-desc.yml",
            "/tls/52:54:00:77:00:11/ca-key.pem",
            "/tls/ca-key.pem",
            "/boot/../config/cluster-desc.yml",
            "/api/v1/nodes/52:54:00:99:99:99",
            "/nope",
        ):
            response = await served.client.get(path)
            assert response.status == 404, path


async def test_unknown_machine_gets_a_worker_config(root: Bsroot) -> None:
    async with serve(root) as served:
        served.act_as(STRANGER)
        text = await (await served.client.get(f"/cloud-config/{STRANGER}")).text()
        config = yaml.safe_load(text)
        assert config["hostname"] == "52-54-00-ab-cd-ef"
        units = {u["name"] for u in config["coreos"]["units"]}
        assert {"kubelet.service", "etcd-gateway.service"} <= units
        assert "etcd-member.service" not in units
        paths = {f["path"] for f in config["write_files"]}
        assert "/etc/kubernetes/manifests/kube-apiserver.yaml" not in paths


async def test_unknown_machines_ignored_get_404(root: Bsroot) -> None:
    edit(root, "unknown_machines: allow", "unknown_machines: ignore")
    async with serve(root) as served:
        served.act_as(STRANGER)
        for path in (
            f"/cloud-config/{STRANGER}",
            f"/ignition/{STRANGER}.json",
            f"/ipxe/{STRANGER}",
            f"/tls/{STRANGER}/worker.pem",
        ):
            assert (await served.client.get(path)).status == 404, path


async def test_private_keys_only_for_their_machine(
    root: Bsroot, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(root) as served:
        client = served.client
        # Nobody holds 127.0.0.1 yet: every private response is refused.
        for path in (
            f"/cloud-config/{WORKER}",
            f"/ignition/{WORKER}.json",
            f"/tls/{WORKER}/worker-key.pem",
            f"/tls/{WORKER}/worker.pem",
        ):
            response = await client.get(path)
            assert response.status == 403, path
        assert any("private key refused" in r.message for r in caplog.records)
        # Acting as the worker: its own files, not another machine's.
        served.act_as(WORKER)
        assert (await client.get(f"/tls/{WORKER}/worker-key.pem")).status == 200
        assert (await client.get(f"/cloud-config/{MASTER}")).status == 403
        assert (await client.get(f"/tls/{MASTER}/apiserver-key.pem")).status == 403
        assert (await client.get(f"/tls/{WORKER}/apiserver.pem")).status == 404  # not a master
        # Anyone may fetch the CA certificate, the boot scripts and install.sh.
        for path in ("/tls/ca.pem", f"/ipxe/{MASTER}", "/install.sh", "/boot.ipxe"):
            assert (await client.get(path)).status == 200, path


async def test_a_static_reservation_is_the_machines_own_address(root: Bsroot) -> None:
    # The master's static address is 10.77.0.10; the test client is 127.0.0.1: make the
    # reservation 127.0.0.1 (the model's check is on the subnet, so serve a patched model).
    async with serve(root) as served:
        assert served.context.resolver.owns(MASTER, "10.77.0.10")
        assert not served.context.resolver.owns(MASTER, "10.77.0.11")
        assert not served.context.resolver.owns(WORKER, "10.77.0.10")


async def test_key_files_match_the_certificates(root: Bsroot) -> None:
    async with serve(root) as served:
        served.act_as(WORKER)
        key = await (await served.client.get(f"/tls/{WORKER}/worker-key.pem")).read()
        cert = await (await served.client.get(f"/tls/{WORKER}/worker.pem")).read()
        ca = await (await served.client.get("/tls/ca.pem")).read()
        assert b"PRIVATE KEY" in key
        assert b"CERTIFICATE" in cert
        assert b"CERTIFICATE" in ca
        assert cert == (root.tls / "nodes" / "52-54-00-77-00-11" / "worker.pem").read_bytes()
        assert b"PRIVATE" not in ca


async def test_ignition_carries_the_same_set_up_as_cloud_config(root: Bsroot) -> None:
    async with serve(root) as served:
        for mac in (MASTER, WORKER, PLAIN, STRANGER):
            served.act_as(mac)
            cc = yaml.safe_load(await (await served.client.get(f"/cloud-config/{mac}")).text())
            response = await served.client.get(f"/ignition/{mac}.json")
            assert response.content_type == "application/json"
            ign = json.loads(await response.text())
            assert ign["ignition"]["version"].startswith("3.")
            cc_files = {f["path"]: f["content"] for f in cc["write_files"]}
            ign_files = {f["path"]: f["contents"]["source"] for f in ign["storage"]["files"]}
            assert set(ign_files) == set(cc_files) | {"/etc/hostname"}
            from urllib.parse import unquote

            for path, content in cc_files.items():
                assert unquote(ign_files[path].removeprefix("data:,")) == content, path
            cc_units = {u["name"]: u.get("content") for u in cc["coreos"]["units"]}
            ign_units = {u["name"]: u.get("contents") for u in ign["systemd"]["units"]}
            assert cc_units == ign_units
            keys = ign["passwd"]["users"][0]["sshAuthorizedKeys"]
            assert keys == cc["ssh_authorized_keys"]


async def test_install_sh_passes_shellcheck_for_flatcar_and_coreos(root: Bsroot) -> None:
    need_tools("shellcheck")
    async with serve(root) as served:
        flatcar = await (await served.client.get("/install.sh")).text()
    edit(root, "os:\n  name: flatcar", "os:\n  name: coreos")
    async with serve(root) as served:
        coreos = await (await served.client.get("/install.sh")).text()
    assert "flatcar-install" in flatcar
    assert "/ignition/$MAC.json" in flatcar
    assert "coreos-install" in coreos
    assert "/cloud-config/$MAC.yml" in coreos
    for script in (flatcar, coreos):
        assert script.startswith("#!/bin/sh\n")
        result = await asyncio.to_thread(
            subprocess.run,
            ["shellcheck", "-s", "sh", "-"],
            input=script,
            text=True,
            capture_output=True,
        )
        assert result.returncode == 0, result.stdout
        assert '-b "$MIRROR"' in script


async def test_current_resolves_to_the_newest_mirrored_version(root: Bsroot) -> None:
    channel = root.html_static / "flatcar" / "stable"
    for version in ("3975.2.1", "4081.2.0", "4081.10.0"):
        (channel / version).mkdir(parents=True)
        (channel / version / "version.txt").write_text(f"FLATCAR_VERSION={version}\n")
    async with serve(root) as served:
        script = await (await served.client.get("/install.sh")).text()
        assert "VERSION=4081.10.0" in script
        text = await (await served.client.get("/static/flatcar/stable/current/version.txt")).text()
        assert text == "FLATCAR_VERSION=4081.10.0\n"
    (channel / "current").symlink_to("4081.2.0")
    async with serve(root) as served:
        script = await (await served.client.get("/install.sh")).text()
        assert "VERSION=4081.2.0" in script
        text = await (await served.client.get("/static/flatcar/stable/current/version.txt")).text()
        assert text == "FLATCAR_VERSION=4081.2.0\n"


async def test_mirror_range_etag_head(root: Bsroot) -> None:
    data = bytes(range(256)) * 4096
    path = root.html_static / "flatcar" / "stable" / "4081.2.0" / "flatcar_production_image.bin.bz2"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    url = "/static/flatcar/stable/4081.2.0/flatcar_production_image.bin.bz2"
    async with serve(root) as served:
        client = served.client
        full = await client.get(url)
        assert await full.read() == data
        etag = full.headers["ETag"]
        part = await client.get(url, headers={"Range": "bytes=1000-1999"})
        assert part.status == 206
        assert await part.read() == data[1000:2000]
        assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        same = await client.get(url, headers={"If-None-Match": etag})
        assert same.status == 304
        head = await client.head(url)
        assert head.status == 200
        assert int(head.headers["Content-Length"]) == len(data)
        # A symlink out of the mirror is not followed.
        (root.html_static / "escape").symlink_to(root.cluster_desc)
        assert (await client.get("/static/escape")).status == 404


async def test_site_templates_override_the_shipped_ones(root: Bsroot) -> None:
    root.templates.mkdir(parents=True, exist_ok=True)
    (root.templates / "ipxe.j2").write_text("#!ipxe\necho site {{ boot.hostname }}\n")
    async with serve(root) as served:
        text = await (await served.client.get(f"/ipxe/{MASTER}")).text()
        assert text == "#!ipxe\necho site master1\n"
        (root.templates / "ipxe.j2").write_text("#!ipxe\necho {{ no_such_value }}\n")
        response = await served.client.get(f"/ipxe/{MASTER}")
        assert response.status == 500
        assert "no_such_value" in await response.text()


async def test_node_api_follows_a_boot(root: Bsroot) -> None:
    async with serve(root) as served:
        client = served.client
        timeline = served.context.timeline
        nodes = await (await client.get("/api/v1/nodes")).json()
        assert [n["hostname"] for n in nodes["nodes"]] == [
            "master1",
            "worker1",
            "52-54-00-77-00-12",
        ]
        assert nodes["counts"]["not-seen"] == 3
        assert nodes["stages"][0] == "dhcp"
        assert nodes["stages"][-1] == "installed"
        now = time.time()
        timeline.record(
            WORKER, now, Source.DHCP, EventKind.ACK, ip="127.0.0.1", boot_file="undionly.kpxe"
        )
        timeline.record(WORKER, now, Source.TFTP, EventKind.TRANSFER, file="undionly.kpxe")
        served.act_as(WORKER)
        steps = [
            (f"/ipxe/{WORKER}", "ipxe-script"),
            ("/install.sh", "install.sh"),
            (f"/cloud-config/{WORKER}", "config"),
        ]
        for path, stage in steps:
            assert (await client.get(path)).status == 200
            node = await (await client.get(f"/api/v1/nodes/{WORKER}")).json()
            assert node["stage"] == stage, path
        response = await client.post(f"/api/v1/nodes/{WORKER}/report", data={"event": "installed"})
        assert response.status == 200
        node = await (await client.get(f"/api/v1/nodes/{WORKER.replace(':', '-')}")).json()
        assert node["stage"] == "installed"
        assert node["failed"] is False
        assert node["roles"] == ["ingress", "worker"]
        assert node["lease"]["ip"] == "127.0.0.1"
        kinds = [(e["source"], e["kind"]) for e in node["timeline"]]
        assert kinds == [
            ("dhcp", "ack"),
            ("tftp", "transfer"),
            ("http", "ipxe-script"),
            ("http", "install.sh"),
            ("http", "cloud-config"),
            ("install", "installed"),
        ]
        assert node["timeline"][2]["status"] == 200
        # A machine not in the model shows up once seen; a failure is flagged.
        timeline.record(
            STRANGER, time.time(), Source.TFTP, EventKind.TRANSFER_FAILED, file="ipxe.efi"
        )
        nodes = await (await client.get("/api/v1/nodes")).json()
        stranger = nodes["nodes"][-1]
        assert stranger["mac"] == STRANGER
        assert stranger["known"] is False
        assert stranger["failed"] is True
        assert stranger["stage"] is None
        assert nodes["counts"]["installed"] == 1
        # Reports only from the machine itself, and only known events.
        assert (
            await client.post(f"/api/v1/nodes/{MASTER}/report", data={"event": "installed"})
        ).status == 403
        assert (
            await client.post(f"/api/v1/nodes/{WORKER}/report", data={"event": "pwned"})
        ).status == 400


async def test_a_new_network_boot_starts_a_new_attempt(root: Bsroot) -> None:
    async with serve(root) as served:
        timeline = served.context.timeline
        now = time.time()
        steps: list[tuple[Source, EventKind, dict[str, object]]] = [
            (Source.DHCP, EventKind.ACK, {"boot_file": "undionly.kpxe"}),
            (Source.TFTP, EventKind.TRANSFER, {"file": "undionly.kpxe"}),
            (Source.DHCP, EventKind.ACK, {"boot_file": "http://10.77.0.1/ipxe/${mac:hexhyp}"}),
            (Source.HTTP, EventKind.IPXE_SCRIPT, {"status": 200}),
            (Source.HTTP, EventKind.KERNEL, {"status": 200}),
        ]
        for source, kind, detail in steps:
            timeline.record(PLAIN, now, source, kind, **detail)
        assert timeline.progress(PLAIN).name == "kernel"
        timeline.record(PLAIN, now, Source.DHCP, EventKind.ACK, boot_file="undionly.kpxe")
        assert timeline.progress(PLAIN).name == "dhcp"
        timeline.record(PLAIN, now, Source.INSTALL, EventKind.INSTALLED)
        timeline.record(
            PLAIN, now, Source.DHCP, EventKind.ACK
        )  # booting from its disk: no boot file
        assert timeline.progress(PLAIN).name == "installed"


async def test_metrics(root: Bsroot) -> None:
    async with serve(root) as served:
        served.context.service_counters = {"dns": lambda: {"A:NOERROR": 7}}
        served.act_as(WORKER)
        await served.client.get(f"/ipxe/{WORKER}")
        await served.client.get("/ipxe/nothing")
        served.context.timeline.record(
            WORKER, time.time(), Source.HTTP, EventKind.IPXE_SCRIPT, status=200
        )
        response = await served.client.get("/metrics")
        assert response.status == 200
        assert response.content_type == "text/plain"
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        assert samples[("bootstrapperd_dns_events_total", (("event", "A:NOERROR"),))] == 7
        assert (
            samples[
                ("bootstrapperd_http_requests_total", (("code", "200"), ("route", "ipxe-script")))
            ]
            == 1
        )
        assert (
            samples[
                ("bootstrapperd_http_requests_total", (("code", "404"), ("route", "ipxe-script")))
            ]
            == 1
        )
        assert samples[("bootstrapperd_dhcp_leases", (("state", "bound"),))] == 1
        assert samples[("bootstrapperd_dhcp_pool_free", ())] == 100  # 127.0.0.1 is no pool address
        assert samples[("bootstrapperd_nodes", (("stage", "ipxe-script"),))] == 1
        assert samples[("bootstrapperd_nodes", (("stage", "not-seen"),))] == 2


async def test_status_page_and_healthz(root: Bsroot) -> None:
    async with serve(root) as served:
        page = await served.client.get("/")
        assert page.status == 200
        assert page.content_type == "text/html"
        assert "api/v1/nodes" in await page.text()
        health = await (await served.client.get("/healthz")).json()
        assert health["status"] == "ok"
        assert health["model"]["nodes"] == 3


@pytest.mark.parametrize("kind", ["cloud-config", "ignition", "ipxe", "install"])
async def test_render_prints_what_the_server_serves(root: Bsroot, kind: str) -> None:
    async with serve(root) as served:
        served.act_as(WORKER)
        path = {
            "cloud-config": f"/cloud-config/{WORKER}",
            "ignition": f"/ignition/{WORKER}.json",
            "ipxe": f"/ipxe/{WORKER}",
            "install": "/install.sh",
        }[kind]
        served_text = await (await served.client.get(path)).text()
        base = served.base
    exe = shutil.which("bootstrapperd") or str(
        Path(__file__).parents[2] / ".venv/bin/bootstrapperd"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [
            exe,
            "render",
            "--bsroot",
            str(root.root),
            "--mac",
            "52-54-00-77-00-11",
            "--kind",
            kind,
            "--server",
            base,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == served_text


def test_render_errors(root: Bsroot) -> None:
    exe = shutil.which("bootstrapperd") or str(
        Path(__file__).parents[2] / ".venv/bin/bootstrapperd"
    )
    bad = subprocess.run(
        [exe, "render", "--bsroot", str(root.root), "--mac", "nope", "--kind", "ipxe"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "not a MAC address" in bad.stderr
    edit(root, "unknown_machines: allow", "unknown_machines: ignore")
    ignored = subprocess.run(
        [exe, "render", "--bsroot", str(root.root), "--mac", STRANGER, "--kind", "cloud-config"],
        capture_output=True,
        text=True,
    )
    assert ignored.returncode == 1
    assert "unknown machines are ignored" in ignored.stderr


DESCRIPTIONS = [*SEXTANT_FIXTURES, EXAMPLE]


@pytest.mark.parametrize("description", DESCRIPTIONS, ids=lambda p: p.name)
def test_cloud_config_units_per_role(tmp_path: Path, description: Path) -> None:
    """For every node of every Sextant description: valid YAML, the units and files its roles
    ask for, and the facts Sextant's template carried."""
    root = init_bsroot(description, tmp_path / "bsroot")
    model = load_cluster_file(root.cluster_desc)
    renderer = Renderer(root, ClusterPKI(root.tls))
    server = "http://" + str(model.bootstrapper)
    members = [n.hostname for n in model.etcd_members]
    for node in model.nodes:
        text = renderer.cloud_config(model, node.mac, server)
        assert text is not None
        assert text.startswith("#cloud-config\n")
        config = yaml.safe_load(text)
        assert config["hostname"] == node.hostname
        assert config["ssh_authorized_keys"] == list(model.ssh_authorized_keys)
        units = {u["name"]: u for u in config["coreos"]["units"]}
        files = {f["path"]: f for f in config["write_files"]}
        assert {"kubelet.service", "flanneld.service", "docker.service"} <= set(units)
        etcd = "etcd-member.service" if node.etcd_member else "etcd-gateway.service"
        other = "etcd-gateway.service" if node.etcd_member else "etcd-member.service"
        assert etcd in units, node.hostname
        assert other not in units, node.hostname
        if node.etcd_member:
            for member in members:
                assert f"{member}=http://" in units[etcd]["content"]
        manifests = {p for p in files if p.startswith("/etc/kubernetes/manifests/")}
        keys = {p for p in files if p.endswith("-key.pem")}
        kubelet = units["kubelet.service"]["content"]
        if node.kube_master:
            assert {m.rsplit("/", 1)[1] for m in manifests} == {
                "kube-apiserver.yaml",
                "kube-controller-manager.yaml",
                "kube-scheduler.yaml",
            }
            assert "/etc/kubernetes/ssl/apiserver-key.pem" in keys
            assert "--register-with-taints=node-role.kubernetes.io/control-plane" in kubelet
        else:
            assert not manifests
            assert "/etc/kubernetes/ssl/apiserver-key.pem" not in keys
        assert ("role=ingress" in kubelet) == node.ingress_label
        assert f"--hostname-override={node.hostname} " in kubelet
        assert f"--cluster-dns={model.cluster_dns} " in kubelet
        assert f"--cluster-domain={model.cluster_domain} " in kubelet
        assert f"{model.dockerdomain}:5000/" in kubelet  # images from the bootstrapper
        assert model.flannel_backend in units["flanneld.service"]["content"]
        if node.flannel_iface:
            assert (
                f"FLANNELD_IFACE={node.flannel_iface}"
                in files["/etc/flannel/options.env"]["content"]
            )
        hosts = files["/etc/hosts"]["content"]
        assert f"{model.bootstrapper} {model.dockerdomain}" in hosts
        assert f"/etc/docker/certs.d/{model.dockerdomain}:5000/ca.crt" in files
        update = config["coreos"]["update"]["reboot-strategy"]
        assert update == model.update_policy.reboot_strategy
        if update != "off":
            assert config["coreos"]["locksmith"]["window_start"] == model.update_policy.start_time
        assert files["/etc/kubernetes/ssl/worker-key.pem"]["permissions"] == "0600"
