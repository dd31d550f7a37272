"""config/cluster-desc.schema.json: valid, in step with the loader, and never stricter than it.

The schema is for editors; the loader is the authority. Every description the loader loads must
validate, so the value-form tables below are checked against both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from bootstrapperd.model import (
    ConfigError,
    DHCPMode,
    RegistryMode,
    UnknownMachines,
    keys,
    load_cluster_text,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "config" / "cluster-desc.schema.json"

# The keys the loader knows, from the key table it reads them from (test_keys.py checks that it
# does: every key it reads is in the table, and a key not in the table is warned about).
TOP_KEYS = set(keys.names(""))
IGNORED_KEYS = set(keys.ignored(""))
NODE_KEYS = set(keys.names("nodes[]"))

BASE = """\
bootstrapper: 10.0.0.2
subnet: 10.0.0.0
netmask: 255.255.255.0
iplow: 10.0.0.100
iphigh: 10.0.0.200
routers: [10.0.0.1]
nodes:
  - mac: "00:25:90:c0:f7:80"
    kube_master: y
    etcd_member: y
"""


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    with SCHEMA_PATH.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema)


def _errors(validator: Draft202012Validator, doc: object) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def _description_files() -> list[Path]:
    files = [p for p in sorted((ROOT / "tests" / "fixtures" / "sextant").iterdir()) if p.is_file()]
    files += sorted((ROOT / "config" / "examples").glob("*.yml"))
    shared = ROOT.parent / "shared" / "sextant"
    if shared.is_dir():
        files += [p for p in sorted(shared.iterdir()) if p.is_file()]
    return files


def _text(case: dict[str, Any]) -> str:
    """BASE as YAML text: the case's ``drop`` keys removed, its ``node`` lines added to nodes[0]
    (the last thing in BASE), its ``top`` lines appended (a repeated key: the later one wins).
    Loader and schema read this same text, so both see YAML 1.1's reading of plain values."""
    out: list[str] = []
    keep = True
    for line in BASE.splitlines():
        if line and not line.startswith(" "):
            keep = line.split(":")[0] not in case.get("drop", ())
        if keep:
            out.append(line)
    # BASE ends with nodes[0]'s keys, so these lines extend (or repeat) them.
    out += [f"    {node_line}" for node_line in str(case.get("node", "")).splitlines()]
    return "\n".join(out) + "\n" + str(case.get("top", "")) + "\n"


# ---- the schema itself -------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_every_property_has_a_description(schema: dict[str, Any]) -> None:
    missing: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if not sub.get("description"):
                    missing.append(f"{where}/{name}")
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")

    walk(schema, "")
    assert missing == []


# ---- in step with the loader -------------------------------------------------------------------


def test_top_level_keys_match_loader(schema: dict[str, Any]) -> None:
    assert set(schema["properties"]) == TOP_KEYS | IGNORED_KEYS
    assert schema["additionalProperties"] is True
    assert set(schema["required"]) == {"bootstrapper", "subnet", "netmask", "nodes"}


def test_node_keys_match_loader(schema: dict[str, Any]) -> None:
    item = schema["properties"]["nodes"]["items"]
    assert set(item["properties"]) == NODE_KEYS
    assert item["required"] == ["mac"]
    assert item["additionalProperties"] is True


@pytest.mark.parametrize("block", ["os", "dhcp", "coreos", "ceph", "downloads", "registry"])
def test_block_keys_match_loader(schema: dict[str, Any], block: str) -> None:
    assert set(schema["properties"][block]["properties"]) == set(keys.names(block))


