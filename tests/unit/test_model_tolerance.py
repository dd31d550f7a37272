"""What YAML 1.1 does to plain scalars must not change what a description means; odd values give
a ConfigError or a warning, never a crash."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapperd.model import ConfigError, load_cluster_text
from bootstrapperd.model.errors import Problem
from bootstrapperd.model.load import NODE_KEYS, TOP_KEYS
from tests.unit.test_model_errors import BASE, notable


def load(text: str):  # type: ignore[no-untyped-def]
    return load_cluster_text(text, source="t.yml")


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ("dhcp: {mode: off}\n", lambda m: m.dhcp.mode.value == "off"),
        ("coreos: {reboot_strategy: off}\n", lambda m: m.update_policy.reboot_strategy == "off"),
        ("centos_version: 7.10\n", lambda m: m.pack.centos_version == "7.10"),
        ("gpu_drivers_version: 375.20\n", lambda m: m.pack.gpu_drivers_version == "375.20"),
        ("coreos: {start_time: 3:00}\n", lambda m: m.update_policy.start_time == "3:00"),
        ("os_name: yes\n", lambda m: m.pack.os_name == "yes"),
        ("k8s_cluster_domain: Cluster.Local\n", lambda m: m.cluster_domain == "cluster.local"),
        ("coreos_channel: beta\nos: {channel: }\n", lambda m: m.os.channel == "beta"),
        ("coreos_version: 1235.0.0\nos: {version: }\n", lambda m: m.os.version == "1235.0.0"),
        ("lease: 7200\n", lambda m: m.lease_seconds == 7200),
    ],
)
def test_values_mean_what_was_written(extra: str, check: Any) -> None:
    assert check(load(BASE + extra))


def test_dockerdomain_is_normalised() -> None:
    model = load(BASE.replace("dockerdomain: bootstrapper", "dockerdomain: ' Registry.Local. '"))
    assert model.dockerdomain == "registry.local"


@pytest.mark.parametrize(
    ("mac", "canonical"),
    [("12:34:56:12:34:56", "12:34:56:12:34:56"), ("001122334455", "00:11:22:33:44:55")],
)
def test_unquoted_macs_that_yaml_reads_as_numbers(mac: str, canonical: str) -> None:
    model = load(BASE.replace('"52:54:00:00:00:02"', mac))
    assert model.nodes[1].mac == canonical


def test_unquoted_numeric_hostname_keeps_its_digits() -> None:
    assert (
        load(BASE.replace("cur_host_name: w1", "cur_host_name: 0123")).nodes[1].hostname == "0123"
    )


def test_sexagesimal_lease_is_an_error_not_90_seconds() -> None:
    with pytest.raises(ConfigError, match=r"lease: '1:30' is not a lease time"):
        load(BASE + "lease: 1:30\n")


def test_ssh_keys_as_plain_lines() -> None:
    keys = textwrap.dedent(
        """\
        ssh_authorized_keys: |
          # the operators
          ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne one@a
          ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQTwo two@b
        """
    )
    text = BASE.split("ssh_authorized_keys:")[0] + keys + "nodes:" + BASE.split("nodes:")[1]
    model = load(text)
    assert model.ssh_authorized_keys == (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne one@a",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQTwo two@b",
    )
    assert notable(model) == ()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('http_port: "²"\n', "http_port: '²' is not a whole number from 1 to 65535"),
        ('ceph: {osd_journal_size: "²"}\n', "ceph.osd_journal_size: '²' is not a whole number"),
        ('lease: "²"\n', "lease: '²' is not a lease time"),
        ("dockerdomain: 'regi stry'\n", "dockerdomain: 'regi stry' is not a valid DNS name"),
    ],
)
def test_odd_values_are_errors(extra: str, message: str) -> None:
    text = BASE.replace("dockerdomain: bootstrapper\n", "") if "dockerdomain" in extra else BASE
    with pytest.raises(ConfigError) as info:
        load(text + extra)
    assert any(message in str(p) for p in info.value.problems), info.value.problems


def test_empty_node_list_is_an_error() -> None:
    with pytest.raises(ConfigError, match="nodes: the list is empty"):
        load(BASE.split("nodes:")[0] + "nodes: []\n")


@pytest.mark.parametrize("network", ["255.255.255.255/32", "10.100.0.0/30"])
def test_tiny_service_range_warns_and_does_not_overflow(network: str) -> None:
    model = load(
        BASE.replace("10.100.0.0/24", network).replace("k8s_cluster_dns: 10.100.0.10\n", "")
    )
    assert model.cluster_dns in model.service_cluster_ip_range
    assert model.apiserver_sans.ip_addresses[0] in model.service_cluster_ip_range
    assert any(w.path == "k8s_service_cluster_ip_range" for w in model.warnings)


# ---- property: any value under any known key loads or gives ConfigError ---------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["y", "n", "off", "3:00", "10.1.0.7", "²", "-1", "1h"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    top=st.dictionaries(st.sampled_from(TOP_KEYS), values, max_size=3),
    node=st.dictionaries(st.sampled_from(NODE_KEYS), values, max_size=3),
)
def test_any_value_loads_or_raises_config_error(top: dict[str, Any], node: dict[str, Any]) -> None:
    data = yaml.safe_load(BASE)
    data.update(top)
    if isinstance(data.get("nodes"), list) and data["nodes"] and isinstance(data["nodes"][0], dict):
        data["nodes"][0].update(node)
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        load(text)
    except ConfigError as exc:
        problems: list[Problem] | None = exc.problems
    else:
        problems = None
    if problems is not None:
        assert problems
