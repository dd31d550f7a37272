"""The key table (bootstrapperd/model/keys.py): the generated files are current, and the loader
reads exactly the table's keys, with the table's defaults."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from bootstrapperd.model import ClusterModel, keygen, keys, load, load_cluster_text, yamlsrc
from bootstrapperd.model.keys import Form, Key

ROOT = Path(__file__).resolve().parents[2]

# Every key of the table, each with a value the loader accepts.
FULL = """\
bootstrapper: 10.0.0.2
subnet: 10.0.0.0
netmask: 255.255.255.0
broadcast: 10.0.0.255
iplow: 10.0.0.100
iphigh: 10.0.0.200
routers: [10.0.0.1]
lease: 12h
start_pxe: y
set_ntp: n
dhcp:
  mode: full
  unknown_machines: allow
  router_advertisement: {enabled: y, prefix: "fd77::/64", interval: 600}
http_port: 8080
install_policy: always
kubernetes_version: v1.31.4
nameservers: [10.0.0.2]
upstreamnameservers: [192.0.2.53]
domainname: cluster.example
dockerdomain: bootstrapper
k8s_service_cluster_ip_range: 10.100.0.0/24
k8s_cluster_dns: 10.100.0.10
k8s_cluster_domain: cluster.local
flannel_backend: vxlan
ingress_hostnetwork: n
kube_master_ip: [10.0.0.10]
kube_master_dns: [master.cluster.example]
images: {pause: "registry.k8s.io/pause:3.9"}
ceph: {zap_and_start_osd: n, osd_journal_size: 5000}
os: {name: flatcar, channel: stable, version: current, mirror: "https://mirror.example/flatcar"}
coreos_channel: stable
coreos_version: current
coreos: {reboot_strategy: etcd-lock, start_time: "03:00", time_length: 3h}
ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@laptop"]
nodes:
  - mac: "00:25:90:c0:f7:80"
    cur_host_name: master1
    ip: 10.0.0.10
    kube_master: y
    etcd_member: y
    ceph_monitor: n
    ingress_label: y
    ingresslabel: y
    flannel_iface: eth1
    bmc:
      address: 10.1.0.10
      protocol: redfish
      port: 8443
      username: admin
      password_file: bmc/master1.password
      insecure: n
      ca_file: bmc/ca.pem
os_name: CoreOS
centos_version: "7.2.1511"
mirror_site: http://mirror.example/centos
download_kernel: n
set_gpu: n
gpu_drivers_version: "375.26"
set_yum_repo: bootstrapper
nginx_root_dir: /var/www
downloads:
  kubernetes: https://dl.k8s.io/release
  ipxe: https://boot.ipxe.org
  signing_key: flatcar.asc
  signing_key_fingerprint: F88CFEDEFF29A5B4D9523864E25D9AED0593B34A
  registries: {docker.io: "https://mirror.example/docker"}
registry: {mode: auto, url: "https://registry.example", image: "docker.io/library/registry:2.8.3"}
"""

MINIMAL = """\
bootstrapper: 10.0.0.2
subnet: 10.0.0.0
netmask: 255.255.255.0
nodes:
  - mac: "00:25:90:c0:f7:80"
    kube_master: y
    etcd_member: y
"""


def _paths(value: object, where: str = "") -> set[str]:
    """The table paths of every key in a parsed description (names under a free-form mapping
    such as ``images`` are values, not keys)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for name, inner in value.items():
            path = f"{where}.{name}" if where else str(name)
            out.add(path)
            if keys.find(path).form is not Form.STRING_MAP:
                out |= _paths(inner, path)
    elif isinstance(value, list):
        for item in value:
            out |= _paths(item, f"{where}[]")
    return out


def _unknown(model: ClusterModel) -> list[str]:
    return [w.path for w in model.warnings if w.message == "unknown key, ignored"]


# ---- the generated files ------------------------------------------------------------------------


def test_generated_files_are_current() -> None:
    """Run ``python -m bootstrapperd.model.keygen`` and commit the result if this fails."""
    assert keygen.stale(ROOT) == []
    assert keygen.main(["--check", "--root", str(ROOT)]) == 0


