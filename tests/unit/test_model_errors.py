"""Broken descriptions: every error found, each named by key path and line; warnings never fail."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from bootstrapperd.model import ConfigError, Problem, load_cluster_text

BASE = textwrap.dedent(
    """\
    bootstrapper: 10.1.0.1
    subnet: 10.1.0.0
    netmask: 255.255.255.0
    iplow: 10.1.0.100
    iphigh: 10.1.0.200
    routers: [10.1.0.254]
    nameservers: [10.1.0.1]
    domainname: example.test
    dockerdomain: bootstrapper
    k8s_service_cluster_ip_range: 10.100.0.0/24
    k8s_cluster_dns: 10.100.0.10
    flannel_backend: vxlan
    images: {pause: "registry.k8s.io/pause:3.9"}
    ssh_authorized_keys: |1+
        - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly operator@test"
    nodes:
      - mac: "52:54:00:00:00:01"
        cur_host_name: m1
        kube_master: y
        etcd_member: y
      - mac: "52:54:00:00:00:02"
        cur_host_name: w1
    """
)  # nodes[0] is on line 17, nodes[1] on line 21


def load(text: str):  # type: ignore[no-untyped-def]
    return load_cluster_text(text, source="test.yml")


def notable(model: Any) -> tuple[Problem, ...]:
    """The model's warnings but the notice that unknown machines are installed, which every
    description with the default `dhcp.unknown_machines: allow` gets (test_check_story.py)."""
    return tuple(w for w in model.warnings if w.path != "dhcp.unknown_machines")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [str(p) for p in info.value.problems]


def test_base_is_clean() -> None:
    model = load(BASE)
    assert notable(model) == ()
    assert [n.hostname for n in model.nodes] == ["m1", "w1"]


BROKEN = [
    pytest.param(
        BASE.replace('"52:54:00:00:00:02"', '"00:25:90:zz"'),
        "nodes[1].mac: '00:25:90:zz' is not a MAC address (line 21)",
        id="bad-mac",
    ),
    pytest.param(
        BASE.replace('"52:54:00:00:00:02"', '"52-54-00-00-00-01"'),
        "nodes[1].mac: 52:54:00:00:00:01 is also nodes[0]'s MAC (line 21)",
        id="duplicate-mac-other-spelling",
    ),
    pytest.param(
        BASE + "    ip: 10.2.0.5\n",
        "nodes[1].ip: 10.2.0.5 is outside subnet 10.1.0.0/24 (line 23)",
        id="static-ip-outside-subnet",
    ),
    pytest.param(
        BASE.replace("routers: [10.1.0.254]", "routers: [10.9.0.254]"),
        "routers[0]: 10.9.0.254 is outside subnet 10.1.0.0/24 (line 6)",
        id="router-outside-subnet",
    ),
    pytest.param(
        BASE.replace("iphigh: 10.1.0.200", "iphigh: 10.1.1.200"),
        "iphigh: 10.1.1.200 is outside subnet 10.1.0.0/24 (line 5)",
        id="pool-outside-subnet",
    ),
    pytest.param(
        BASE.replace("iplow: 10.1.0.100", "iplow: 10.1.0.250"),
        "iphigh: iplow 10.1.0.250 is above iphigh 10.1.0.200 (line 5)",
        id="iplow-above-iphigh",
    ),
    pytest.param(
        BASE.replace("routers: [10.1.0.254]", "routers: [10.1.0.254"),
        "YAML syntax error: the [ here is never closed (expected ',' or ']', but got ':' on "
        "line 7) (line 6)",
        id="bad-yaml",
    ),
    pytest.param(
        BASE.replace("bootstrapper: 10.1.0.1\n", ""),
        "bootstrapper: required key is missing (the bootstrapper's IPv4 address) (line 1)",
        id="missing-bootstrapper",
    ),
    pytest.param(
        BASE.replace("bootstrapper: 10.1.0.1", "bootstrapper: [10.1.0.1]"),
        "bootstrapper: ['10.1.0.1'] is not an IPv4 address (line 1)",
        id="wrong-type-bootstrapper",
    ),
    pytest.param(
        BASE.replace("routers: [10.1.0.254]", "routers: {gw: 10.1.0.254}"),
        "routers: expected a list of IPv4 addresses, got a mapping (line 6)",
        id="wrong-type-routers",
    ),
    pytest.param(
        BASE.replace("kube_master: y", "kube_master: maybe"),
        "nodes[0].kube_master: 'maybe' is not a boolean (use y/n, yes/no, true/false) (line 19)",
        id="wrong-type-bool",
    ),
    pytest.param(
        BASE.split("nodes:")[0] + "nodes: node1\n",
        "nodes: expected a list, got a string (line 16)",
        id="wrong-type-nodes",
    ),
    pytest.param(
        BASE.replace("flannel_backend: vxlan", "flannel_backend: ipip"),
        "flannel_backend: 'ipip' is not one of: host-gw, udp, vxlan (line 12)",
        id="unknown-flannel-backend",
    ),
    pytest.param(
        BASE.replace("kube_master: y", "kube_master: n"),
        "nodes: no node has kube_master: y; the cluster needs a Kubernetes master (line 16)",
        id="no-master",
    ),
    pytest.param(
        BASE.replace("cur_host_name: w1", "cur_host_name: m1"),
        "nodes[1].cur_host_name: hostname 'm1' is also nodes[0]'s (line 22)",
        id="duplicate-hostname",
    ),
    pytest.param(
        BASE.replace("cur_host_name: m1", "cur_host_name: m1\n    ip: 10.1.0.9")
        + "    ip: 10.1.0.9\n",
        "nodes[1].ip: 10.1.0.9 is also nodes[0]'s address (line 24)",
        id="duplicate-static-ip",
    ),
    pytest.param(
        BASE.replace("cur_host_name: w1", "cur_host_name: w1\n    ip: 10.1.0.1"),
        "nodes[1].ip: 10.1.0.1 is the bootstrapper's own address (line 23)",
        id="static-ip-is-bootstrapper",
    ),
    pytest.param(
        BASE.replace("cur_host_name: w1", "cur_host_name: w_1 x"),
        "nodes[1].cur_host_name: 'w_1 x' is not a valid hostname (letters, digits and dashes, "
        "one label) (line 22)",
        id="bad-hostname",
    ),
    pytest.param(
        BASE.replace("netmask: 255.255.255.0", "netmask: 255.0.255.0"),
        "netmask: '255.0.255.0' is not a netmask (like 255.255.255.0) (line 3)",
        id="bad-netmask",
    ),
    pytest.param(
        BASE + "lease: forever\n",
        "lease: 'forever' is not a lease time (infinite, 24h, 30m, 3600) (line 23)",
        id="bad-lease",
    ),
    pytest.param(
        BASE + "dhcp: {mode: relay}\n",
        "dhcp.mode: 'relay' is not one of: full, proxy, off (line 23)",
        id="bad-dhcp-mode",
    ),
    pytest.param(
        BASE + "registry: {mode: sideways}\n",
        "registry.mode: 'sideways' is not one of: auto, docker, binary, external, off (line 23)",
        id="bad-registry-mode",
    ),
    pytest.param(
        BASE + "registry: {mode: external}\n",
        "registry.url: mode external needs the registry's URL (line 23)",
        id="external-registry-without-url",
    ),
    pytest.param(
        BASE + "downloads:\n  kubernetes: dl.k8s.io\n",
        "downloads.kubernetes: 'dl.k8s.io' is not an http(s):// or file:// URL (line 24)",
        id="bad-kubernetes-url",
    ),
    pytest.param(
        BASE + "downloads:\n  signing_key_fingerprint: F88CFEDE\n",
        "downloads.signing_key_fingerprint: expected a 40-hex-digit key fingerprint (line 24)",
        id="bad-fingerprint",
    ),
    pytest.param(
        BASE + "downloads:\n  registries: {quay.io: quay-mirror}\n",
        "downloads.registries.quay.io: 'quay-mirror' is not an http(s):// URL (line 24)",
        id="bad-registry-mirror",
    ),
    pytest.param(
        "- just\n- a list\n",
        "expected a mapping of keys at the top, got a list (line 1)",
        id="not-a-mapping",
    ),
    pytest.param("", "expected a mapping of keys at the top, got nothing", id="empty-file"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken_file_names_key_and_line(text: str, message: str) -> None:
    assert message in errors_of(text)


def test_every_error_is_reported_at_once() -> None:
    text = (
        BASE.replace('"52:54:00:00:00:02"', '"zz"')
        .replace("flannel_backend: vxlan", "flannel_backend: ipip")
        .replace("iphigh: 10.1.0.200", "iphigh: 10.9.0.200")
    )
    problems = errors_of(text)
    assert len(problems) == 3, problems
    assert [p.split(":")[0] for p in problems] == ["iphigh", "flannel_backend", "nodes[1].mac"]


def test_config_error_message_lists_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load(BASE.replace("kube_master: y", "kube_master: n"))
    assert str(info.value).startswith("test.yml: 1 error\n  nodes: no node has kube_master")


# ---- tolerance: what Sextant accepted stays accepted ------------------------------------------


def test_unknown_keys_warn_and_name_the_key() -> None:
    model = load(BASE.replace("cur_host_name: w1", "cur_host_name: w1\n    rack: 7") + "foo: 1\n")
    warned = {str(w) for w in model.warnings}
    assert "nodes[1].rack: unknown key, ignored (line 23)" in warned
    assert "foo: unknown key, ignored (line 24)" in warned


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("y", True),
        ("Y", True),
        ("yes", True),
        ("on", True),
        ("true", True),
        ("n", False),
        ("N", False),
        ("no", False),
        ("off", False),
        ("false", False),
    ],
)
def test_yaml_1_1_booleans(spelling: str, expected: bool) -> None:
    model = load(
        BASE.replace("cur_host_name: w1", f"cur_host_name: w1\n    etcd_member: {spelling}")
    )
    assert model.nodes[1].etcd_member is expected


@pytest.mark.parametrize("key", ["ingress_label", "ingresslabel"])
def test_both_ingress_label_spellings(key: str) -> None:
    model = load(BASE.replace("cur_host_name: w1", f"cur_host_name: w1\n    {key}: y"))
    assert model.nodes[1].ingress_label is True
    assert notable(model) == ()


def test_even_etcd_count_is_a_warning() -> None:
    model = load(BASE.replace("cur_host_name: w1", "cur_host_name: w1\n    etcd_member: y"))
    assert [w.path for w in notable(model)] == ["nodes"]
    assert "2 etcd members" in notable(model)[0].message


def test_early_description_gets_defaults_and_warnings() -> None:
    early = textwrap.dedent(
        """\
        bootstrapper: 10.1.0.1
        subnet: 10.1.0.0
        netmask: 255.255.255.0
        iplow: 10.1.0.100
        iphigh: 10.1.0.200
        routers: [10.1.0.1]
        domainname: early.test
        ssh_authorized_keys:
        nodes:
          - mac: "52:54:00:00:00:01"
            kube_master: y
            etcd_member: y
        """
    )
    model = load(early)
    assert model.dockerdomain == "bootstrapper"
    assert str(model.service_cluster_ip_range) == "10.100.0.0/24"
    assert str(model.cluster_dns) == "10.100.0.10"
    assert model.images == {}
    assert model.ssh_authorized_keys == ()
    assert model.nameservers == (model.bootstrapper,)
    assert model.flannel_backend == "host-gw"
    warned = {w.path for w in model.warnings}
    assert {
        "dockerdomain",
        "k8s_service_cluster_ip_range",
        "k8s_cluster_dns",
        "images",
        "ssh_authorized_keys",
        "nameservers",
        "flannel_backend",
    } <= warned


def test_new_keys() -> None:
    text = BASE.replace("cur_host_name: w1", "cur_host_name: w1\n    ip: 10.1.0.150") + (
        "os: {name: coreos, channel: beta, version: 1235.0.0, mirror: 'http://mirror.test/os'}\n"
        "dhcp: {mode: proxy, unknown_machines: ignore}\n"
        "http_port: 8080\n"
        "lease: 1h30m\n"
    )
    model = load(text)
    assert str(model.nodes[1].ip) == "10.1.0.150"  # inside the pool: reserved, not a clash
    assert model.pool_free_size == model.pool.size - 1
    assert (model.os.name, model.os.channel, model.os.version) == ("coreos", "beta", "1235.0.0")
    assert model.os.mirror == "http://mirror.test/os"
    assert (model.dhcp.mode.value, model.dhcp.unknown_machines.value) == ("proxy", "ignore")
    assert model.http_port == 8080
    assert model.lease_seconds == 5400


def test_pack_and_registry_keys() -> None:
    model = load(BASE)
    assert model.downloads.kubernetes == "https://dl.k8s.io/release"
    assert model.downloads.signing_key is None
    assert dict(model.downloads.registries) == {}
    assert (model.registry.mode.value, model.registry.url) == ("auto", None)
    assert model.registry.image == "docker.io/library/registry:2.8.3"
    model = load(
        BASE
        + "downloads:\n"
        + "  kubernetes: http://mirror.test/k8s/\n"
        + "  signing_key: keys/release.asc\n"
        + "  signing_key_fingerprint: f88c fede ff29 a5b4 d952 3864 e25d 9aed 0593 b34a\n"
        + "  registries: {docker.io: 'http://hub-mirror.test'}\n"
        + "registry: {url: 'https://registry.test:5000'}\n"
    )
    assert model.downloads.kubernetes == "http://mirror.test/k8s"
    assert model.downloads.signing_key == "keys/release.asc"
    assert model.downloads.signing_key_fingerprint == "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"
    assert dict(model.downloads.registries) == {"docker.io": "http://hub-mirror.test"}
    assert (model.registry.mode.value, model.registry.url) == (
        "external",
        "https://registry.test:5000",
    )
    assert load(BASE + "registry: {mode: off}\n").registry.mode.value == "off"


def test_mac_spellings_are_canonical_and_lookups_accept_any() -> None:
    model = load(BASE.replace('"52:54:00:00:00:02"', '"5254.0000.0002"'))
    assert model.nodes[1].mac == "52:54:00:00:00:02"
    for spelling in ("52-54-00-00-00-02", "52:54:00:00:00:02", "525400000002", "52:54:0:0:0:2"):
        node = model.node(spelling)
        assert node is not None
        assert node.hostname == "w1"
    assert model.node("52:54:00:00:00:99") is None
    assert model.hostname_for_mac("52:54:00:00:00:99") == "52-54-00-00-00-99"


def test_duplicate_key_is_a_warning_with_both_lines() -> None:
    model = load(BASE + "domainname: other.test\n")
    assert model.domain == "other.test"
    assert "domainname: given twice (lines 8 and 23); the later one is used (line 23)" in {
        str(w) for w in model.warnings
    }


def test_model_is_immutable() -> None:
    model = load(BASE)
    with pytest.raises(AttributeError):
        model.domain = "x"
    with pytest.raises(TypeError):
        model.images["x"] = "y"
