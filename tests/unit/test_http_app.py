"""The HTTP app through aiohttp's test client: every route, MAC spellings, unknown machines,
access to private keys, the node API and its progress, metrics, the mirror."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
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


def private_keys(text: str) -> int:
    """PEM private keys in a served configuration (Ignition's data URLs are URL-quoted)."""
    return urllib.parse.unquote(text).count("-----BEGIN PRIVATE KEY-----")


def token_of(script: str) -> str:
    """The install token a boot script hands its machine (kernel argument)."""
    found = re.search(r"bootstrapperd\.token=(\S+)", script)
    assert found is not None, script
    return found.group(1)


async def test_no_private_key_without_the_install_token(
    root: Bsroot, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(root) as served:
        client = served.client
        # Nobody holds 127.0.0.1 yet: a machine's own configuration is refused.
        for path in (f"/cloud-config/{WORKER}", f"/ignition/{WORKER}.json"):
            assert (await client.get(path)).status == 403, path
        assert any("client is not this machine" in r.message for r in caplog.records)
        # A machine's keys never leave it: no key file is served to anyone, even itself.
        served.act_as(MASTER)
        for which in ("worker", "apiserver", "admin"):
            response = await client.get(f"/tls/{MASTER}/{which}-key.pem")
            assert response.status == 404, which
        # Its own address and MAC are not enough: its configuration carries no private key.
        for path in (f"/cloud-config/{MASTER}", f"/ignition/{MASTER}.json"):
            response = await client.get(path)
            assert response.status == 200, path
            assert private_keys(await response.text()) == 0, path
        assert (await client.get(f"/cloud-config/{WORKER}")).status == 403  # not its own
        # Anyone may fetch the CA certificate, the boot scripts and install.sh.
        for path in ("/tls/ca.pem", f"/ipxe/{MASTER}", "/install.sh", "/boot.ipxe"):
            assert (await client.get(path)).status == 200, path


async def test_the_install_token_gives_the_secrets_once_and_a_second_use_raises_an_alarm(
    root: Bsroot,
) -> None:
    async with serve(root) as served:
        client = served.client
        served.act_as(MASTER)
        token = token_of(await (await client.get(f"/ipxe/{MASTER}")).text())
        auth = {"Authorization": f"Bearer {token}"}
        first = await client.get(f"/ignition/{MASTER}.json", headers=auth)
        assert first.status == 200
        assert first.headers["Cache-Control"] == "no-store"
        config = await first.text()
        assert private_keys(config) == 1  # the masters' shared service-account key
        assert "service-account-key.pem" in config
        second = await client.get(f"/ignition/{MASTER}.json", headers=auth)
        assert second.status == 403
        assert private_keys(await second.text()) == 0
        wrong = await client.get(f"/ignition/{MASTER}.json", headers={"Authorization": "Bearer x"})
        assert wrong.status == 403
        alarms = served.context.tokens.alarms_of(MASTER)
        assert [str(a.verdict) for a in alarms] == ["used", "unknown"]
        listed = await (await client.get("/api/v1/nodes")).json()
        assert [(a["mac"], a["verdict"]) for a in listed["alarms"]] == [
            (MASTER, "used"),
            (MASTER, "unknown"),
        ]
        master = next(n for n in listed["nodes"] if n["mac"] == MASTER)
        assert master["alarms"] == 2
        one = await (await client.get(f"/api/v1/nodes/{MASTER}")).json()
        assert [a["use"] for a in one["alarm_log"]] == ["config", "config"]
        # A new boot supersedes the token; an installed machine's token dies.
        fresh = token_of(await (await client.get(f"/ipxe/{MASTER}")).text())
        assert fresh != token
        report = await client.post(f"/api/v1/nodes/{MASTER}/report", data={"event": "installed"})
        assert report.status == 200
        late = await client.get(
            f"/ignition/{MASTER}.json", headers={"Authorization": f"Bearer {fresh}"}
        )
        assert late.status == 403
        # A worker's configuration, even with its token, carries no private key at all.
        served.act_as(WORKER)
        token = token_of(await (await client.get(f"/ipxe/{WORKER}")).text())
        response = await client.get(
            f"/ignition/{WORKER}.json", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 200
        assert private_keys(await response.text()) == 0


async def test_a_static_reservation_is_the_machines_own_address(root: Bsroot) -> None:
    # The master's static address is 10.77.0.10; the test client is 127.0.0.1: make the
    # reservation 127.0.0.1 (the model's check is on the subnet, so serve a patched model).
    async with serve(root) as served:
        assert served.context.resolver.owns(MASTER, "10.77.0.10")
        assert not served.context.resolver.owns(MASTER, "10.77.0.11")
        assert not served.context.resolver.owns(WORKER, "10.77.0.10")


def csr_for(key: ec.EllipticCurvePrivateKey, common_name: str = "anything") -> bytes:
    """A certificate request for ``key`` asking for names of its own choosing."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


async def test_keys_made_on_the_machine_are_signed_once_against_the_token(root: Bsroot) -> None:
    async with serve(root) as served:
        client = served.client
        served.act_as(WORKER)
        token = token_of(await (await client.get(f"/ipxe/{WORKER}")).text())
        auth = {"Authorization": f"Bearer {token}"}
        key = ec.generate_private_key(ec.SECP256R1())
        url = f"/api/v1/nodes/{WORKER}/csr/worker"
        assert (await client.post(url, data=csr_for(key))).status == 401  # no token
        assert (await client.post(url, data=b"junk", headers=auth)).status == 400
        response = await client.post(url, data=csr_for(key), headers=auth)
        assert response.status == 200
        cert = x509.load_pem_x509_certificate(await response.read())
        # The key is the machine's; the names are the description's, not the request's.
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.public_numbers() == key.public_key().public_numbers()
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == "worker1"
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "evil.example" not in sans.get_values_for_type(x509.DNSName)
        ca = x509.load_pem_x509_certificate(await (await client.get("/tls/ca.pem")).read())
        cert.verify_directly_issued_by(ca)
        # Published (public), once per certificate; a worker gets no apiserver certificate.
        published = await client.get(f"/tls/{WORKER}/worker.pem")
        assert await published.read() == cert.public_bytes(serialization.Encoding.PEM)
        again = await client.post(url, data=csr_for(key), headers=auth)
        assert again.status == 403
        apiserver = f"/api/v1/nodes/{WORKER}/csr/apiserver"
        assert (await client.post(apiserver, data=csr_for(key), headers=auth)).status == 404
        # No private key was ever written for it on the bootstrapper.
        folder = root.tls / "nodes" / "52-54-00-77-00-11"
        assert not [p for p in folder.iterdir() if p.name.endswith("-key.pem")]


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
        if kind == "ipxe":  # the script served hands out a fresh install token; render does not
            token = token_of(served_text)
            served_text = served_text.replace(f" bootstrapperd.token={token}", "")
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
    assert bad.returncode == 2  # a bad value on the command line: exit 2, as argparse's
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
            assert "--register-with-taints=node-role.kubernetes.io/control-plane" in kubelet
            secret = renderer.cloud_config(model, node.mac, server, secrets=True)
            assert secret is not None
            secret_files = {f["path"] for f in yaml.safe_load(secret)["write_files"]}
            assert secret_files - set(files) == {"/etc/kubernetes/ssl/service-account-key.pem"}
        else:
            assert not manifests
            secret = renderer.cloud_config(model, node.mac, server, secrets=True)
            assert secret == text  # a worker is given nothing secret
        assert keys == set()  # no private key without the install token
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
        if node.kube_master:
            sa = {f["path"]: f for f in yaml.safe_load(secret)["write_files"]}
            assert sa["/etc/kubernetes/ssl/service-account-key.pem"]["permissions"] == "0600"