@pytest.fixture
def copy_root(tmp_path: Path) -> Path:
    for relative in (keygen.SCHEMA_FILE, keygen.DOCS_FILE):
        (tmp_path / relative).parent.mkdir(parents=True)
        shutil.copyfile(ROOT / relative, tmp_path / relative)
    return tmp_path


def test_check_names_each_stale_file_and_rewrite_fixes_it(
    copy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = copy_root / keygen.SCHEMA_FILE
    docs = copy_root / keygen.DOCS_FILE
    schema.write_text(schema.read_text().replace("From Sextant.", "From elsewhere."))
    assert keygen.main(["--check", "--root", str(copy_root)]) == 1
    err = capsys.readouterr().err
    assert "stale: config/cluster-desc.schema.json" in err
    assert "cluster-description.md" not in err

    # A hand edit inside a generated table is undone; prose outside the markers is kept.
    text = docs.read_text().replace("| `set_ntp` | bool |", "| `set_ntp` | text |")
    docs.write_text(text.replace("## Value forms", "## Value forms\n\nA new paragraph."))
    assert keygen.main(["--check", "--root", str(copy_root)]) == 1
    assert "stale: docs/cluster-description.md" in capsys.readouterr().err

    assert keygen.main(["--root", str(copy_root)]) == 0
    assert keygen.main(["--check", "--root", str(copy_root)]) == 0
    assert schema.read_text() == (ROOT / keygen.SCHEMA_FILE).read_text()
    assert "| `set_ntp` | bool |" in docs.read_text()
    assert "A new paragraph." in docs.read_text()


def test_docs_need_one_marked_block_per_section() -> None:
    text = (ROOT / keygen.DOCS_FILE).read_text()
    assert keygen.docs_text(text) == text
    with pytest.raises(ValueError, match="missing \\['dns'\\]"):
        keygen.docs_text(text.replace("<!-- keys:begin dns -->", ""))
    with pytest.raises(ValueError, match="unknown \\['misc'\\]"):
        keygen.docs_text(text + "<!-- keys:begin misc -->\n<!-- keys:end misc -->\n")


def test_docs_tables_list_every_key_once() -> None:
    text = (ROOT / keygen.DOCS_FILE).read_text()
    rows = re.findall(r"^\| `([^`]+)` \|", text, re.M)
    assert sorted(rows) == sorted(path for path, _ in keys.walk())


# ---- the table itself ----------------------------------------------------------------------------

ALL = list(keys.walk())


@pytest.mark.parametrize(("path", "key"), ALL, ids=[path for path, _ in ALL])
def test_key_is_well_formed(path: str, key: Key) -> None:
    assert key.doc.strip()
    assert key.name == path.rsplit(".", 1)[-1]
    assert (key.section in keys.SECTIONS) == ("." not in path), "top-level keys, and only they"
    if key.required:
        assert key.default is None
        assert not key.default_doc
    if key.form is Form.BOOL:
        assert key.default is None or isinstance(key.default, bool)
    if key.form in (Form.INTEGER, Form.LEASE) and key.default is not None:
        assert isinstance(key.default, int)
        assert not isinstance(key.default, bool)
    if key.form in (Form.TEXT, Form.STRING, Form.VERSION, Form.CHOICE, Form.NETWORK):
        assert key.default is None or isinstance(key.default, str)
    if key.form is Form.CHOICE:
        assert key.choices
        assert key.default is None or key.default in key.choices
    if key.form is Form.INTEGER:
        assert key.low < key.high
        assert key.default is None or key.low <= int(key.default) <= key.high
    if key.pattern:
        re.compile(key.pattern)
    assert bool(key.keys) == (key.form in (Form.BLOCK, Form.BLOCK_LIST, Form.BOOL_OR_BLOCK))
    names = [inner.name for inner in key.keys]
    assert len(names) == len(set(names))
    if key.alias_of:
        parent = path.rpartition(".")[0]
        siblings = {inner.name: inner for inner in keys.block(parent)}
        assert siblings[key.alias_of].form is key.form


def test_table_paths() -> None:
    assert keys.dotted(("nodes", 3), "mac") == "nodes[].mac"
    assert keys.dotted(("dhcp", "router_advertisement")) == "dhcp.router_advertisement"
    assert keys.dotted(()) == ""
    assert keys.names("nodes[]")[0] == "mac"
    assert "nginx_root_dir" not in keys.names("")
    assert "nginx_root_dir" in keys.ignored("")
    with pytest.raises(KeyError):
        keys.block("lease")


# ---- the loader reads the table's keys ----------------------------------------------------------


def test_full_description_covers_the_table_and_loads_without_unknown_keys() -> None:
    assert _paths(yaml.safe_load(FULL)) == set(keys.INDEX)
    model = load_cluster_text(FULL)
    assert _unknown(model) == []
    ignored = [(w.path, w.message) for w in model.warnings if w.path == "nginx_root_dir"]
    assert ignored == [("nginx_root_dir", keys.ignored("")["nginx_root_dir"])]
    assert list(Draft202012Validator(keygen.schema()).iter_errors(yaml.safe_load(FULL))) == []


def _mapping_paths() -> list[tuple[str, Any]]:
    """Each mapping of FULL that has table keys: its table path and its place in the tree."""
    out: list[tuple[str, Any]] = [("", ())]
    for path, key in ALL:
        if key.form is Form.BLOCK_LIST:
            out.append((f"{path}[]", (*path.split("."), 0)))
        elif key.keys:
            place = tuple(p for part in path.split(".") for p in _index(part))
            out.append((path, place))
    return out


def _index(part: str) -> tuple[Any, ...]:
    """``nodes[]`` → (``nodes``, 0): a block inside a list item is the first item's."""
    return (part[:-2], 0) if part.endswith("[]") else (part,)


MAPPINGS = _mapping_paths()


@pytest.mark.parametrize(("where", "place"), MAPPINGS, ids=[w or "top" for w, _ in MAPPINGS])
def test_a_key_the_table_lacks_is_warned_about(where: str, place: tuple[Any, ...]) -> None:
    data = yaml.safe_load(FULL)
    mapping = data
    for part in place:
        mapping = mapping[part]
    mapping["not_in_the_table"] = 1
    model = load_cluster_text(yaml.safe_dump(data))
    expected = f"{where}.not_in_the_table".replace("[]", "[0]").lstrip(".")
    assert _unknown(model) == [expected]


@pytest.mark.parametrize(("path", "key"), ALL, ids=[path for path, _ in ALL])
def test_dropping_a_key_from_the_table_makes_the_loader_warn(
    monkeypatch: pytest.MonkeyPatch, path: str, key: Key
) -> None:
    """The loader asks the table, at load time, which keys each mapping has."""
    parent, _, _ = path.rpartition(".")
    kept = tuple(inner for inner in keys.block(parent) if inner is not key)
    if not parent:
        monkeypatch.setattr(keys, "TOP", kept)
    else:
        owner = parent.removesuffix("[]")
        index = dict(keys.INDEX)
        index[owner] = dataclasses.replace(index[owner], keys=kept)
        monkeypatch.setattr(keys, "INDEX", MappingProxyType(index))
    model = load_cluster_text(FULL)
    where = path.replace("[]", "[0]")
    assert _unknown(model) == [where]


class _Recorded(dict[Any, Any]):
    """A mapping of the parsed description that notes the table path of each key looked up."""

    def __init__(self, items: dict[Any, Any], where: str, seen: set[str]) -> None:
        super().__init__(items)
        self.where = where
        self.seen = seen

    def _note(self, name: object) -> None:
        self.seen.add(f"{self.where}.{name}" if self.where else str(name))

    def get(self, name: Any, default: Any = None) -> Any:
        self._note(name)
        return super().get(name, default)

    def __getitem__(self, name: Any) -> Any:
        self._note(name)
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self._note(name)
        return super().__contains__(name)


def _record(value: Any, where: str, seen: set[str]) -> Any:
    if isinstance(value, dict):
        inner = {k: _record(v, f"{where}.{k}" if where else str(k), seen) for k, v in value.items()}
        return _Recorded(inner, where, seen)
    if isinstance(value, list):
        return [_record(item, f"{where}[]", seen) for item in value]
    return value


def test_the_loader_reads_exactly_the_table_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key the loader looks up is in the table, and every key in the table is looked up."""
    seen: set[str] = set()
    real = yamlsrc.load_with_lines

    def recording(text: str) -> tuple[Any, Any]:
        data, smap = real(text)
        return _record(data, "", seen), smap

    monkeypatch.setattr(load, "load_with_lines", recording)
    without_os = yaml.safe_load(FULL)
    del without_os["os"]  # so that coreos_channel and coreos_version are read
    for text in (FULL, yaml.safe_dump(without_os), MINIMAL):
        load_cluster_text(text)
    assert seen - set(keys.INDEX) == set(), "read by the loader but not in the table"
    assert set(keys.INDEX) - seen == set(), "in the table but never read by the loader"


# ---- the loader uses the table's defaults -------------------------------------------------------

DEFAULTS: dict[str, Callable[[ClusterModel], object]] = {
    "lease": lambda m: m.lease_seconds,
    "start_pxe": lambda m: m.dhcp.mode.value == "full",
    "set_ntp": lambda m: m.set_ntp,
    "dhcp.mode": lambda m: m.dhcp.mode.value,
    "dhcp.unknown_machines": lambda m: m.dhcp.unknown_machines.value,
    "dhcp.router_advertisement.enabled": lambda m: m.dhcp.router_advertisement.enabled,
    "dhcp.router_advertisement.interval": lambda m: m.dhcp.router_advertisement.interval,
    "http_port": lambda m: m.http_port,
    "install_policy": lambda m: m.install_policy,
    "kubernetes_version": lambda m: m.kubernetes_version,
    "domainname": lambda m: m.domain,
    "dockerdomain": lambda m: m.dockerdomain,
    "k8s_service_cluster_ip_range": lambda m: str(m.service_cluster_ip_range),
    "k8s_cluster_domain": lambda m: m.cluster_domain,
    "flannel_backend": lambda m: m.flannel_backend,
    "ingress_hostnetwork": lambda m: m.ingress_hostnetwork,
    "ceph.zap_and_start_osd": lambda m: m.ceph.zap_and_start_osd,
    "ceph.osd_journal_size": lambda m: m.ceph.osd_journal_size,
    "os.name": lambda m: m.os.name,
    "os.channel": lambda m: m.os.channel,
    "os.version": lambda m: m.os.version,
    "coreos_channel": lambda m: m.os.channel,
    "coreos_version": lambda m: m.os.version,
    "coreos.reboot_strategy": lambda m: m.update_policy.reboot_strategy,
    "coreos.start_time": lambda m: m.update_policy.start_time,
    "coreos.time_length": lambda m: m.update_policy.time_length,
    "nodes[].kube_master": lambda m: m.nodes[1].kube_master,
    "nodes[].etcd_member": lambda m: m.nodes[1].etcd_member,
    "nodes[].ceph_monitor": lambda m: m.nodes[0].ceph_monitor,
    "nodes[].ingress_label": lambda m: m.nodes[0].ingress_label,
    "nodes[].ingresslabel": lambda m: m.nodes[0].ingress_label,
    "nodes[].bmc.protocol": lambda m: "ipmi",  # only a node with a bmc block has it
    "nodes[].bmc.insecure": lambda m: False,
    "download_kernel": lambda m: m.pack.download_kernel,
    "set_gpu": lambda m: m.pack.set_gpu,
    "downloads.kubernetes": lambda m: m.downloads.kubernetes,
    "downloads.ipxe": lambda m: m.downloads.ipxe,
    "registry.mode": lambda m: m.registry.mode.value,
    "registry.image": lambda m: m.registry.image,
}


def test_every_default_is_checked() -> None:
    assert set(DEFAULTS) == {path for path, key in ALL if key.default is not None}


@pytest.mark.parametrize("path", list(DEFAULTS))
def test_the_loader_uses_the_table_default(path: str) -> None:
    text = MINIMAL + '  - mac: "00:25:90:c0:f7:81"\n'  # nodes[1]: no flags at all
    model = load_cluster_text(text)
    assert DEFAULTS[path](model) == keys.find(path).default


def test_the_loader_constants_come_from_the_table() -> None:
    assert keys.names("") == load.TOP_KEYS
    assert keys.names("nodes[]") == load.NODE_KEYS
    assert dict(keys.ignored("")) == dict(load.IGNORED_KEYS)
    assert keys.find("domainname").default == load.DEFAULT_DOMAIN
    assert keys.find("lease").default == load.DEFAULT_LEASE_SECONDS