@pytest.mark.parametrize(
    ("path", "choices"),
    [
        (("flannel_backend",), keys.find("flannel_backend").choices),
        (("os", "name"), keys.find("os.name").choices),
        (("dhcp", "mode"), tuple(m.value for m in DHCPMode)),
        (("dhcp", "unknown_machines"), tuple(u.value for u in UnknownMachines)),
        (("coreos", "reboot_strategy"), keys.find("coreos.reboot_strategy").choices),
        (("registry", "mode"), tuple(m.value for m in RegistryMode)),
    ],
)
def test_enums_match_loader(
    schema: dict[str, Any], path: tuple[str, ...], choices: tuple[str, ...]
) -> None:
    node = schema["properties"][path[0]]
    for part in path[1:]:
        node = node["properties"][part]
    assert node["anyOf"][0]["enum"] == list(choices)


# ---- real descriptions -------------------------------------------------------------------------


@pytest.mark.parametrize("path", _description_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_description_file_validates(validator: Draft202012Validator, path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert _errors(validator, doc) == []


# ---- value forms: accepted by the loader, so the schema must accept them -----------------------

ACCEPTED: dict[str, dict[str, Any]] = {
    "lease 1h30m": {"top": "lease: 1h30m"},
    "lease 3600": {"top": "lease: 3600"},
    "lease '3600'": {"top": "lease: '3600'"},
    "lease infinite": {"top": "lease: infinite"},
    "lease INFINITY": {"top": "lease: INFINITY"},
    "lease 7d": {"top": "lease: 7d"},
    "lease 1w": {"top": "lease: 1w"},
    "lease empty": {"top": "lease:"},
    "kube_master y": {"node": "kube_master: y"},
    "kube_master 'Y'": {"node": "kube_master: 'Y'"},
    "kube_master yes": {"node": "kube_master: yes"},
    "kube_master ON": {"node": "kube_master: 'ON'"},
    "kube_master 1": {"node": "kube_master: 1"},
    "ceph_monitor n": {"node": "ceph_monitor: n"},
    "ceph_monitor off": {"node": "ceph_monitor: off"},
    "ingresslabel": {"node": "ingresslabel: y"},
    "routers string": {"top": "routers: 10.0.0.1"},
    "routers comma string": {"top": "routers: '10.0.0.1, 10.0.0.3'"},
    "routers empty": {"top": "routers:"},
    "nameservers list": {"top": "nameservers: [10.0.0.2, 10.0.0.3]"},
    "mac cisco": {"node": "mac: '0025.90c0.f780'"},
    "mac dashes upper": {"node": "mac: '00-25-90-C0-F7-80'"},
    "mac bare hex": {"node": "mac: '002590c0f780'"},
    "mac short octet": {"node": "mac: '0:25:90:c0:f7:80'"},
    "netmask prefix": {"top": "netmask: 24"},
    "netmask /prefix": {"top": "netmask: /24"},
    "broadcast": {"top": "broadcast: 10.0.0.255"},
    "coreos_version float": {"top": "coreos_version: 1122.2"},
    "coreos_version string": {"top": "coreos_version: '1122.2.0'"},
    "coreos_version current": {"top": "coreos_version: current"},
    "coreos_channel": {"top": "coreos_channel: beta"},
    "http_port int": {"top": "http_port: 8080"},
    "http_port digits": {"top": "http_port: '8080'"},
    "flannel_backend case": {"top": "flannel_backend: ' VXLAN '"},
    "dhcp proxy": {"top": "dhcp: {mode: proxy, unknown_machines: ignore}"},
    "dhcp 'off'": {"top": "dhcp: {mode: 'off'}"},
    "dhcp empty": {"top": "dhcp:"},
    "start_pxe n": {"top": "start_pxe: n"},
    "os block": {
        "top": "os: {name: Flatcar, channel: lts, version: 3815.2.0, "
        "mirror: 'https://mirror.example/flatcar'}"
    },
    "coreos block": {
        "top": "coreos: {reboot_strategy: 'off', start_time: '03:00', time_length: 3h}"
    },
    "coreos start_time unquoted": {"top": "coreos: {start_time: 3:00}"},
    "ceph journal digits": {"top": "ceph: {zap_and_start_osd: y, osd_journal_size: '100'}"},
    "ssh keys list": {"top": "ssh_authorized_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@laptop']"},
    "ssh keys block": {
        "top": 'ssh_authorized_keys: |1+\n    - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@laptop"\n'
    },
    "kube_master_ip string": {"top": "kube_master_ip: 10.100.0.1"},
    "kube_master_dns list": {"top": "kube_master_dns: [master.example.com]"},
    "images": {"top": "images: {pause: 'gcr.io/google_containers/pause-amd64:3.0'}"},
    "node static ip": {"node": "ip: 10.0.0.50"},
    "node hostname capitals": {"node": "cur_host_name: Node1"},
    "node hostname empty": {"node": "cur_host_name: ''"},
    "node flannel_iface": {"node": "flannel_iface: eth1"},
    "pack-side keys": {
        "top": "os_name: CoreOS\ncentos_version: 7.2\nset_gpu: y\ngpu_drivers_version: '375.26'\n"
        "download_kernel: n\nmirror_site: http://mirror.example/centos\nset_yum_repo: bootstrapper"
    },
    "ignored nginx_root_dir": {"top": "nginx_root_dir: /var/www"},
    "unknown keys": {"top": "something_new: 1", "node": "rack: A3"},
    "dhcp off unquoted": {"top": "dhcp: {mode: off}"},
    "reboot_strategy off unquoted": {"top": "coreos: {reboot_strategy: off}"},
    "mac unquoted base 60": {"node": "mac: 12:34:56:12:34:56"},
    "mac unquoted all digits": {"node": "mac: 001122334455"},
    "hostname unquoted digits": {"node": "cur_host_name: 0123"},
    "centos_version unquoted": {"top": "centos_version: 7.10"},
}


@pytest.mark.parametrize("case", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_forms(validator: Draft202012Validator, case: dict[str, Any]) -> None:
    text = _text(case)
    load_cluster_text(text)  # the loader accepts it ...
    assert _errors(validator, yaml.safe_load(text)) == []  # ... so the schema must


# ---- value forms the loader rejects, which the schema must reject too --------------------------

REJECTED: dict[str, dict[str, Any]] = {
    "mac not hex": {"node": "mac: '00:25:90:zz'"},
    "mac mixed separators": {"node": "mac: '00-25-90-c0-f7:80'"},
    "node without mac": {"node": "mac:"},
    "flannel_backend ipip": {"top": "flannel_backend: ipip"},
    "dhcp mode relay": {"top": "dhcp: {mode: relay}"},
    "missing bootstrapper": {"drop": ("bootstrapper",)},
    "missing nodes": {"drop": ("nodes",)},
    "bootstrapper not IPv4": {"top": "bootstrapper: 10.0.0.256"},
    "routers space-separated": {"top": "routers: '10.0.0.1 10.0.0.3'"},
    "lease 1.5h": {"top": "lease: 1.5h"},
    "lease 0": {"top": "lease: 0"},
    "lease soon": {"top": "lease: soon"},
    "kube_master maybe": {"node": "kube_master: maybe"},
    "http_port too big": {"top": "http_port: 70000"},
    "os name ubuntu": {"top": "os: {name: ubuntu}"},
    "os mirror ftp": {"top": "os: {mirror: 'ftp://mirror.example'}"},
    "coreos_version latest": {"top": "coreos_version: latest"},
    "reboot_strategy sometimes": {"top": "coreos: {reboot_strategy: sometimes}"},
    "image without reference": {"top": "images: {pause: }"},
    "nodes empty": {"top": "nodes: []"},
}


@pytest.mark.parametrize("case", list(REJECTED.values()), ids=list(REJECTED))
def test_rejected_forms(validator: Draft202012Validator, case: dict[str, Any]) -> None:
    text = _text(case)
    with pytest.raises(ConfigError):
        load_cluster_text(text)
    assert _errors(validator, yaml.safe_load(text)) != []
